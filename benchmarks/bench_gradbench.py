"""GradBench's evals as an external check: llgrad against JAX and PyTorch, float64.

    python benchmarks/bench_gradbench.py [--sizes small|default] [--threads 1]
                                         [--evals gmm,lse,...]
                                         [--systems llgrad,llgrad-fastmath,jax,torch]

GradBench (https://github.com/gradbench/gradbench, Haskell/Python/C++ by Troels Henriksen,
Sam Estep and others) is the field's public benchmark of automatic-differentiation tools.
The objectives below are written here from its evals' specifications (evals/*/README.md),
with its input generators' sizes and seeds; no code of GradBench's is copied.  Each
objective is written once against an array namespace ``xp`` (numpy traced by llgrad,
``jax.numpy``, a thin torch adapter) and differentiated by each system:

- gmm: the log posterior of a Gaussian mixture with a Wishart prior on the precision
  matrices (ADBench's, with GradBench's three fixes); the gradient with respect to
  alpha, mu, q, l.  n = 1,000 points from a normal, GradBench's generator's sizes.
- lse: log-sum-exp of x ~ U[0, 1) by the max trick; its gradient.
- llsq: cmpad's least-squares objective 1/2 sum_i (s_i - sum_j x_j t_i^j)^2 with
  t_i = -1 + 2i/(n - 1), s_i = sign(t_i); its gradient (m = 128 coefficients).
- kmeans: sum over points of the squared distance to the nearest centroid (centroids
  the last k points, as GradBench's generator takes them); GradBench's "dir", the Newton
  direction J / diag(H): the gradient and the Hessian's diagonal in one pass, a jvp of
  the gradient along a vector of ones (the Hessian is diagonal, so H 1 = diag H).
- ode: cmpad's an_ode, y_0' = x_0, y_i' = x_i y_{i-1} (the form GradBench's C++
  reference computes), y(0) = 0, s steps of classical Runge-Kutta up to t = 2; the
  gradient of the last element of y(2) (exactly 0 at GradBench's sizes: see
  ``ode_problems``).  A loop carried by the system's own
  fori_loop (llgrad.fori_loop, jax.lax.fori_loop; a Python loop in PyTorch).
- lstm: ADBench's LSTM (elementwise gate weights, log-softmax prediction), the
  gradient with respect to the main and extra parameters; its time loop a scan
  (llgrad.scan, jax.lax.scan; a Python loop in PyTorch).  GradBench reads
  its characters from a text file not stored with its repository: here a fixed-seed
  random 0/1 sequence of the same shape (14 bits a character).

- ba: ADBench's bundle adjustment, n cameras (11 parameters each), m points, p
  observations with weights: the weighted reprojection errors and weight errors
  1 - w^2; GradBench's sparse Jacobian as its nonzero blocks (per observation, with
  respect to its camera, point and weight), the Jacobian of one observation mapped
  over all (llgrad.vmap(llgrad.jacfwd), jax.vmap(jax.jacfwd), torch.func's).
  GradBench's first two files' n, m, p; its files repeat one camera, point, weight and
  feature, drawn here instead with a fixed seed (see ``ba_problems``).
- ht: ADBench's hand tracking, a skinned hand of 22 bones posed by theta (26); the
  points minus their matched vertices (simple) or triangle points (complicated, with
  the barycentric us); the dense Jacobian with respect to theta by forward mode, and
  for the complicated variant GradBench's compressed (3 c, 2) us block.  GradBench
  reads its hand models from data files; here synthetic models of their sizes (544 or
  10,000 vertices, 1,084 triangles), fixed seed (see ``hand_model``).

Not here: the C++ reference tool.

Oracle: every system's objective value and gradient (kmeans: also H 1 and the
direction; ba and ht: the Jacobian) against every other system's, and its gradient's
projection on a random direction (ba and ht: the Jacobian times a random direction)
against a central difference of the float64 numpy objective; kmeans also against its
closed form (J = sum 2 (c - p) over each centroid's points, H = 2 count).
The exit status is 1 on any mismatch or failure.
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the checkout's `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workloads import python_scan

SEED = 31337                  # GradBench's generators' seed
PEER_TOLERANCE = 1e-8         # relative difference between two systems' float64 results
FD_TOLERANCE = 1e-5           # relative difference from a central difference
FD_STEP = 1e-6


# -- array namespaces ----------------------------------------------------------------------

class Namespace:
    """An array module plus what the objectives need beyond numpy's names
    (``fori_loop``), so that one source runs on every system."""

    def __init__(self, base, **extra):
        self._base = base
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self._base, name)


def python_fori_loop(lower, upper, body, init):
    value = init
    for i in range(lower, upper):
        value = body(i, value)
    return value


NUMPY = Namespace(np, fori_loop=python_fori_loop)
NUMPY.scan = lambda step, carry, xs: python_scan(np, step, carry, xs)


def _logsumexp0(xp, v):
    """log sum exp over axis 0 by the max trick (GradBench's lse asks for exactly this)."""
    top = xp.max(v, axis=0, keepdims=True)
    return top[0] + xp.log(xp.sum(xp.exp(v - top), axis=0))


# -- the evals ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One input: the differentiable ``params`` (a tuple of float64 arrays), the other
    arrays ``data``, and ``static`` keywords that shape the program."""
    params: tuple
    data: tuple
    size: str
    static: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Eval:
    key: str
    objective: Callable           # objective(xp, params, data, **static) -> scalar (or residuals)
    problems: Callable            # problems(sizes) -> [Problem]
    computes: str = "gradient"    # or "dir": kmeans's Newton direction; or "jacobian"
    closed_form: Callable | None = None   # closed_form(problem) -> {quantity: arrays}
    # "jacobian" only: jacobian(system, objective) -> fn(params, *data) -> tuple of arrays,
    # and along(problem, jacobian, direction) -> that Jacobian times direction
    jacobian: Callable | None = None
    along: Callable | None = None

    @property
    def derivative(self) -> str:
        """The result's quantity that the central difference checks."""
        return "jacobian" if self.computes == "jacobian" else "gradient"


def gmm_objective(xp, params, data, *, triangle, m=0, gamma=1.0):
    """log p(X | theta, phi) + log p(theta): beta_ik = alpha_k + sum_j q_kj
    - |Q_k (x_i - mu_k)|^2 / 2, Q_k = diag(exp q_k) + the strictly lower triangle
    filled from l_k column by column (``triangle`` indexes [0, l_k] into it)."""
    alpha, mu, q, l = params
    (x,) = data
    n, d = x.shape
    k = mu.shape[0]
    diagonal = xp.exp(q)
    lower = xp.concatenate([0.0 * l[:, :1], l], axis=1)[:, triangle].reshape(k, d, d)
    centred = x.T[None, :, :] - mu[:, :, None]                          # (k, d, n)
    z = diagonal[:, :, None] * centred + lower @ centred                # Q_k (x_i - mu_k)
    beta = alpha[:, None] + xp.sum(q, axis=1)[:, None] - 0.5 * xp.sum(z * z, axis=1)
    log_likelihood = (xp.sum(_logsumexp0(xp, beta))
                      - n * (0.5 * d * math.log(2 * math.pi) + _logsumexp0(xp, alpha)))
    dof = d + m + 1
    log_gamma_d = (d * (d - 1) / 4 * math.log(math.pi)
                   + sum(math.lgamma(dof / 2 + (1 - j) / 2) for j in range(1, d + 1)))
    log_prior = (k * (dof * d * math.log(gamma / math.sqrt(2)) - log_gamma_d)
                 - 0.5 * gamma * gamma * (xp.sum(diagonal * diagonal) + xp.sum(l * l))
                 + m * xp.sum(q))
    return log_likelihood + log_prior


def lower_triangle_index(d: int) -> np.ndarray:
    """For Q's row-major d*d entries: 0 off the strict lower triangle, else 1 + the
    entry's position in l (filled column by column, as GradBench specifies)."""
    index = np.zeros(d * d, np.int64)
    position = 1
    for col in range(d):
        for row in range(col + 1, d):
            index[row * d + col] = position
            position += 1
    return index


def gmm_problems(sizes):
    dk = [(2, 5), (5, 3)] if sizes == "small" else [(2, 5), (10, 25), (20, 50), (64, 100)]
    n = 20 if sizes == "small" else 1000
    problems = []
    for d, k in dk:   # the draws of GradBench's generate(), in its order
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(n, d))
        alpha, mu = rng.normal(size=k), rng.uniform(size=(k, d))
        q, l = rng.normal(size=(k, d)), rng.normal(size=(k, d * (d - 1) // 2))
        problems.append(Problem((alpha, mu, q, l), (x,), f"d={d} k={k} n={n}",
                                {"triangle": lower_triangle_index(d)}))
    return problems


def lse_objective(xp, params, data):
    return _logsumexp0(xp, params[0])


def lse_problems(sizes):
    ns = [2500] if sizes == "small" else [10_000, 160_000, 1_280_000]
    return [Problem((np.random.default_rng(SEED).random(n),), (), f"n={n:,}") for n in ns]


def llsq_objective(xp, params, data):
    """t and s are data (they do not depend on x); ``powers`` is 0, 1, ..., m - 1."""
    (x,), (t, s, powers) = params, data
    residual = s - (t[:, None] ** powers[None, :]) @ x
    return 0.5 * xp.sum(residual * residual)


def llsq_problems(sizes):
    m = 128
    ns = [64] if sizes == "small" else [1024, 16_392]
    problems = []
    for n in ns:
        t = -1 + np.arange(n) * 2 / (n - 1)
        x = np.random.default_rng(SEED).random(m)
        problems.append(Problem((x,), (t, np.sign(t), np.arange(m, dtype=np.float64)),
                                f"n={n:,} m={m}"))
    return problems


def kmeans_objective(xp, params, data):
    """Each point's squared distance to its nearest centroid, summed; the distances as
    |p|^2 - 2 p.c + |c|^2, an (n, k) matrix rather than (n, k, d) differences."""
    (centroids,), (points,) = params, data
    distances = (xp.sum(points * points, axis=1)[:, None] - 2 * points @ centroids.T
                 + xp.sum(centroids * centroids, axis=1)[None, :])
    return xp.sum(xp.min(distances, axis=1))


def kmeans_closed_form(problem):
    (centroids,), (points,) = problem.params, problem.data
    nearest = np.argmin(((points[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    gradient = np.zeros_like(centroids)
    np.add.at(gradient, nearest, 2 * (centroids[nearest] - points))
    counts = np.bincount(nearest, minlength=len(centroids))[:, None]
    hessian = 2.0 * counts * np.ones_like(centroids)
    return {"gradient": (gradient,), "hessian diagonal": (hessian,),
            "dir": (gradient / hessian,)}


def kmeans_problems(sizes):
    knd = [(5, 100, 8)] if sizes == "small" else [(10, 1000, 8), (100, 10_000, 16),
                                                  (1000, 10_000, 16)]
    problems = []
    for k, n, d in knd:
        points = np.random.default_rng(SEED).random((n, d))
        problems.append(Problem((points[-k:].copy(),), (points,), f"k={k} n={n:,} d={d}"))
    return problems


def ode_objective(xp, params, data, *, steps):
    (x,) = params
    h = 2.0 / steps

    def rate(y):
        return xp.concatenate([x[:1], x[1:] * y[:-1]])

    def runge_kutta(i, y):
        k1 = rate(y)
        k2 = rate(y + h / 2 * k1)
        k3 = rate(y + h / 2 * k2)
        k4 = rate(y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return xp.fori_loop(0, steps, runge_kutta, 0.0 * x)[-1]


def ode_problems(sizes):
    """GradBench's sizes have n > 4s, where y_{n-1}(2) and its gradient are exactly 0
    (each Runge-Kutta step carries x's influence at most four places down y): timed,
    but their check is empty; (50, 100) and the small (30, 10) check numbers."""
    ns = [(30, 10)] if sizes == "small" else [(50, 100), (1000, 10), (10_000, 100),
                                               (100_000, 100)]
    return [Problem((np.random.default_rng(SEED).random(n),), (), f"n={n:,} s={s}",
                    {"steps": s}) for n, s in ns]


def lstm_objective(xp, params, data):
    """ADBench's LSTM: per layer, gates = [x, h, x, h] * weight + bias (elementwise), forget/input/output
    sigmoids and a tanh change; the prediction's log-softmax scored against the next
    character, averaged (negated) over characters and bits."""
    (main, extra), (state, sequence) = params, data
    layers, b = main.shape[0] // 2, sequence.shape[1]

    def sigmoid(v):
        return 1 / (1 + xp.exp(-v))

    def step(carry, pair):
        x, gold = pair[:b], pair[b:]
        below = x * extra[0]
        new = []
        for k in range(layers):
            hidden, cell = carry[2 * k], carry[2 * k + 1]
            gates = xp.concatenate([below, hidden, below, hidden]) * main[2 * k] + main[2 * k + 1]
            cell = cell * sigmoid(gates[:b]) + sigmoid(gates[b:2 * b]) * xp.tanh(gates[3 * b:])
            hidden = sigmoid(gates[2 * b:3 * b]) * xp.tanh(cell)
            new += [hidden, cell]
            below = hidden
        prediction = below * extra[1] + extra[2]
        log_softmax = prediction - xp.log(xp.sum(xp.exp(prediction)))
        return xp.stack(new), xp.sum(gold * log_softmax)

    pairs = xp.concatenate([sequence[:-1], sequence[1:]], axis=1)   # (this, next) character
    _, totals = xp.scan(step, state, pairs)
    return -xp.sum(totals) / ((sequence.shape[0] - 1) * b)


def lstm_problems(sizes):
    lc = [(1, 16)] if sizes == "small" else [(2, 1024), (4, 1024)]
    b = 14
    problems = []
    for layers, c in lc:
        rng = np.random.default_rng(SEED)
        sequence = rng.integers(0, 2, size=(c, b)).astype(np.float64)
        state, main = rng.random((2 * layers, b)), rng.random((2 * layers, 4 * b))
        problems.append(Problem((main, rng.random((3, b))), (state, sequence),
                                f"l={layers} c={c:,} b={b}"))
    return problems


def _rotate(xp, rotation, points):
    """Rodrigues' formula: ``points`` (..., 3) rotated by the angle-axis vectors
    ``rotation`` (..., 3), broadcast against each other.  The angle must not be 0
    (ADBench's first-order branch for a zero angle is left out: no input here takes it)."""
    angle = xp.sqrt(xp.sum(rotation * rotation, axis=-1, keepdims=True))
    k = rotation / angle
    cos, sin = xp.cos(angle), xp.sin(angle)
    (k0, k1, k2), (p0, p1, p2) = ([v[..., i:i + 1] for i in range(3)] for v in (k, points))
    cross = xp.concatenate([k1 * p2 - k2 * p1, k2 * p0 - k0 * p2, k0 * p1 - k1 * p0], axis=-1)
    return (points * cos + cross * sin
            + k * (xp.sum(k * points, axis=-1, keepdims=True) * (1 - cos)))


def ba_residuals(xp, camera, point, weight, feature):
    """ADBench's bundle adjustment, one observation per leading index: the camera's 11
    parameters (angle-axis rotation 3, centre 3, focal length 1, principal point 2,
    radial distortion 2) project the point; the residuals are the weighted reprojection
    error (2) and the weight's error 1 - w^2 (1)."""
    seen = _rotate(xp, camera[..., 0:3], point - camera[..., 3:6])
    projected = seen[..., 0:2] / seen[..., 2:3]
    r2 = xp.sum(projected * projected, axis=-1, keepdims=True)
    distorted = projected * (1 + camera[..., 9:10] * r2 + camera[..., 10:11] * r2 * r2)
    error = weight[..., None] * (distorted * camera[..., 6:7] + camera[..., 7:9] - feature)
    return xp.concatenate([error, 1 - weight[..., None] * weight[..., None]], axis=-1)


def ba_objective(xp, params, data):
    """Every observation's residuals, (p, 3): observation i sees point ``points[i]`` from
    camera ``cameras[i]`` (the index arrays)."""
    (cams, x, w), (features, cameras, points) = params, data
    return ba_residuals(xp, cams[cameras], x[points], w, features)


def ba_jacobian(system, objective):
    """GradBench's sparse Jacobian as its nonzero blocks: per observation the (3, 11),
    (3, 3) and (3,) derivatives of its residuals with respect to its camera, its point
    and its weight, by the forward-mode Jacobian of one observation mapped over all
    (so it differentiates ``ba_residuals`` itself, not the all-observation ``objective``)."""
    def residuals(variables, feature):
        return ba_residuals(system.xp, *variables, feature)

    def blocks(params, features, cameras, points):
        cams, x, w = params
        return system.vmap(system.jacfwd(residuals))((cams[cameras], x[points], w), features)
    return blocks


def ba_along(problem, jacobian, direction):
    """The sparse Jacobian times ``direction`` (a change of cams, x and w), (p, 3)."""
    (_, cameras, points), (d_cams, d_x, d_w) = problem.data, direction
    by_camera, by_point, by_weight = jacobian
    return (np.einsum("pij,pj->pi", by_camera, d_cams[cameras])
            + np.einsum("pij,pj->pi", by_point, d_x[points]) + by_weight * d_w[:, None])


def ba_problems(sizes):
    """GradBench's first ba files' n cameras, m points and p observations (observation
    i: camera i mod n, point i mod m).  Its files repeat one camera, point, weight and
    feature; here each is drawn (fixed seed) at the files' magnitudes: cameras turned
    about a radian (all about the same way, so that every point is about 10 in front of
    every camera: the projection stays well conditioned), a focal length of about 400
    pixels, weights around 1."""
    nmp = [(4, 12, 30)] if sizes == "small" else [(49, 7776, 31_843), (21, 11_315, 36_455)]
    problems = []
    for n, m, p in nmp:
        rng = np.random.default_rng(SEED)
        facing = rng.normal(0, 0.8, 3)        # every camera turned about this way
        cams = np.concatenate([facing + rng.normal(0, 0.05, (n, 3)), rng.normal(0, 1, (n, 3)),
                               rng.normal(400, 20, (n, 1)), rng.normal(0, 5, (n, 2)),
                               rng.normal(0, 0.05, (n, 2))], axis=1)
        x = _rotate(np, -facing, rng.normal([0, 0, 10], [2, 2, 1], (m, 3)))
        w, features = rng.uniform(0.5, 1.5, p), rng.normal(0, 200, (p, 2))
        problems.append(Problem((cams, x, w), (features, np.arange(p) % n, np.arange(p) % m),
                                f"n={n} m={m:,} p={p:,}"))
    return problems


HAND_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19, 0)
"""GradBench's hand skeleton: the wrist, four bones down each of five fingers (thumb,
index, middle, ring, pinky), the forearm; each bone after its parent."""


def hand_pose_index() -> np.ndarray:
    """Where each bone's three Euler angles come from in theta (26): 1 + theta's index,
    0 for a fixed zero.  theta is the global rotation (3), translation (3), then per
    finger the flexion and abduction of its second bone and the flexion of its third
    and fourth (ADBench's order); the wrist, forearm and each finger's first bone stay
    unposed."""
    index = np.zeros((len(HAND_PARENTS), 3), np.int64)
    for finger in range(5):
        first, angle = 2 + 4 * finger, 6 + 4 * finger
        index[first, :2] = 1 + angle, 2 + angle
        index[first + 1, 0], index[first + 2, 0] = 3 + angle, 4 + angle
    return index


def _euler_rotations(xp, angles):
    """Rz Ry Rx per row (tx, tz, ty) of ``angles`` (ADBench's order), (bones, 3, 3)."""
    (cx, cz, cy), (sx, sz, sy) = ([f(angles[:, i]) for i in range(3)] for f in (xp.cos, xp.sin))
    zero = 0.0 * cx
    one = zero + 1.0

    def matrices(*entries):
        return xp.stack(entries, axis=-1).reshape(-1, 3, 3)
    rx = matrices(one, zero, zero, zero, cx, -sx, zero, sx, cx)
    ry = matrices(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rz = matrices(cz, -sz, zero, sz, cz, zero, zero, zero, one)
    return rz @ ry @ rx


def hand_vertices(xp, theta, relatives, inverse_absolutes, base_positions, weights, *,
                  pose_index, parents=HAND_PARENTS, mirrored=False):
    """ADBench's skinned hand, (vertices, 3): each bone's base transform relative to its
    parent posed by its Euler rotation, chained to absolute transforms, made relative to
    the rest pose by the inverse base absolutes; each vertex the weighted sum of its
    homogeneous rest position moved by every bone (summing the transforms first, which
    is the same sum: JAX's forward mode took 13× longer over the (bones, 3, vertices)
    products); then the global rotation and translation (ADBench's global scale is
    fixed at 1, so it is left out)."""
    angles = xp.concatenate([0.0 * theta[:1], theta])[pose_index]
    posed = xp.concatenate([relatives[:, :, :3] @ _euler_rotations(xp, angles),
                            relatives[:, :, 3:]], axis=2)
    absolutes = []
    for bone, parent in enumerate(parents):
        absolutes.append(posed[bone] if parent < 0 else absolutes[parent] @ posed[bone])
    transforms = (xp.stack(absolutes) @ inverse_absolutes)[:, :3, :].reshape(len(parents), 12)
    blended = (weights @ transforms).reshape(-1, 3, 4)          # each vertex's weighted sum
    moved = xp.sum(blended * base_positions[:, None, :], axis=2)
    if mirrored:
        moved = xp.concatenate([-moved[:, :1], moved[:, 1:]], axis=1)
    return _rotate(xp, theta[0:3], moved) + theta[3:6]


def ht_objective(xp, params, data, **static):
    """The points minus their model points, flattened (3 c): GradBench's simple variant
    (params = theta) matches each point to a vertex; its complicated one (params =
    theta, us) to the point u0 a + u1 b + (1 - u0 - u1) c of a triangle (a, b, c)."""
    (points, targets, *model) = data
    vertices = hand_vertices(xp, params[0], *model, **static)
    if len(params) == 1:
        return (points - vertices[targets]).reshape(-1)
    us = params[1]
    u, v = us[:, 0:1], us[:, 1:2]
    on_triangles = (u * vertices[targets[:, 0]] + v * vertices[targets[:, 1]]
                    + (1 - u - v) * vertices[targets[:, 2]])
    return (points - on_triangles).reshape(-1)


def ht_jacobian(system, objective):
    """The dense Jacobian with respect to theta (3 c, 26) by forward mode; for the
    complicated variant also GradBench's compressed us block (3 c, 2): point i's
    residuals depend on its own (u, v) alone, so the derivative along one shift ``s``
    added to every row of us gives each point's two columns at once (28 jvps, not
    26 + 2 c)."""
    def jacobian(params, *data):
        if len(params) == 1:
            return system.jacfwd(lambda p: objective(p, *data))(params)
        theta, us = params
        return system.jacfwd(lambda p: objective((p[0], us + p[1]), *data))(
            (theta, 0.0 * us[0]))
    return jacobian


def ht_along(problem, jacobian, direction):
    """The Jacobian times ``direction`` (a change of theta and, complicated, of us)."""
    change = jacobian[0] @ direction[0]
    if len(jacobian) == 2:
        shifts = jacobian[1].reshape(-1, 3, 2) * direction[1][:, None, :]
        change = change + shifts.sum(axis=2).reshape(-1)
    return change


def hand_model(rng, n_vertices: int, n_triangles: int = 1084):
    """A synthetic hand of GradBench's model's shape (its model files are not read
    here): random rigid base relatives (bones of about 0.03, as the files' hand), the
    inverse base absolutes that they imply (so the rest pose is the base positions),
    vertices near the bones, each weighted on one to four bones (weights summing to 1),
    random triangles."""
    bones = len(HAND_PARENTS)
    rotations = _rotate(np, rng.normal(0, 0.4, (bones, 1, 3)), np.eye(3)[None])
    relatives = np.zeros((bones, 4, 4))
    relatives[:, :3, :3] = rotations.transpose(0, 2, 1)
    relatives[:, :3, 3], relatives[:, 3, 3] = rng.normal(0, 0.03, (bones, 3)), 1.0
    absolutes = []
    for bone, parent in enumerate(HAND_PARENTS):
        absolutes.append(relatives[bone] if parent < 0 else absolutes[parent] @ relatives[bone])
    absolutes = np.stack(absolutes)
    weights = np.zeros((n_vertices, bones))
    for vertex in range(n_vertices):
        chosen = rng.choice(bones, size=rng.integers(1, 5), replace=False)
        weights[vertex, chosen] = rng.dirichlet(np.ones(len(chosen)))
    near = absolutes[np.argmax(weights, axis=1), :3, 3]
    base_positions = np.concatenate([near + rng.normal(0, 0.01, (n_vertices, 3)),
                                     np.ones((n_vertices, 1))], axis=1)
    triangles = np.stack([rng.choice(n_vertices, 3, replace=False) for _ in range(n_triangles)])
    return relatives, np.linalg.inv(absolutes), base_positions, weights, triangles


def ht_problems(sizes):
    """GradBench's ht sizes: c correspondences (its hand1, hand6 files: 100 and 1,600)
    on a model of its small model's 544 vertices, and its hand9 (12,800) on one of its
    big model's 10,000 (its default model), synthetic ones (see ``hand_model``); both
    variants (GradBench's default is the complicated one).  theta at the files'
    magnitudes (a rotation of about 2 radians, finger angles of about 1)."""
    vc = [(40, 10)] if sizes == "small" else [(544, 100), (544, 1600), (10_000, 12_800)]
    problems = []
    for n_vertices, c in vc:
        for complicated in (False, True):
            rng = np.random.default_rng(SEED)
            relatives, inverse_absolutes, base_positions, weights, triangles = hand_model(
                rng, n_vertices)
            theta = np.concatenate([rng.normal(0, 1.2, 3), rng.normal(0, 1, 3),
                                    rng.normal(0, 1, 20)])
            if complicated:
                targets = triangles[rng.integers(0, len(triangles), c)]
                params = (theta, rng.uniform(0, 0.5, (c, 2)))
            else:
                targets, params = rng.integers(0, n_vertices, c), (theta,)
            points = theta[3:6] + rng.normal(0, 0.05, (c, 3))
            problems.append(Problem(
                params, (points, targets, relatives, inverse_absolutes, base_positions, weights),
                f"{'complicated' if complicated else 'simple'} c={c:,} vertices={n_vertices:,}",
                {"pose_index": hand_pose_index()}))
    return problems


EVALS = [
    Eval("gmm", gmm_objective, gmm_problems),
    Eval("lse", lse_objective, lse_problems),
    Eval("llsq", llsq_objective, llsq_problems),
    Eval("kmeans", kmeans_objective, kmeans_problems, computes="dir",
         closed_form=kmeans_closed_form),
    Eval("ode", ode_objective, ode_problems),
    Eval("lstm", lstm_objective, lstm_problems),
    Eval("ba", ba_objective, ba_problems, computes="jacobian", jacobian=ba_jacobian,
         along=ba_along),
    Eval("ht", ht_objective, ht_problems, computes="jacobian", jacobian=ht_jacobian,
         along=ht_along),
]


# -- the systems ----------------------------------------------------------------------------

@dataclass
class Transforms:
    """What a system needs to run an eval: its namespace, transformations and array
    conversions."""
    name: str
    xp: object
    value_and_grad: Callable
    jvp: Callable
    jit: Callable
    to_system: Callable
    to_numpy: Callable
    jacfwd: Callable | None = None   # jacfwd(f) -> the Jacobian of f in its first argument
    vmap: Callable | None = None     # vmap(f) -> f mapped over axis 0 of every argument


def llgrad_transforms(fastmath: bool = False):
    """llgrad's transformations; ``fastmath``: compiled with ``fastmath=True``, which
    flushes subnormals to zero as XLA's CPU runtime does (and lets LLVM reassociate
    sums; kmeans's jvp has no such option and stays exact)."""
    import llgrad
    fast = functools.partial
    return Transforms("llgrad-fastmath" if fastmath else "llgrad",
                      Namespace(np, fori_loop=llgrad.fori_loop, scan=llgrad.scan),
                      fast(llgrad.value_and_grad, argnums=0, fastmath=fastmath), llgrad.jvp,
                      fast(llgrad.jit, fastmath=fastmath), lambda a: a, np.asarray,
                      fast(llgrad.jacfwd, fastmath=fastmath), fast(llgrad.vmap, fastmath=fastmath))


def jax_transforms():
    import jax.numpy as jnp

    from benchmarks.systems.jax_system import _jax
    jax = _jax()   # float64 on, synchronous dispatch
    return Transforms("jax", Namespace(jnp, fori_loop=jax.lax.fori_loop, scan=jax.lax.scan),
                      jax.value_and_grad, jax.jvp, jax.jit, jax.device_put, np.asarray,
                      jax.jacfwd, jax.vmap)


def torch_transforms():
    from benchmarks.systems.torch_systems import _torch, namespace
    torch = _torch()   # at the pinned thread count
    xp = Namespace(namespace(torch), fori_loop=python_fori_loop,
                   min=lambda a, axis=None: torch.amin(a) if axis is None else torch.amin(a, axis),
                   concatenate=lambda arrays, axis=0: torch.cat(list(arrays), dim=axis),
                   stack=lambda arrays, axis=0: torch.stack(list(arrays), dim=axis))
    xp.scan = lambda step, carry, xs: python_scan(xp, step, carry, xs)

    def value_and_grad(f):
        def both(*args):
            gradient, value = torch.func.grad_and_value(f)(*args)
            return value, gradient
        return both

    return Transforms("torch", xp, value_and_grad, torch.func.jvp, lambda f: f,
                      torch.from_numpy, lambda t: t.detach().numpy(),
                      torch.func.jacfwd, torch.func.vmap)


SYSTEMS = {"llgrad": (llgrad_transforms, None),
           "llgrad-fastmath": (functools.partial(llgrad_transforms, fastmath=True), None),
           "jax": (jax_transforms, "jax"), "torch": (torch_transforms, "torch")}


def _convert(tree, convert):
    if isinstance(tree, (tuple, list)):
        return tuple(_convert(t, convert) for t in tree)
    return convert(tree)


def build_call(system: Transforms, ev: Eval, problem: Problem):
    """A no-argument call running the eval once on ``system``; it returns
    {quantity: tuple of numpy arrays} (a quantity per compared result)."""
    static = problem.static

    def objective(params, *data):
        return ev.objective(system.xp, params, data, **static)

    params = _convert(problem.params, system.to_system)
    data = _convert(problem.data, system.to_system)
    if ev.computes == "jacobian":
        run = system.jit(ev.jacobian(system, objective))

        def call():
            return {"jacobian": _convert(run(params, *data), system.to_numpy)}
        return call
    if ev.computes == "gradient":
        run = system.jit(system.value_and_grad(objective))

        def call():
            value, gradient = run(params, *data)
            return {"value": (system.to_numpy(value),),
                    "gradient": _convert(gradient, system.to_numpy)}
        return call

    ones = _convert(tuple(np.ones_like(p) for p in problem.params), system.to_system)

    def newton(params, *data):
        (value, gradient), (_, curvature) = system.jvp(
            lambda p: system.value_and_grad(objective)(p, *data), (params,), (ones,))
        return value, gradient, curvature, tuple(g / h for g, h in zip(gradient, curvature))

    run = system.jit(newton)

    def call():
        value, gradient, curvature, direction = run(params, *data)
        return {"value": (system.to_numpy(value),), "gradient": _convert(gradient, system.to_numpy),
                "hessian diagonal": _convert(curvature, system.to_numpy),
                "dir": _convert(direction, system.to_numpy)}
    return call


# -- the oracle -----------------------------------------------------------------------------

def relative_difference(a: tuple, b: tuple) -> float:
    """max |a - b| / max(|a|, |b|) over the arrays of one quantity; inf on a shape
    mismatch or a NaN; 0 where both are exactly zero (ode's underflowing y_n)."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return math.inf
        difference = float(np.max(np.abs(x - y), initial=0.0))
        scale = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(y), initial=0.0)))
        if not math.isfinite(difference):
            return math.inf
        if difference:
            worst = max(worst, difference / scale)
    return worst


def directional_derivative(ev: Eval, problem: Problem, seed: int = SEED + 1):
    """(direction, central difference of the float64 numpy objective along it: a
    number, or an array for an eval whose objective is residuals)."""
    rng = np.random.default_rng(seed)
    direction = tuple(rng.normal(size=np.shape(p)) for p in problem.params)

    def along(t):
        params = tuple(p + t * v for p, v in zip(problem.params, direction))
        return np.asarray(ev.objective(NUMPY, params, problem.data, **problem.static),
                          np.float64)

    return direction, (along(FD_STEP) - along(-FD_STEP)) / (2 * FD_STEP)


def check(results: dict, direction: tuple, numeric, closed_form: dict | None = None,
          along: Callable | None = None) -> dict:
    """{system: {"peers": worst relative difference from any other system over every
    quantity, "fd": relative error of its gradient along ``direction`` (or, given
    ``along(jacobian, direction)``, its Jacobian times ``direction``) against the central
    difference ``numeric``, "closed form": (kmeans)}, "passed": bool}."""
    report = {}
    for name, result in results.items():
        peers = max((relative_difference(result[q], other[q])
                     for other_name, other in results.items() if other_name != name
                     for q in result), default=0.0)
        if along:
            analytic = along(result["jacobian"], direction)
        else:
            analytic = float(sum(np.sum(g * v) for g, v in zip(result["gradient"], direction)))
        fd = relative_difference((analytic,), (numeric,))
        entry = {"peers": peers, "fd": fd}
        passed = peers <= PEER_TOLERANCE and fd <= FD_TOLERANCE
        if closed_form:
            entry["closed form"] = max(relative_difference(result[q], closed_form[q])
                                       for q in closed_form)
            passed = passed and entry["closed form"] <= PEER_TOLERANCE
        entry["passed"] = passed
        report[name] = entry
    return report


# -- timing and the report ------------------------------------------------------------------

def time_call(call, seconds: float, min_calls: int = 3, max_calls: int = 200):
    """(first call seconds, its result, median of the calls after it)."""
    t0 = time.perf_counter()
    result = call()
    first = time.perf_counter() - t0
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return first, result, statistics.median(times)


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(ev: Eval, problem: Problem, timings: dict, checks: dict, failures: dict) -> list[str]:
    baseline = timings.get("llgrad", (None, None))[1]
    quantity = {"dir": "Newton direction (J, H 1)", "jacobian": "Jacobian"}.get(
        ev.computes, "value and gradient")
    lines = [f"### {ev.key} {problem.size}: {quantity}", "",
             ("| system | first call (compile) | median | ratio to llgrad | max rel. error "
              "(peers / central difference) |"), "|---|---|---|---|---|"]
    for name, (first, median) in timings.items():
        ratio = f"{median / baseline:.2f}×" if baseline else "-"
        c = checks[name]
        errors = f"{c['peers']:.1e} / {c['fd']:.1e}" + (
            f" / closed form {c['closed form']:.1e}" if "closed form" in c else "")
        lines.append(f"| {name} | {_duration(first)} | {_duration(median)} | {ratio} | "
                     f"{errors}{'' if c['passed'] else ' **MISMATCH**'} |")
    for name, why in failures.items():
        lines.append(f"| {name} | failed: {why} | | | |")
    return lines + [""]


def run_eval(ev: Eval, systems: dict, sizes: str, seconds: float, log=print) -> bool:
    """Every problem of ``ev`` on every system: tables printed; True when all passed."""
    ok = True
    for problem in ev.problems(sizes):
        direction, numeric = directional_derivative(ev, problem)
        closed = ev.closed_form(problem) if ev.closed_form else None
        results, timings, failures = {}, {}, {}
        for name, transforms in systems.items():
            try:
                first, result, median = time_call(build_call(transforms, ev, problem), seconds)
            except Exception as error:  # a system failing is a finding: report it
                failures[name] = _failure(error)
                continue
            results[name], timings[name] = result, (first, median)
        along = functools.partial(ev.along, problem) if ev.along else None
        checks = check(results, direction, numeric, closed, along)
        log("\n".join(table(ev, problem, timings, checks, failures)))
        if results and not any(np.any(g) for r in results.values() for g in r[ev.derivative]):
            log(f"(every system's {ev.derivative} is exactly 0 here: the comparison is empty)\n")
        ok = ok and not failures and all(c["passed"] for c in checks.values())
    return ok


def _failure(error: BaseException) -> str:
    import traceback
    where = traceback.extract_tb(error.__traceback__)[-1]
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first_line} ({Path(where.filename).name}:{where.lineno})"


def load_systems(wanted: list[str], log=print) -> dict:
    import importlib.util
    systems = {}
    for name in wanted:
        make, module = SYSTEMS[name]
        if module and importlib.util.find_spec(module) is None:
            log(f"- {name}: skipped, not installed (pip install {module})")
            continue
        systems[name] = make()
    return systems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=("small", "default"), default="default",
                        help="small: seconds, for tests; default: GradBench's main sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evals", default=",".join(e.key for e in EVALS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per system and size (default 1, small 0.1)")
    args = parser.parse_args(argv)
    wanted_evals = [e for e in EVALS if e.key in args.evals.split(",")]
    wanted_systems = [s for s in args.systems.split(",") if s in SYSTEMS]
    if not wanted_evals or not wanted_systems:
        raise SystemExit(f"nothing to run: --evals {args.evals!r} --systems {args.systems!r}")
    seconds = args.seconds if args.seconds is not None else (0.1 if args.sizes == "small" else 1.0)
    from benchmarks.report import cpu_model, thread_counts
    from benchmarks.run import pinned_threads
    with pinned_threads(args.threads) as pinned_by:
        print(f"# GradBench evals, float64 ({args.sizes} sizes)\n")
        print(f"- CPU: {cpu_model()}")
        systems = load_systems(wanted_systems, log=print)
        print(f"- threads: {args.threads} ({thread_counts(pinned_by)})")
        print("- first call: trace, differentiate and compile, then run; llgrad's on-disk "
              "cache as the machine has it (LLGRAD_NO_CACHE=1: from scratch)\n")
        ok = True
        for ev in wanted_evals:
            ok = run_eval(ev, systems, args.sizes, seconds) and ok
    print("all checks passed" if ok else "MISMATCH or FAILURE: see the tables above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
