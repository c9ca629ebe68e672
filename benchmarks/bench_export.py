"""One call of an exported gradient from C, against the same call from Python.

    python benchmarks/bench_export.py [--quick] [--seconds 0.1] [--rounds 7]

For workloads 1 (the scalar expression) and 3 (the MLP step) of the suite, with the
suite's own loss and inputs (``--quick``: its quick sizes), ``llgrad.value_and_grad``
of the loss is exported (``llgrad.export``) and timed four ways, each the median time
per call over batches of calls:

- from Python, ``llgrad.value_and_grad(f)(params, *data)`` in a timeit loop, and
  ``llgrad.load_library(...)(params, *data)``: ``--rounds`` batches of about
  ``--seconds`` each;
- from C, the exported function (checks, packing, then the compiled graph), and the
  compiled graph's entry alone (what the exported function calls), in loops timed with
  clock_gettime by a small harness this script compiles: per round, PAIRS pairs of
  batches, one of each in turn.  The median of each pair's difference is the C
  wrapper's own cost.

"Python − C" is what calling from Python adds (argument checks, output arrays, the
result's pytree), give or take the difference between the JIT's code and the
library's (both run one thread; the library never calls BLAS).

Everything runs on one thread (``LLGRAD_THREADS=1``, one BLAS thread), as the exported
library does.  The library's result is checked against the suite's reference, and the
harness's first result must equal it bit for bit, before anything is timed.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

os.environ.setdefault("LLGRAD_THREADS", "1")          # the exported code runs on one
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # thread: so does everything here

import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import llgrad  # noqa: E402
from benchmarks import measure, report, workloads  # noqa: E402
from benchmarks.systems.llgrad_systems import traced_loss  # noqa: E402
from llgrad.c_source import C_TYPES  # noqa: E402
from llgrad.compiler.frontend import pytree  # noqa: E402

WORKLOADS = ("scalar", "mlp_step")
PAIRS = 5   # pairs of C batches per round (exported, kernels alone), each 1/PAIRS as long

HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include "{name}.h"

void {kernels}(void **packed);  /* hidden in {name}.so, linkable from {name}.a */

{arrays}
static void *pointers[] = {{{pointers}}};
static const size_t bytes[] = {{{bytes}}};
static void *packed[sizeof pointers / sizeof *pointers + 1];
static void *workspace;

static void exported(void) {{
    if ({name}({call}, workspace) != 0) abort();
}}

/* the pointers packed as the exported function packs them: arguments, results, then
 * the workspace aligned to 64 bytes (llgrad/c_source.py, wrapper) */
static void kernels(void) {{ {kernels}(packed); }}

static double now(void) {{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}}

static double per_call(void (*f)(void), long n) {{
    double start = now();
    for (long i = 0; i < n; i++) f();
    return (now() - start) / (double)n;
}}

/* harness INPUTS OUTPUTS SECONDS PAIRS: reads the arguments, writes the first call's
 * results, then prints PAIRS lines: seconds per call in a batch of about SECONDS of the
 * exported function and in one of the kernels alone, in turns (which goes first too). */
int main(int argc, char **argv) {{
    size_t n_all = sizeof pointers / sizeof *pointers;
    if (argc != 5) return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) return 3;
    for (size_t i = 0; i < {n_in}; i++)
        if (fread(pointers[i], 1, bytes[i], in) != bytes[i]) return 4;
    workspace = malloc({name}_workspace_size());
    for (size_t i = 0; i < n_all; i++) packed[i] = pointers[i];
    packed[n_all] = (void *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    exported();
    for (size_t i = {n_in}; i < n_all; i++)
        if (fwrite(pointers[i], 1, bytes[i], out) != bytes[i]) return 5;
    fclose(in);
    fclose(out);
    double seconds = atof(argv[3]), a, b;
    long n = 1;
    while (per_call(exported, n) * (double)n < seconds / 8) n *= 2;
    n = (long)(seconds / per_call(exported, n)) + 1;
    for (int i = 0; i < atoi(argv[4]); i++) {{
        if (i % 2) b = per_call(kernels, n), a = per_call(exported, n);
        else a = per_call(exported, n), b = per_call(kernels, n);
        printf("%.9g %.9g\n", a, b);
    }}
    return 0;
}}
"""


