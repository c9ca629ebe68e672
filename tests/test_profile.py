"""llgrad.profile: every kernel call timed, labelled with what it computes.

The oracles: the kernels the profile names are the fusion plan's, their arithmetic
adds up to the trace's count, the profiled code computes the same bits, the counts
of calls are the calls made, and a kernel that does nearly all the work takes most
of the time."""
import numpy as np
import pytest

import llgrad
from llgrad import optim
from llgrad.compiler.codegen.build import compile_graph
from llgrad.profiling import Counters, measure


def mlp_loss(params, x, y):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def mlp_problem(rng, n=100):
    params = {"w1": rng.normal(size=(3, 16)), "b1": rng.normal(size=16),
              "w2": rng.normal(size=(16, 1)), "b2": rng.normal(size=1)}
    x = rng.normal(size=(n, 3))
    return params, x, np.sin(x[:, :1])


def test_the_profile_names_every_kernel_once_and_its_arithmetic_adds_up(rng):
    params, x, y = mlp_problem(rng)
    grad = llgrad.grad(mlp_loss)
    prof = llgrad.profile(grad, params, x, y, seconds=0.05)
    trace = grad.trace(params, x, y)
    n_kernels = len(trace.executable.plan[0].kernels)
    covered = [k for r in prof.rows for k in range(r["label"]["kernels"][0],
                                                     r["label"]["kernels"][1] + 1)]
    assert sorted(covered) == list(range(n_kernels))
    assert sum(r["label"]["flops"] for r in prof.rows) == trace.stats["flops"]
    assert prof.calls >= 3 and all(r["calls"] == prof.calls for r in prof.rows)
    assert all(r["seconds"] >= 0 for r in prof.rows)
    assert 0 < prof.kernel_seconds_per_call <= prof.seconds_per_call
    text = str(prof)
    assert text.count("\n") == len(prof.rows) + 2 and "outside kernels" in text
    assert "mlp_loss" in text and "test_profile.py" in text   # the user's lines


def test_profiled_code_computes_the_same_bits(rng):
    params, x, y = mlp_problem(rng)
    graph = llgrad.value_and_grad(mlp_loss).trace(params, x, y).optimized.graph
    leaves = [x for x in (params["b1"], params["b2"], params["w1"], params["w2"], x, y)]
    leaves = [np.asarray(v) for v in leaves]
    plain, profiled = compile_graph(graph), compile_graph(graph, profile=True)
    assert "llvm.readcyclecounter" in profiled.llvm_ir
    assert "llvm.readcyclecounter" not in plain.llvm_ir
    for a, b in zip(profiled(*leaves), plain(*leaves)):
        np.testing.assert_array_equal(a, b)
    loaded = compile_graph(graph, profile=True)         # from the on-disk cache this time
    assert "_module" not in vars(loaded._lowering)       # no code made: labels from metadata
    prof = measure(loaded, leaves, "loaded", seconds=0.01)
    assert [r["label"] for r in prof.rows] == Counters(profiled).labels
    assert all(r["calls"] == prof.calls for r in prof.rows)


def test_the_kernel_doing_nearly_all_the_work_takes_most_of_the_time(rng):
    a, b = rng.normal(size=(192, 192)), rng.normal(size=(192, 192))
    prof = llgrad.profile(lambda a, b: (a @ b) + 1.0, a, b, seconds=0.1)
    product = [r for r in prof.rows if r["label"]["op"] == "dot_general"]
    assert len(product) == 1
    assert product[0]["seconds"] > 0.5 * sum(r["seconds"] for r in prof.rows)
    assert product[0]["flops_per_s"] > 1e8      # 14 Mflop a call: at least 0.1 Gflop/s


def test_a_training_run_profiles_its_step_kernels_under_the_loop(rng):
    """Chunks of 3, 3 and 2 steps are two executables; their rows add up."""
    params, x, y = mlp_problem(rng, n=80)
    result = llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.05), batch_size=10,
                          steps_per_call=3, profile=True)
    plain = llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.05), batch_size=10,
                         steps_per_call=3)
    for k in params:
        np.testing.assert_array_equal(result.params[k], plain.params[k])
    prof = result.profile
    assert prof.calls == 3
    loops = [r for r in prof.rows if r["label"]["op"] == "loop"]
    body = [r for r in prof.rows if r["depth"] == 1]
    assert [r["calls"] for r in loops] == [3]
    assert body and all(r["calls"] == 8 for r in body)   # every step ran every kernel
    assert "dot_general" in {r["label"]["op"] for r in body}
    # the first layer's bias and tanh run as its product's epilogue, shown fused into it
    assert any(r["label"]["op"] == "dot_general" and "tanh" in r["label"]["fused"] for r in body)
    assert "  k" in str(prof)                            # the body indented under its loop


def test_profiling_needs_native_code(rng):
    params, x, y = mlp_problem(rng)
    with pytest.raises(llgrad.LlgradError, match="backend='interpret'"):
        llgrad.profile(llgrad.grad(mlp_loss, backend="interpret"), params, x, y)
    with pytest.raises(ValueError, match="profile=True needs backend='native'"):
        llgrad.train(mlp_loss, params, (x, y), optim.sgd(0.1), batch_size=10, profile=True,
                     backend="interpret")


@pytest.mark.parametrize("x, taken", [(2.0, "sub"), (3.0, "mul")])
def test_profile_runs_on_a_python_scalar_argument(x, taken):
    """A Python float is converted to an array for the native call; the profile's calls
    read that array, not memory freed after the first call: the branch its value picks
    is the one whose kernel ran."""
    def f(v):
        return llgrad.cond(v > 2.5, lambda v: v * 100.0, lambda v: v - 1.0, v)
    prof = llgrad.profile(f, x, seconds=0.01)
    ran = {r["label"]["op"] for r in prof.rows if r["depth"] == 1 and r["calls"]}
    assert ran == {taken}
