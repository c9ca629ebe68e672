"""Command line: look at every stage llgrad makes of a function, or time it.

    python -m llgrad inspect examples/mlp.py:loss                  # inputs: the file's EXAMPLE_ARGS
    python -m llgrad inspect examples/mlp.py:loss --stage backward # one stage (default: all)
    python -m llgrad inspect model.py:f --shapes "3x2,4x3"         # float64 arrays of these shapes
    python -m llgrad inspect model.py:loss 'params={w:f32[784,128],b:f32[128]}' x=f32[64,784]
    python -m llgrad inspect examples/mlp.py:loss --html report.html   # the linked inspector page
    python -m llgrad bench model.py:loss ...                       # native vs the numpy interpreter
    python -m llgrad bench model.py:loss ... --profile             # and the time of every kernel
    python -m llgrad bench [--quick] [--out bench-results]          # the benchmark suite (a checkout's benchmarks/)

Example inputs come from a module-level ``EXAMPLE_ARGS = {"loss": (arg0, arg1, ...)}``
in the file, from ``--shapes`` (``x`` between sizes, ``()`` for a scalar), or by type:
``f64[3,4]``, ``f32[]``, ``i64[10]``, or nested ``{name:type,...}`` / ``[type,...]``
pytrees; shapes and types are filled with random data.  The gradient is taken with
respect to every argument that is all floats (``--argnums 0``: the first only);
``--jit`` inspects the forward function only.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect as pyinspect
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from llgrad import api, profiling
from llgrad.compiler.frontend import pytree
from llgrad.ir.errors import LlgradError

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


def load(spec: str):
    """(module, function) named by ``FILE.py:FUNCTION``, or a SystemExit saying why not."""
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise SystemExit(f"name the function as FILE.py:FUNCTION, got {spec!r}")
    if not os.path.isfile(path):
        raise SystemExit(f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location("llgrad_cli_target", path)
    if module_spec is None:
        raise SystemExit(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise SystemExit(f"{path} failed to run ({os.path.basename(where.filename)}:"
                         f"{where.lineno}): {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items()
                       if callable(v) and getattr(v, "__module__", None) == module.__name__)
        raise SystemExit(f"{path} has no function {name!r} (it defines: "
                         f"{', '.join(found) or 'no functions'})")
    return module, fn


def _arguments(texts, rng):
    args = []
    for text in texts:
        _, sep, value = text.partition("=")
        args.append(parse_type(value if sep and not text.startswith(("{", "[")) else text, rng))
    return args


def _shapes(text: str, rng):
    """Random float64 arrays of the shapes in ``"3x2,4x3"`` (``()`` is a scalar)."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if item in ("()", ""):
            values.append(float(rng.normal()))
        elif re.fullmatch(r"\d+(x\d+)*", item):
            values.append(rng.normal(size=tuple(int(d) for d in item.split("x"))))
        else:
            raise SystemExit(f"cannot read the shape {item!r} in --shapes {text!r}: write "
                             f"sizes joined by x, e.g. --shapes \"3x2,4x3,()\"")
    return values


def _example_inputs(args, module, name):
    """The function's example arguments: typed, --shapes, or the file's EXAMPLE_ARGS."""
    rng = np.random.default_rng(0)
    if args.types:
        return _arguments(args.types, rng)
    if args.shapes is not None:
        return _shapes(args.shapes, rng)
    examples = getattr(module, "EXAMPLE_ARGS", None)
    if isinstance(examples, dict) and name in examples:
        value = examples[name]
        return list(value) if isinstance(value, (tuple, list)) else [value]
    raise SystemExit(f"no example inputs for {name}(): add EXAMPLE_ARGS = {{{name!r}: "
                     f"(arg0, ...)}} to {args.function.rpartition(':')[0]}, or pass "
                     f"--shapes \"3x2,4x3\", or one type per argument (x=f64[3,2])")


def _argnums(text: str) -> str:
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        raise argparse.ArgumentTypeError(f"write argument positions like 0 or 0,2; got {text!r}")
    return text


def _float_arguments(values) -> tuple:
    """Positions of the arguments that are all floats: those a gradient is taken of."""
    def floats(v):
        leaves = pytree.flatten(v)[0]
        return leaves and all(np.issubdtype(np.asarray(x).dtype, np.floating) for x in leaves)
    return tuple(i for i, v in enumerate(values) if floats(v))


def _joint_or_note(trace, text):
    return text() if trace.backward is not None else "(jit: no backward graph)"


