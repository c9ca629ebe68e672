"""Native code agrees with the interpreter (the numpy meaning of every primitive) and numpy.

Each case of the table in helpers.py (``CASES``: every primitive, every dtype it
accepts, awkward shapes) builds a one-primitive graph by hand.  It is checked twice:
alone (the primitive's own loop nest) and fused (its operands produced inline by an
identity elementwise op, its result consumed inline by another), so both the kernel
and the inline-read path of every lowering row run.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import ALL, CASES, F, arguments, case_parameters

from llgrad.compiler.codegen.lowering import LOWERINGS
from llgrad.compiler.codegen.build import compile_graph
from llgrad.ir import PRIMITIVES, Builder, Graph, TensorType, interpret
from llgrad.ir.errors import DTypeError, ShapeError

RNG = np.random.default_rng(0)  # the operands of the BLAS provider test


# ----------------------------------------------------------------------------------
# building and checking

def _graph(case, fused):
    b = Builder()
    params = case_parameters(b, case)
    operands = params
    if fused:  # identity producers, computed inline by the op's loop
        operands = [b.select(b.eq(p, p), p, p) for p in params]
    if case.op == "parameter":
        out = params[0]
    elif case.op == "constant":
        value = np.asarray(case.attrs["value"])
        value.setflags(write=False)
        out = b.emit("constant", value=value)
    else:
        out = b.emit(case.op, *operands, **case.attrs)
    if fused:  # an identity consumer, into whose loop the op is inlined
        out = b.convert(out, dtype=out.dtype)
    return Graph(params, [out], name=f"case_{case.op}")


@functools.lru_cache(maxsize=None)
def _compiled(index, fused):
    case = CASES[index]
    graph = _graph(case, fused)
    return graph, compile_graph(graph)


def _tolerance(want, exact, terms):
    """Exact, or a few ulp; sums of n terms may differ by n ulp of their largest term."""
    if exact or want.dtype.kind != "f":
        return dict(rtol=0, atol=0)
    eps = float(np.finfo(want.dtype).eps)
    big = float(np.max(np.abs(want[np.isfinite(want)]), initial=1.0))
    return dict(rtol=8 * eps, atol=8 * eps * terms * big if terms > 1 else 8 * eps)


def _check(got, want, exact, terms=1):
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    np.testing.assert_allclose(got, want, equal_nan=True, **_tolerance(want, exact, terms))


@pytest.mark.parametrize("fused", [False, True], ids=["alone", "fused"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.id for c in CASES])
def test_primitive_matches_interpreter_and_numpy(index, fused):
    case = CASES[index]
    graph, exe = _compiled(index, fused)
    args = arguments(case)
    (got,) = exe(*args)
    (want,) = interpret(graph, *args)
    _check(got, want, case.exact, case.terms)
    with np.errstate(all="ignore"):
        direct = np.asarray(case.numpy(*args)).astype(want.dtype)
    _check(got, direct, case.exact, case.terms)


@pytest.mark.parametrize("dtype", F)
def test_staged_reduction_sums_in_the_same_order_as_the_direct_one(dtype):
    """A reduced value computed inline is staged in chunks before the lanes sum it
    (kernels.CHUNK); the order of the additions, and so every bit, must not change."""
    index = next(i for i, c in enumerate(CASES)
                 if c.op == "reduce_sum" and c.types == [((2, 1100), dtype)])
    args = arguments(CASES[index])
    (direct,) = _compiled(index, False)[1](*args)
    (staged,) = _compiled(index, True)[1](*args)
    assert "stage" in _compiled(index, True)[1].llvm_ir
    np.testing.assert_array_equal(staged, direct)


def test_a_row_sum_adds_each_lane_in_order_as_one_vector():
    """Element j of a row goes to partial sum j % LANES, in order, and the partial sums
    combine pairwise (emulated here in float32 with numpy); the lanes are one vector
    register in the loop, not scalars for the SLP vectoriser to reassemble."""
    import llgrad
    from llgrad.compiler.codegen.kernels import LANES
    g = np.random.default_rng(3).standard_normal((16, 13 * LANES + 5)).astype(np.float32)
    f = llgrad.jit(lambda g: np.sum(g * g, axis=1))
    squares = g * g
    lanes = np.zeros((16, LANES), np.float32)
    for start in range(0, 13 * LANES, LANES):
        lanes += squares[:, start:start + LANES]
    partial = [lanes[:, k] for k in range(LANES)]
    while len(partial) > 1:
        partial = [partial[k] + partial[k + 1] for k in range(0, len(partial), 2)]
    want = partial[0]
    for j in range(13 * LANES, g.shape[1]):
        want = want + squares[:, j]
    np.testing.assert_array_equal(f(g), want)
    assert f"fadd <{LANES} x float>" in f.trace(g).llvm_ir_optimized


def test_every_primitive_has_a_lowering_row():
    assert set(p.lowering for p in PRIMITIVES.values()) <= set(LOWERINGS)


def test_every_primitive_has_a_test_case():
    tested = {c.op for c in CASES} | {"loop", "tuple_get"}  # tests/test_codegen_loop.py
    tested |= {"cond", "stop_gradient", "custom_vjp_call", "custom_jvp_call"}  # test_cond.py,
    # test_custom_rules.py
    tested |= {"allreduce_sum"}  # test_distributed.py, in MPI jobs
    tested |= {"while", "checkpoint"}  # test_while_loop.py, test_recompute.py
    tested |= {"tape_row"}  # test_while_heap_tape.py
    missing = set(PRIMITIVES) - tested
    assert not missing, f"primitives without a codegen test case: {sorted(missing)}"


def test_every_accepted_dtype_is_covered():
    """Each elementwise primitive is tested with every dtype its type rule accepts."""
    for name, prim in PRIMITIVES.items():
        if not prim.symbolic:
            continue
        tested = {c.types[-1][1] for c in CASES if c.op == name}
        for dt in ALL:
            t = TensorType((2,), dt)
            try:
                prim.type_rule([t] * (1 if prim.formula.count("y") == 0 else 2))
            except (DTypeError, ShapeError):
                continue
            assert dt in tested, f"{name} accepts {dt} but no case tests it"


@pytest.mark.parametrize("path", ["blas", "loops"])
@pytest.mark.parametrize("index", [i for i, c in enumerate(CASES) if c.op == "dot_general"],
                         ids=[c.id for c in CASES if c.op == "dot_general"])
def test_dot_general_blas_and_loop_nest_agree(index, path):
    """Both matmul paths, forced: gemm for every size it accepts, or never."""
    case = CASES[index]
    graph = _graph(case, fused=False)
    exe = compile_graph(graph, blas=path == "blas", blas_min_flops=1)
    args = arguments(case)
    _check(exe(*args)[0], interpret(graph, *args)[0], case.exact, case.terms)
    uses_gemm = "gemm" in exe.llvm_ir
    assert uses_gemm == (path == "blas" and min(args[0].size, args[1].size) > 0
                         and graph.outputs[0].type.size > 0)


@pytest.mark.parametrize("provider", ["numpy's OpenBLAS", "scipy"])
@pytest.mark.parametrize("dims", [(((1,), (0,)), ((), ())), (((0,), (0,)), ((), ())),
                                  (((1,), (1,)), ((), ()))], ids=["NN", "TN", "NT"])
def test_each_blas_provider_multiplies_transposed_operands(provider, dims, monkeypatch):
    """Both calling conventions (row-major CBLAS, column-major Fortran), with operands
    read transposed in place."""
    from llgrad.compiler.codegen import build as pipeline
    from llgrad.runtime import blas
    found = blas._numpy_openblas() if provider.startswith("numpy") else (
        pytest.importorskip("scipy") and blas._scipy_blas())
    if not found:
        pytest.skip(f"{provider} is not available here")
    monkeypatch.setattr(pipeline, "blas_symbols", lambda: found)
    (lc, rc), _ = dims
    lhs_shape = (40, 33) if lc == (1,) else (33, 40)
    rhs_shape = (33, 20) if rc == (0,) else (20, 33)
    for dtype in ("float64", "float32"):
        b = Builder()
        x = b.parameter(index=0, type=TensorType(lhs_shape, dtype), name="x")
        y = b.parameter(index=1, type=TensorType(rhs_shape, dtype), name="y")
        graph = Graph([x, y], [b.dot_general(x, y, dims=dims)])
        exe = compile_graph(graph, blas_min_flops=1)
        assert found[dtype].symbol in exe.llvm_ir
        args = [RNG.standard_normal(s).astype(dtype) for s in (lhs_shape, rhs_shape)]
        _check(exe(*args)[0], interpret(graph, *args)[0], exact=False, terms=33)
