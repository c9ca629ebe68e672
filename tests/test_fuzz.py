"""Fuzzing against oracles: random well-typed programs, built through the tracer.

A program is a random chain of numpy operations (elementwise functions of one and two
operands with broadcasting, reductions over random axes with and without keepdims,
transposes, reshapes, slices, products, concatenation, Python-scalar constants) over
1-3 random inputs of one float dtype.  The same Python function runs in numpy itself,
in the numpy interpreter of its traced graph and as native code, fused and with one
kernel per node; all four agree within the dtype's tolerance.  Programs made only of smooth operations also have their
gradients checked: float64 against central finite differences of the numpy program,
float32 against the float64 gradient.

The default run tries a bounded number of programs (derandomised, so CI is stable);
``pytest -m fuzz`` runs the same properties on many more random programs
(``LLGRAD_FUZZ_EXAMPLES``, default 2000) for a nightly job.
"""
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import llgrad
from llgrad.compiler.codegen.build import compile_graph

DEFAULT = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
NIGHTLY = settings(max_examples=int(os.environ.get("LLGRAD_FUZZ_EXAMPLES", "2000")),
                   deadline=None, suppress_health_check=list(HealthCheck))


@dataclass(frozen=True)
class Op:
    arity: int
    apply: Callable          # apply(param, *operands)
    param: Callable = None   # param(draw, *operand shapes) -> a static parameter
    smooth: bool = True      # C-infinity everywhere: its gradient is checked


def _axes_param(draw, shape):
    if not shape:
        return None, draw(st.booleans())
    axes = draw(st.one_of(st.none(), st.sets(st.integers(0, len(shape) - 1), min_size=1)
                          .map(lambda s: tuple(sorted(s)))))
    if axes is not None and len(axes) == 1 and draw(st.booleans()):
        axes = axes[0] - len(shape) if draw(st.booleans()) else axes[0]  # int, maybe negative
    return axes, draw(st.booleans())


def _reduction(fn, smooth=True):
    return Op(1, lambda p, a: fn(a, axis=p[0], keepdims=p[1]), _axes_param, smooth)


OPS = {
    # elementwise, bounded or slowly growing so chains stay finite
    "tanh": Op(1, lambda p, a: np.tanh(a)),
    "sin": Op(1, lambda p, a: np.sin(a)),
    "cos": Op(1, lambda p, a: np.cos(a)),
    "gauss": Op(1, lambda p, a: np.exp(-a * a)),
    "log": Op(1, lambda p, a: np.log(1.0 + a * a)),             # log of positive values
    "log1p": Op(1, lambda p, a: np.log1p(np.exp(np.tanh(a)))),
    "sqrt": Op(1, lambda p, a: np.sqrt(a * a + 0.5)),
    "pow": Op(1, lambda p, a: (a * a + 1.0) ** 0.75),
    "expm1": Op(1, lambda p, a: np.expm1(np.sin(a))),
    "sigmoid": Op(1, lambda p, a: 1.0 / (1.0 + np.exp(-a))),
    "neg": Op(1, lambda p, a: -a),
    "affine": Op(1, lambda p, a: a * p + 0.25,
                 lambda draw, s: draw(st.sampled_from([0.5, -1.5, 2.0]))),
    "sinh": Op(1, lambda p, a: np.sinh(np.tanh(a))),
    "hypot": Op(2, lambda p, a, b: np.hypot(a, b + 0.5)),
    "add": Op(2, lambda p, a, b: a + b),
    "sub": Op(2, lambda p, a, b: a - b),
    "mul": Op(2, lambda p, a, b: a * np.tanh(b)),
    "div": Op(2, lambda p, a, b: a / (1.0 + b * b)),
    "maximum": Op(2, lambda p, a, b: np.maximum(a, b), smooth=False),
    "where": Op(2, lambda p, a, b: np.where(a > b, a, 2.0 * b), smooth=False),
    "clip": Op(1, lambda p, a: np.clip(a, -0.5, 0.75), smooth=False),
    "abs": Op(1, lambda p, a: np.abs(a), smooth=False),
    # reductions
    "sum": _reduction(np.sum),
    "mean": _reduction(np.mean),
    "var": _reduction(np.var),
    "max": _reduction(np.max, smooth=False),
    "min": _reduction(np.min, smooth=False),
    # shapes
    "transpose": Op(1, lambda p, a: np.transpose(a, p),
                    lambda draw, s: tuple(draw(st.permutations(range(len(s)))))),
    "flatten": Op(1, lambda p, a: np.reshape(a, -1)),
    "expand": Op(1, lambda p, a: np.expand_dims(a, p),
                 lambda draw, s: draw(st.integers(0, len(s)))),
    "slice": Op(1, lambda p, a: a[p],
                lambda draw, s: (slice(1, None),) if s and s[0] > 1 else
                (Ellipsis, slice(None, None, 2))),
    "matmul": Op(2, lambda p, a, b: a @ b),
    "concat": Op(2, lambda p, a, b: np.concatenate([a, b], axis=0)),
}


