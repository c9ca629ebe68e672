"""Export the digits MLP of ../train_digits.py for a C program: one epoch of Adam steps
(``llgrad.export_train``), the forward pass (``llgrad.export``), the data and the
initial parameters.

    pip install -e '.[examples]' && python examples/export_c/export.py [FOLDER]

FOLDER (default: build/ beside this file) receives ``train_epoch.{h,a,so}``,
``predict.{h,a,so}`` and float32 binary files, C-contiguous, native byte order:
``x_train``, ``y_train`` (one-hot), ``x_test``, ``y_test`` (one-hot) and one file per
parameter, named as the parameter of the C functions (``params_w1.f32``, ...).
Then ``make -C examples/export_c`` builds ``FOLDER/train_digits``.
"""
import argparse
import os
import sys

import numpy as np

import llgrad
from llgrad import optim

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from train_digits import init_params, load_digits, loss, predict  # noqa: E402

BATCH_SIZE = 32
LEARNING_RATE = 3e-3


def main(folder, target="host"):
    os.makedirs(folder, exist_ok=True)
    x_train, y_train, x_test, labels_test = load_digits()
    y_test = np.eye(10, dtype=np.float32)[labels_test]
    params = init_params()
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
              **{f"params_{k}": v for k, v in params.items()}}
    for name, array in arrays.items():
        np.ascontiguousarray(array, np.float32).tofile(os.path.join(folder, f"{name}.f32"))

    # step i of train_epoch trains on the rows order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]:
    # the C program shuffles by writing order; params and Adam state are updated in place
    steps = len(x_train) // BATCH_SIZE
    train = llgrad.export_train(loss, params, (x_train, y_train), optim.adam(LEARNING_RATE),
                                batch_size=BATCH_SIZE, steps=steps, path=folder,
                                name="train_epoch", target=target)
    forward = llgrad.export(llgrad.jit(predict), params, x_test, path=folder, name="predict",
                            target=target)
    print(f"{len(x_train)} training rows, {len(x_test)} test rows, {steps} steps of "
          f"{BATCH_SIZE} per epoch")
    for exported in (train, forward):
        print(f"wrote {exported.header}, {os.path.basename(exported.static)} and "
              f"{os.path.basename(exported.shared)}")
    print(f"wrote {len(arrays)} float32 arrays into {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=os.path.join(HERE, "build"))
    parser.add_argument("--target", default="host",
                        help='the CPU to compile for: "host", "x86-64-v3", "znver3", ...')
    args = parser.parse_args()
    main(args.folder, args.target)
