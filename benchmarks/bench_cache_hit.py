"""The first call of a workload's gradient in a new process: from an empty on-disk
cache ("cold") and from the cache an earlier process filled ("warm", the issue's
target: workload 3 within 50 ms).

    python benchmarks/bench_cache_hit.py [--workload mlp_step] [--runs 9]

Each run is a fresh interpreter (llgrad, numpy and the workload already imported, as a
program would have them): the time of the first call, and of its compile stage
(``Trace.stats["compile_s"]``: import of the code generator or LLVM, code generation
and optimisation on a miss, loading the object on a hit).  Medians over the runs, one
BLAS thread; the two gradients are compared bit for bit, so a fast wrong load cannot
hide.  The machine's product timings (``llgrad.calibrate``) are copied into the empty
cache: they are measured once per machine, not per compile.  Python's own bytecode cache is used if the environment allows it
(``PYTHONDONTWRITEBYTECODE`` unset): without it every run also compiles llgrad's source.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from llgrad.runtime import calibration

CHILD = """
import sys, time
import numpy as np, llgrad
from llgrad.compiler.frontend import pytree
from benchmarks import workloads
from benchmarks.systems.llgrad_systems import traced_loss
w = next(w for w in workloads.WORKLOADS if w.key == sys.argv[1])
p = w.problems(False)[0]
g = llgrad.grad(traced_loss(w))
t0 = time.perf_counter()
result = g(p.params, *p.data)
first = time.perf_counter() - t0
compile_s = g.trace(p.params, *p.data).stats["compile_s"]
leaves = pytree.flatten(result)[0]
print(first, compile_s, b"".join(np.asarray(x).tobytes() for x in leaves).hex())
"""


def run(workload: str, cache_dir: str) -> tuple[float, float, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, LLGRAD_CACHE_DIR=cache_dir, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", CHILD, workload], env=env,
                          capture_output=True, text=True, check=True, cwd=root)
    first, compile_s, bits = done.stdout.split()
    return float(first), float(compile_s), bits


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mlp_step")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="llgrad-bench-cache-") as cache_dir:
            calibration.copy_into(cache_dir)   # the machine's product timings, not a compile's
            cold.append(run(args.workload, cache_dir))
            warm.append(run(args.workload, cache_dir))
    assert {bits for *_, bits in cold + warm} == {cold[0][2]}, "a cached gradient differs"
    for name, rows in (("cold (empty cache)", cold), ("warm (second process)", warm)):
        first = statistics.median(r[0] for r in rows) * 1e3
        compile_ms = statistics.median(r[1] for r in rows) * 1e3
        print(f"{args.workload} {name:24s} first call {first:7.1f} ms   "
              f"compile stage {compile_ms:7.1f} ms   (median of {len(rows)})")


if __name__ == "__main__":
    main()