@dataclass(frozen=True)
class Program:
    dtype: type
    shapes: tuple                  # of the inputs
    steps: tuple                   # (op name, operand indices, param)

    @property
    def smooth(self) -> bool:
        return all(OPS[name].smooth for name, _, _ in self.steps)

    def __call__(self, *inputs):
        values = list(inputs)
        for name, operands, param in self.steps:
            values.append(OPS[name].apply(param, *(values[i] for i in operands)))
        return values[-1]

    def __repr__(self):        # what hypothesis prints for a failing example
        lines = [f"inputs: {', '.join(f'v{i}{s}' for i, s in enumerate(self.shapes))} "
                 f"{np.dtype(self.dtype).name}"]
        n = len(self.shapes)
        for k, (name, operands, param) in enumerate(self.steps):
            args = ", ".join(f"v{i}" for i in operands)
            lines.append(f"v{n + k} = {name}({args}{'' if param is None else f', {param!r}'})")
        return "\n".join(lines)


@st.composite
def programs(draw, max_steps=7):
    """A random well-typed program: every step is kept only if numpy accepts it on
    arrays of the operands' shapes, so shapes are right by construction."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rank = draw(st.integers(0, 3))
    full = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    shapes = []
    for _ in range(draw(st.integers(1, 3))):      # broadcastable against each other
        keep = draw(st.integers(0, rank))
        shapes.append(tuple(n if draw(st.booleans()) else 1 for n in full[rank - keep:]))
    values = [np.zeros(s, dtype) for s in shapes]
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        name = draw(st.sampled_from(sorted(OPS)))
        op = OPS[name]
        # operands: prefer recent values so chains get deep
        operands = tuple(draw(st.integers(0, len(values) - 1).map(
            lambda i, n=len(values): n - 1 - i if draw(st.booleans()) else i))
            for _ in range(op.arity))
        param = op.param(draw, *(values[i].shape for i in operands)) if op.param else None
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(op.apply(param, *(values[i] for i in operands)))
        except (ValueError, IndexError, TypeError, np.exceptions.AxisError):
            continue                                # not well-typed here: drop the step
        if out.size > 64:
            continue                                # keep finite differences cheap
        steps.append((name, operands, param))
        values.append(out)
    return Program(dtype, tuple(shapes), tuple(steps))


def inputs_for(program, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(program.dtype) for s in program.shapes]


def tolerances(dtype, reference):
    """(rtol, atol) for a chain of a few ulp-accurate operations in ``dtype``."""
    scale = 1.0 + float(np.max(np.abs(reference), initial=0.0))
    return (1e-9, 1e-9 * scale) if dtype == np.float64 else (2e-4, 2e-4 * scale)


SEEDS = st.integers(0, 2 ** 32 - 1)


def _values_agree(program, seed):
    args = inputs_for(program, seed)
    with np.errstate(all="ignore"):
        want = np.asarray(program(*args))
    rtol, atol = tolerances(program.dtype, want)
    native = llgrad.jit(program)
    unfused = compile_graph(native.trace(*args).optimized, fuse_ops=False)
    results = {"native": native(*args), "interpret": llgrad.jit(program, backend="interpret")(
        *args), "unfused": unfused(*args)[0]}
    for how, got in results.items():
        got = np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype, how
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=how)


def weighted_loss(program):
    """A scalar of every element of the program's result, with unequal weights."""
    def loss(*inputs):
        out = program(*inputs)
        weights = np.cos(np.arange(np.size(out), dtype=program.dtype)).reshape(np.shape(out))
        return np.sum(out * (weights + 0.5))
    return loss