# Every stage ``inspect`` prints, in pipeline order.
STAGES = {
    "ir": lambda t: str(t.ir),
    "backward": lambda t: _joint_or_note(t, lambda: str(t.backward)),
    "passes": lambda t: "\n".join(f";; after {p.name} ({p.seconds * 1e3:.2f} ms)\n{p.graph}"
                                  for p in t.passes),
    "optimized": lambda t: str(t.optimized),
    "kernels": lambda t: t.kernels,
    "residuals": lambda t: _joint_or_note(
        t, lambda: "\n".join(map(str, t.residuals)) or "(none)"),
    "stats": lambda t: str(t.stats),
    "python": lambda t: t.as_python(),
    "dot": lambda t: t.to_dot(),
    "llvm": lambda t: t.llvm_ir,
    "opt": lambda t: t.llvm_ir_optimized,
    "asm": lambda t: t.asm,
}


def inspect(args):
    module, fn = load(args.function)
    fn = getattr(fn, "__wrapped__", fn)  # an @llgrad.grad function: inspect what it wraps
    name = args.function.rpartition(":")[2]
    values = _example_inputs(args, module, name)
    try:
        pyinspect.signature(fn).bind(*values)
    except TypeError as e:
        raise SystemExit(f"{len(values)} example inputs do not fit {name}"
                         f"{pyinspect.signature(fn)}: {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): the trace will say
    argnums = _float_arguments(values)
    if args.argnums is not None:
        argnums = tuple(int(a) for a in args.argnums.split(",") if a.strip())
    if not args.jit and not argnums:
        raise SystemExit(f"{name}() has no float argument to differentiate; "
                         f"use --jit to inspect the function alone")
    try:
        staged = api.jit(fn) if args.jit else api.value_and_grad(fn, argnums=argnums)
        trace = staged.trace(*values)
        chosen = list(STAGES) if args.stage == "all" else [args.stage]
        for stage in chosen:
            print(f";; ---- {stage} ----")
            print(STAGES[stage](trace))
        if args.html:
            trace.to_html(args.html, title=f"llgrad: {args.function}")
            print(f";; wrote {args.html}")
    except Exception as e:
        if os.environ.get("LLGRAD_DEBUG") or not isinstance(e, (LlgradError, TypeError,
                                                                ValueError)):
            raise  # an llgrad bug, not a problem of this function or its inputs
        path = os.path.abspath(args.function.rpartition(":")[0])
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f" at {os.path.basename(path)}:{frames[-1].lineno}" if frames else ""
        raise SystemExit(f"llgrad inspect {args.function}: {type(e).__name__}{where}: {e}\n"
                         f"(inputs: {_describe(values)}; LLGRAD_DEBUG=1 shows the "
                         f"traceback)") from None


def _describe(values) -> str:
    return ", ".join(
        "(" + ", ".join(f"{np.asarray(x).dtype}{list(np.shape(x))}"
                        for x in pytree.flatten(v)[0]) + ")" for v in values)


def benchmark_suite():
    """``benchmarks/run.py`` of the source checkout this llgrad runs from, or None: the
    suite is not part of the installed package."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "run.py").is_file():
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.run")


def bench(args):
    if args.function is None:
        suite = benchmark_suite()
        if suite is None:
            raise SystemExit(
                "python -m llgrad bench without FILE.py:FUNCTION runs the benchmark suite, "
                f"benchmarks/run.py of an llgrad source checkout, and there is none beside "
                f"{Path(__file__).resolve().parent}: run it from a clone (pip install -e "
                "'.[bench]'), or time one function: python -m llgrad bench model.py:loss x=f64[3]")
        status = suite.run(args)
        if status:
            raise SystemExit(status)  # a system disagreed with the reference
        return
    _, fn = load(args.function)
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
    if args.profile:
        print()
        print(profiling.profile(transform(fn, argnums=argnums), *values))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m llgrad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("inspect", inspect), ("bench", bench)):
        p = sub.add_parser(name)
        p.add_argument("function", help="FILE.py:FUNCTION" + (
            " (leave out to run the benchmark suite)" if name == "bench" else ""),
            nargs="?" if name == "bench" else None)
        p.add_argument("types", nargs="*", help="one type per argument, e.g. x=f64[3,4]")
        p.add_argument("--jit", action="store_true", help="forward only (default: gradient)")
        if name == "inspect":
            p.add_argument("--stage", default="all", choices=["all", *STAGES])
            p.add_argument("--shapes", help='float64 inputs of these shapes, e.g. "3x2,4x3"')
            p.add_argument("--html", metavar="FILE", help="write the inspector page: every stage, "
                           "linked to the source lines")
            p.add_argument("--argnums", type=_argnums, help='differentiate these arguments '
                           'only, e.g. "0" (default: every argument that is all floats)')
        else:
            p.add_argument("--repeats", type=int, default=50)
            p.add_argument("--profile", action="store_true",
                           help="with FUNCTION: the time of every kernel (llgrad.profile); "
                                "without: the suite's report gets llgrad's, per workload")
            suite = benchmark_suite() if argv[:1] == ["bench"] else None  # inspect never
            if suite is not None:                                         # imports it
                suite.add_arguments(p.add_argument_group("the suite (no FUNCTION given)"))
        p.set_defaults(run=fn)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