def harness_source(iface) -> str:
    """The C timing harness for an exported function without in-place updates."""
    assert not iface.updates, "the harness times functions without in-place updates"
    leaves = [*iface.inputs, *iface.returned]
    names = [f"a{k}" for k in range(len(leaves))]
    arrays = "\n".join(f"static {C_TYPES[leaf.dtype]} {n}[{max(leaf.size, 1)}];"
                       for n, leaf in zip(names, leaves))
    return HARNESS.format(name=iface.name, kernels=iface.kernels, arrays=arrays,
                          pointers=", ".join(names), call=", ".join(names),
                          bytes=", ".join(str(leaf.nbytes) for leaf in leaves),
                          n_in=len(iface.inputs))


def per_call(fn, args, seconds: float) -> float:
    """Seconds per call of ``fn(*args)`` in a timeit batch that lasts about ``seconds``."""
    timer = timeit.Timer("fn(*args)", globals={"fn": fn, "args": args})
    n, took = 1, timer.timeit(1)
    while took < seconds / 8:
        n *= 2
        took = timer.timeit(n)
    n = int(seconds / (took / n)) + 1
    return timer.timeit(n) / n


def measure_workload(workload, problem, folder, seconds, rounds) -> dict:
    loss = traced_loss(workload)
    args = (problem.params, *problem.data)
    value_and_grad = llgrad.value_and_grad(loss)
    exported = llgrad.export(value_and_grad, *args, path=folder, name=workload.key)
    library = llgrad.load_library(exported.shared)

    value, gradient = library(*args)
    ref = measure.reference(workload, problem)["expected"]
    error = max(measure.relative_error({"value": value}, ref["value"]),
                measure.relative_error(gradient, ref["gradient"]))
    if error > measure.tolerance(workload, problem):
        sys.exit(f"{workload.title}: the exported gradient is off by {error:.3g}")

    iface = exported.interface
    source, harness = os.path.join(folder, "harness.c"), os.path.join(folder, "harness")
    Path(source).write_text(harness_source(iface))
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c11", f"-I{folder}", source,
                    exported.static, *(f"-l{lib}" for lib in iface.link), "-o", harness],
                   check=True)
    inputs, outputs = os.path.join(folder, "inputs.bin"), os.path.join(folder, "outputs.bin")
    Path(inputs).write_bytes(b"".join(np.ascontiguousarray(leaf, spec.dtype).tobytes()
                                      for leaf, spec in zip(pytree.flatten(args)[0],
                                                            iface.inputs)))
    expected = b"".join(np.asarray(leaf).tobytes()
                        for leaf in pytree.flatten((value, gradient))[0])

    for _ in range(2000):   # past the calls before llgrad's native entry (fastcall.py)
        value_and_grad(*args)
    times = {"python": [], "library": [], "c": [], "kernels": [], "wrapper": []}
    for _ in range(rounds):
        times["python"].append(per_call(value_and_grad, args, seconds))
        times["library"].append(per_call(library, args, seconds))
        done = subprocess.run([harness, inputs, outputs, str(seconds / PAIRS), str(PAIRS)],
                              check=True, capture_output=True, text=True)
        if Path(outputs).read_bytes() != expected:
            sys.exit(f"{workload.title}: the C harness's result differs from the library's")
        for line in done.stdout.splitlines():
            c, kernels = map(float, line.split())
            times["c"].append(c)
            times["kernels"].append(kernels)
            times["wrapper"].append(c - kernels)
    return {k: statistics.median(v) for k, v in times.items()}


def duration(s: float) -> str:
    return report.duration(s) if s >= 0 else "−" + report.duration(-s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the suite's quick sizes")
    parser.add_argument("--seconds", type=float, default=0.1, help="seconds per batch")
    parser.add_argument("--rounds", type=int, default=7, help="batches per way of calling")
    args = parser.parse_args()
    lines = [("| workload | Python `value_and_grad` | `load_library` | C: exported function "
              "| C: kernels alone | C wrapper (C − kernels) | Python − C |"),
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="llgrad-bench-export-") as folder:
        for workload in workloads.WORKLOADS:
            if workload.key not in WORKLOADS:
                continue
            problem = workload.problems(args.quick)[0]
            t = measure_workload(workload, problem, folder, args.seconds, args.rounds)
            lines.append(f"| {workload.title.split(',')[0]}, {problem.size} | "
                         + " | ".join(duration(x) for x in (
                             t["python"], t["library"], t["c"], t["kernels"],
                             t["wrapper"], t["python"] - t["c"])) + " |")
    print(f"CPU: {report.cpu_model()}; one thread; medians of {args.rounds} batches of "
          f"about {args.seconds} s from Python, {args.rounds * PAIRS} of "
          f"{args.seconds / PAIRS:.3g} s from C")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
