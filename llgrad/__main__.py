"""Command line: look at every stage llgrad makes of a function, or time it.

    python -m llgrad inspect model.py:loss 'params={w:f32[784,128],b:f32[128]}' x=f32[64,784] y=f32[64,10]
    python -m llgrad inspect model.py:loss ... --stage backward    # ir | backward | kernels | llvm | opt | asm | stats | dot
    python -m llgrad bench model.py:loss ...                       # native vs the numpy interpreter

Arguments are given by type: ``f64[3,4]``, ``f32[]``, ``i64[10]``, or nested
``{name:type,...}`` / ``[type,...]`` pytrees; they are filled with random data.
``--jit`` inspects the forward function only (default: its gradient).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time

import numpy as np

from . import api

_DTYPES = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "bool": np.bool_}


def parse_type(text: str, rng):
    """A random value of the type written in ``text``."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return {k: parse_type(v, rng) for k, v in _split_items(text[1:-1])}
    if text.startswith("[") and text.endswith("]") and not re.match(r"^\w+\[", text):
        return [parse_type(v, rng) for _, v in _split_items(text[1:-1], keyed=False)]
    match = re.fullmatch(r"(f64|f32|i64|bool)\[([\d,\s]*)\]", text)
    if not match:
        raise SystemExit(f"cannot read the type {text!r}: write e.g. f64[3,4], f32[], "
                         f"{{w:f64[2,2]}} or [f32[3],f32[3]]")
    dtype = _DTYPES[match.group(1)]
    shape = tuple(int(d) for d in match.group(2).split(",") if d.strip())
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype == np.int64:
        return rng.integers(0, 10, shape)
    return rng.normal(size=shape).astype(dtype)


def _split_items(text, keyed=True):
    """Top-level comma-separated items (brackets nest); ``key:value`` when keyed."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            item = text[start:i].strip()
            start = i + 1
            if not item:
                continue
            if keyed:
                key, _, value = item.partition(":")
                items.append((key.strip(), value))
            else:
                items.append((None, item))
    return items


def load_function(spec: str):
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise SystemExit(f"name the function as FILE.py:FUNCTION, got {spec!r}")
    module_spec = importlib.util.spec_from_file_location("llgrad_cli_target", path)
    if module_spec is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    module_spec.loader.exec_module(module)
    try:
        return getattr(module, name)
    except AttributeError:
        raise SystemExit(f"{path} has no function {name!r}") from None


def _arguments(texts, rng):
    args = []
    for text in texts:
        _, sep, value = text.partition("=")
        args.append(parse_type(value if sep and not text.startswith(("{", "[")) else text, rng))
    return args


def inspect(args):
    fn = load_function(args.function)
    values = _arguments(args.types, np.random.default_rng(0))
    transform = api.jit if args.jit else api.value_and_grad
    trace = transform(fn, argnums=tuple(range(len(values))) if not args.jit else 0).trace(*values)
    stages = {
        "ir": lambda: str(trace.ir),
        "backward": lambda: str(trace.backward) if trace.backward else "(jit: no backward graph)",
        "llvm": lambda: trace.llvm_ir,
        "opt": lambda: trace.llvm_ir_optimized,
        "asm": lambda: trace.asm,
        "stats": lambda: "\n".join(f"{k}: {v}" for k, v in trace.stats.items()),
        "kernels": lambda: trace.kernels,
        "dot": trace.to_dot,
    }
    chosen = list(stages) if args.stage == "all" else [args.stage]
    for stage in chosen:
        if stage in ("opt", "asm", "dot") and args.stage == "all":
            continue  # long; ask for them by name
        print(f";; ---- {stage} ----")
        print(stages[stage]())


def bench(args):
    fn = load_function(args.function)
    values = _arguments(args.types, np.random.default_rng(0))
    transform = api.jit if args.jit else api.value_and_grad
    argnums = 0 if args.jit else tuple(range(len(values)))
    results = {}
    for backend in ("native", "interpret"):
        staged = transform(fn, argnums=argnums, backend=backend)
        t0 = time.perf_counter()
        staged(*values)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            staged(*values)
            times.append(time.perf_counter() - t0)
        results[backend] = (float(np.median(times)), first)
    native = results["native"][0]
    what = "jit" if args.jit else "value_and_grad"
    print(f"{what} of {args.function}, median of {args.repeats}")
    for backend, (median, first) in results.items():
        print(f"  {backend:>9}: {median * 1e6:10.1f} µs per call  ({median / native:5.2f}× native; "
              f"first call {first:.3f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m llgrad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("inspect", inspect), ("bench", bench)):
        p = sub.add_parser(name)
        p.add_argument("function", help="FILE.py:FUNCTION")
        p.add_argument("types", nargs="*", help="one type per argument, e.g. x=f64[3,4]")
        p.add_argument("--jit", action="store_true", help="forward only (default: gradient)")
        if name == "inspect":
            p.add_argument("--stage", default="all",
                           choices=["all", "ir", "backward", "kernels", "llvm", "opt", "asm",
                                    "stats", "dot"])
        else:
            p.add_argument("--repeats", type=int, default=50)
        p.set_defaults(run=fn)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
