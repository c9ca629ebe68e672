"""benchmarks/bench_gradbench.py: GradBench's evals written from their specifications
run on llgrad at the small sizes with every check passing; the objectives agree with
direct transcriptions of the specifications; and the checker catches a wrong result."""
import math

import numpy as np
import pytest

from benchmarks import bench_gradbench as gb


def test_small_sizes_on_llgrad_alone_pass_every_check(capsys):
    assert gb.main(["--sizes", "small", "--systems", "llgrad,llgrad-fastmath", "--seconds",
                    "0.01"]) == 0
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


# -- ba and ht: Jacobians ---------------------------------------------------------------------

def rodrigues_matrix(rotation):
    """R = I + sin(t) K + (1 - cos(t)) K^2 for the unit axis k = rotation / t (K its
    cross-product matrix): the textbook form, not the rotate-a-point form of the bench."""
    angle = np.linalg.norm(rotation)
    k = rotation / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def test_ba_residuals_are_the_specifications_reprojection_errors():
    """Observation by observation: X_cam = R (X - C), p = X_cam[:2] / X_cam[2],
    p (1 + k1 r^2 + k2 r^4) f + (u0, v0) - feature, times w; and 1 - w^2."""
    (problem,) = gb.ba_problems("small")
    (cams, x, w), (features, cameras, points) = problem.params, problem.data
    ours = gb.ba_objective(gb.NUMPY, problem.params, problem.data)
    assert ours.shape == (len(w), 3)
    for i, (c, j) in enumerate(zip(cameras, points)):
        cam = cams[c]
        seen = rodrigues_matrix(cam[0:3]) @ (x[j] - cam[3:6])
        assert seen[2] > 3    # the points lie in front of every camera
        p = seen[:2] / seen[2]
        r2 = p @ p
        projected = p * (1 + cam[9] * r2 + cam[10] * r2 ** 2) * cam[6] + cam[7:9]
        expected = [*(w[i] * (projected - features[i])), 1 - w[i] ** 2]
        assert ours[i] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def bone_angles_by_adbenchs_loop(theta, bones=22):
    """ADBench's to_pose_params read literally: rows 3.. of the pose are the bones'."""
    pose = np.zeros((bones + 3, 3))
    i_theta, i_pose = 6, 5
    for _finger in range(5):
        for i in (2, 3, 4):
            pose[i_pose, 0] = theta[i_theta]
            i_theta += 1
            if i == 2:
                pose[i_pose, 1] = theta[i_theta]
                i_theta += 1
            i_pose += 1
        i_pose += 1
    return pose[3:]


def euler_matrix(tx, tz, ty):
    rx = np.array([[1, 0, 0], [0, math.cos(tx), -math.sin(tx)], [0, math.sin(tx), math.cos(tx)]])
    ry = np.array([[math.cos(ty), 0, math.sin(ty)], [0, 1, 0], [-math.sin(ty), 0, math.cos(ty)]])
    rz = np.array([[math.cos(tz), -math.sin(tz), 0], [math.sin(tz), math.cos(tz), 0], [0, 0, 1]])
    return rz @ ry @ rx


def skinned_hand_by_loops(theta, relatives, inverse_absolutes, base_positions, weights):
    """The hand model read literally: 4x4 transforms bone by bone, vertex by vertex."""
    absolutes = []
    for bone, (parent, angles) in enumerate(zip(gb.HAND_PARENTS,
                                                bone_angles_by_adbenchs_loop(theta))):
        rotation = np.eye(4)
        rotation[:3, :3] = euler_matrix(*angles)
        posed = relatives[bone] @ rotation
        absolutes.append(posed if parent == -1 else absolutes[parent] @ posed)
    vertices = np.zeros((len(base_positions), 3))
    for v, rest in enumerate(base_positions):
        for bone, absolute in enumerate(absolutes):
            vertices[v] += weights[v, bone] * (absolute @ inverse_absolutes[bone] @ rest)[:3]
    return vertices @ rodrigues_matrix(theta[0:3]).T + theta[3:6]


