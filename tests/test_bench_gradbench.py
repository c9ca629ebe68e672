"""benchmarks/bench_gradbench.py: GradBench's evals written from their specifications
run on llgrad at the small sizes with every check passing; the objectives agree with
direct transcriptions of the specifications; and the checker catches a wrong result."""
import math

import numpy as np
import pytest

from benchmarks import bench_gradbench as gb


def test_small_sizes_on_llgrad_alone_pass_every_check(capsys):
    assert gb.main(["--sizes", "small", "--systems", "llgrad", "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    for ev in gb.EVALS:
        assert f"### {ev.key} " in out
    assert "MISMATCH" not in out and "failed" not in out


def naive_log_posterior(alpha, mu, q, l, x, m=0, gamma=1.0):
    """GradBench's gmm definition read literally: the mixture's density point by point
    with det and inv, times a Wishart density per precision matrix."""
    d = x.shape[1]
    phi = np.exp(alpha) / np.sum(np.exp(alpha))
    precisions = []
    for qk, lk in zip(q, l):
        lower = np.diag(np.exp(qk))
        entries = iter(lk)
        for col in range(d):
            for row in range(col + 1, d):
                lower[row, col] = next(entries)
        precisions.append(lower.T @ lower)
    log_likelihood = sum(math.log(sum(
        p * math.exp(-0.5 * (xi - mk) @ prec @ (xi - mk))
        / math.sqrt((2 * math.pi) ** d / np.linalg.det(prec))
        for p, mk, prec in zip(phi, mu, precisions))) for xi in x)
    dof, scale = d + m + 1, np.eye(d) / gamma ** 2
    log_gamma_d = d * (d - 1) / 4 * math.log(math.pi) + sum(
        math.lgamma(dof / 2 + (1 - j) / 2) for j in range(1, d + 1))
    log_prior = sum((dof - d - 1) / 2 * math.log(np.linalg.det(prec))
                    - 0.5 * np.trace(np.linalg.inv(scale) @ prec) - dof * d / 2 * math.log(2)
                    - dof / 2 * math.log(np.linalg.det(scale)) - log_gamma_d
                    for prec in precisions)
    return log_likelihood + log_prior


@pytest.mark.parametrize("d, k", [(2, 3), (4, 2)])
def test_gmm_objective_is_the_specifications_log_posterior(d, k):
    rng = np.random.default_rng(7)
    alpha, mu, q = rng.normal(size=k), rng.uniform(size=(k, d)), 0.3 * rng.normal(size=(k, d))
    l, x = 0.3 * rng.normal(size=(k, d * (d - 1) // 2)), rng.normal(size=(5, d))
    ours = gb.gmm_objective(gb.NUMPY, (alpha, mu, q, l), (x,),
                            triangle=gb.lower_triangle_index(d), m=2, gamma=1.5)
    assert ours == pytest.approx(naive_log_posterior(alpha, mu, q, l, x, m=2, gamma=1.5),
                                 rel=1e-12)


def scalar_runge_kutta(x, steps):
    """GradBench's C++ reference's loops: z_0 = x_0, z_i = x_i y_{i-1}, RK4 to t = 2."""
    n, h, y = len(x), 2.0 / steps, [0.0] * len(x)

    def rate(v):
        return [x[0]] + [x[i] * v[i - 1] for i in range(1, n)]

    for _ in range(steps):
        k1 = rate(y)
        k2 = rate([a + h * b / 2 for a, b in zip(y, k1)])
        k3 = rate([a + h * b / 2 for a, b in zip(y, k2)])
        k4 = rate([a + h * b for a, b in zip(y, k3)])
        y = [a + h * (b + 2 * c + 2 * e + f) / 6 for a, b, c, e, f in zip(y, k1, k2, k3, k4)]
    return y[-1]


@pytest.mark.parametrize("n, steps", [(6, 3), (8, 2), (9, 2)])
def test_ode_objective_matches_scalar_runge_kutta_and_is_zero_past_4s(n, steps):
    x = np.random.default_rng(3).random(n)
    ours = gb.ode_objective(gb.NUMPY, (x,), (), steps=steps)
    assert ours == pytest.approx(scalar_runge_kutta(list(x), steps), rel=1e-13)
    assert (ours == 0.0) == (n > 4 * steps)


def test_llsq_and_lse_objectives_match_their_definitions():
    (problem,) = gb.llsq_problems("small")
    (x,), (t, s, _) = problem.params, problem.data
    expected = 0.5 * sum((si - sum(xj * ti ** j for j, xj in enumerate(x))) ** 2
                         for ti, si in zip(t, s))
    assert gb.llsq_objective(gb.NUMPY, problem.params, problem.data) == pytest.approx(expected)
    v = np.array([1000.0, 999.0, -5.0])   # the max trick keeps exp from overflowing
    assert gb.lse_objective(gb.NUMPY, (v,), ()) == pytest.approx(1000 + math.log(1 + math.exp(-1)))


def _result(gradient, value=1.0):
    return {"value": (np.float64(value),), "gradient": (np.asarray(gradient, np.float64),)}


def test_checker_flags_a_wrong_gradient_against_central_differences_and_peers():
    direction, numeric = (np.array([1.0, 2.0]),), 5.0        # true gradient [1, 2]
    good, wrong = _result([1.0, 2.0]), _result([1.0, 2.0 + 1e-4])
    alone = gb.check({"wrong": wrong}, direction, numeric)
    assert not alone["wrong"]["passed"] and alone["wrong"]["fd"] > gb.FD_TOLERANCE
    both = gb.check({"good": good, "wrong": wrong}, direction, numeric)
    assert both["good"]["fd"] == 0.0 and both["good"]["peers"] > gb.PEER_TOLERANCE
    assert not both["good"]["passed"] and not both["wrong"]["passed"]
    assert gb.check({"good": good}, direction, numeric)["good"]["passed"]


def test_checker_flags_a_nan_a_wrong_shape_and_a_wrong_value():
    direction, numeric = (np.array([1.0, 2.0]),), 5.0
    assert gb.relative_difference((np.array([np.nan, 1.0]),), (np.array([1.0, 1.0]),)) == math.inf
    assert gb.relative_difference((np.ones(2),), (np.ones(3),)) == math.inf
    values = gb.check({"a": _result([1.0, 2.0], 1.0), "b": _result([1.0, 2.0], 1.1)},
                      direction, numeric)
    assert not values["a"]["passed"]


def test_a_system_returning_a_wrong_gradient_fails_the_run():
    """The whole pipeline, with a system whose 'gradient' is all ones."""
    broken = gb.Transforms(
        "broken", gb.NUMPY,
        lambda f: lambda params, *data: (f(params, *data), tuple(np.ones_like(p) for p in params)),
        None, lambda f: f, lambda a: a, np.asarray)
    lse = next(e for e in gb.EVALS if e.key == "lse")
    lines = []
    assert not gb.run_eval(lse, {"broken": broken}, "small", 0.0, log=lines.append)
    assert "MISMATCH" in lines[0]