def _gradients_agree(program, seed):
    if not program.smooth:
        return
    args = [a.astype(np.float64) for a in inputs_for(program, seed)]
    every = tuple(range(len(args)))
    as64 = Program(np.float64, program.shapes, program.steps)
    llgrad.check_grad(weighted_loss(as64), *args, argnums=every, rtol=1e-5, atol=1e-6)
    if program.dtype == np.float32:
        g64 = llgrad.grad(weighted_loss(as64), argnums=every)(*args)
        g32 = llgrad.grad(weighted_loss(program), argnums=every)(
            *[a.astype(np.float32) for a in args])
        for a, b in zip(g32, g64):
            assert np.asarray(a).dtype == np.float32
            rtol, atol = tolerances(np.float32, b)
            np.testing.assert_allclose(a, b, rtol=10 * rtol, atol=10 * atol)


def _splits_agree(program, seed):
    """Every kernel split across threads computes what one thread does, bit for bit:
    the thresholds are lowered to a few elements (and pieces to single elements), so
    these small programs run the split elementwise loops, flat and by rows, of the value
    and the gradient.  Without libmvec: its vector and scalar entry points differ in the
    last bit, so a piece starting off a multiple of the vector width would change which
    elements take which (the real ``LINE_ELEMENTS``, 64, keeps every piece aligned)."""
    from llgrad.compiler.codegen import matmul, parallel
    args = inputs_for(program, seed)
    graphs = [llgrad.jit(program).trace(*args).optimized]
    if program.smooth:
        every = tuple(range(len(args)))
        graphs.append(llgrad.grad(weighted_loss(program), argnums=every).trace(*args).optimized)
    with pytest.MonkeyPatch.context() as patch, np.errstate(all="ignore"):
        patch.setenv("LLGRAD_NO_CACHE", "1")      # code made under these thresholds
        patch.setattr(parallel, "MIN_ELEMENTS", 2)
        patch.setattr(parallel, "LINE_ELEMENTS", 1)
        patch.setattr(matmul, "PARALLEL_MIN_CYCLES", 0)
        for graph in graphs:
            want = compile_graph(graph, threads=1, libmvec=False)(*args)
            for parts in (2, 3):
                split = compile_graph(graph, threads=parts, libmvec=False)
                for got, one in zip(split(*args), want):
                    np.testing.assert_array_equal(got, one)


test_native_interpreter_and_numpy_agree = DEFAULT(given(programs(), SEEDS)(_values_agree))
test_split_kernels_agree_with_one_thread = DEFAULT(given(programs(), SEEDS)(_splits_agree))
test_gradients_match_finite_differences = DEFAULT(given(programs(), SEEDS)(_gradients_agree))
test_native_interpreter_and_numpy_agree_nightly = pytest.mark.fuzz(
    NIGHTLY(given(programs(max_steps=12), SEEDS)(_values_agree)))
test_gradients_match_finite_differences_nightly = pytest.mark.fuzz(
    NIGHTLY(given(programs(max_steps=12), SEEDS)(_gradients_agree)))
test_split_kernels_agree_with_one_thread_nightly = pytest.mark.fuzz(
    NIGHTLY(given(programs(max_steps=12), SEEDS)(_splits_agree)))


def test_the_generator_builds_varied_programs():
    """The fuzzer is only as good as its programs: over a fixed sample they use most
    operations, both dtypes, broadcasting inputs and several steps."""
    seen_ops, dtypes, lengths, broadcast = set(), set(), [], False

    @settings(DEFAULT, max_examples=300)
    @given(programs())
    def collect(program):
        nonlocal broadcast
        seen_ops.update(name for name, _, _ in program.steps)
        dtypes.add(program.dtype)
        lengths.append(len(program.steps))
        broadcast |= len(set(program.shapes)) > 1

    collect()
    assert seen_ops == set(OPS) and dtypes == {np.float32, np.float64}
    assert broadcast and max(lengths) >= 4