def test_ht_pose_index_is_adbenchs_theta_layout():
    theta = np.arange(26.0) + 1
    angles = np.concatenate([[0.0], theta])[gb.hand_pose_index()]
    assert np.array_equal(angles, bone_angles_by_adbenchs_loop(theta))


@pytest.mark.parametrize("variant", [0, 1], ids=["simple", "complicated"])
def test_ht_residuals_are_the_skinned_hands(variant):
    problem = gb.ht_problems("small")[variant]
    theta = problem.params[0]
    points, targets, *model = problem.data
    vertices = skinned_hand_by_loops(theta, *model)
    if variant == 0:
        expected = points - vertices[targets]
    else:
        (u, v) = problem.params[1].T
        a, b, c = (vertices[targets[:, k]] for k in range(3))
        expected = points - (u[:, None] * a + v[:, None] * b + (1 - u - v)[:, None] * c)
    ours = gb.ht_objective(gb.NUMPY, problem.params, problem.data, **problem.static)
    assert ours == pytest.approx(expected.reshape(-1), rel=1e-12, abs=1e-12)


def test_ht_rest_pose_gives_the_models_base_positions():
    """The synthetic model's inverse base absolutes undo its base absolutes."""
    problem = gb.ht_problems("small")[0]
    points, _, *model = problem.data
    theta = np.zeros(26)
    theta[0], theta[3:6] = 1e-12, [0.5, -1.0, 2.0]   # no rotation (the angle may not be 0)
    vertices = gb.hand_vertices(np, theta, *model, **problem.static)
    assert vertices == pytest.approx(model[2][:, :3] + theta[3:6], abs=1e-12)


@pytest.fixture(scope="module")
def llgrad_jacobians():
    """{key: [(eval, problem, llgrad's result)]} for ba's and ht's small problems, on
    one thread as ``main`` runs them (so the test cache holds their native code)."""
    from benchmarks.run import pinned_threads
    llgrad, results = gb.llgrad_transforms(), {}
    with pinned_threads(1):
        for ev in (e for e in gb.EVALS if e.key in ("ba", "ht")):
            results[ev.key] = [(ev, problem, gb.build_call(llgrad, ev, problem)())
                               for problem in ev.problems("small")]
    return results


def _fd_check(ev, problem, result):
    direction, numeric = gb.directional_derivative(ev, problem)
    return gb.check({"llgrad": result}, direction, numeric,
                    along=lambda jacobian, d: ev.along(problem, jacobian, d))["llgrad"]


def test_central_difference_catches_a_ba_block_on_the_wrong_observation(llgrad_jacobians):
    ((ev, problem, result),) = llgrad_jacobians["ba"]
    assert _fd_check(ev, problem, result)["passed"]
    by_camera, by_point, by_weight = result["jacobian"]
    swapped = by_camera.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    bad = _fd_check(ev, problem, {"jacobian": (swapped, by_point, by_weight)})
    assert not bad["passed"] and bad["fd"] > gb.FD_TOLERANCE


def test_central_difference_catches_a_wrong_ht_column_and_us_block(llgrad_jacobians):
    for ev, problem, result in llgrad_jacobians["ht"]:
        assert _fd_check(ev, problem, result)["passed"]
        for block in range(len(result["jacobian"])):
            wrong = [j.copy() for j in result["jacobian"]]
            largest = np.argmax(np.abs(wrong[block]).sum(axis=0))
            wrong[block][:, largest] *= 1 + 1e-3
            bad = _fd_check(ev, problem, {"jacobian": tuple(wrong)})
            assert not bad["passed"] and bad["fd"] > gb.FD_TOLERANCE


@pytest.mark.parametrize("peer", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_ba_and_ht_agree_with_a_peer(peer, capsys):
    """JAX compiles each ht Jacobian for seconds: opt in with -m slow."""
    pytest.importorskip(peer)
    assert gb.main(["--sizes", "small", "--evals", "ba,ht", "--systems", f"llgrad,{peer}",
                    "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"| {peer} |") == 3 and "MISMATCH" not in out
