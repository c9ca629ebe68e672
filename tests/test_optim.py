"""llgrad.optim: each optimizer and schedule against an independent numpy reference
(written out here, step by step), against torch.optim when torch is installed, and
traced under llgrad.jit against its own eager numpy run."""
import math

import numpy as np
import pytest

import llgrad
from llgrad import optim
from llgrad.compiler.frontend import pytree

STEPS = 10


BACKENDS = ["interpret", "native"]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(3, 4)).astype(dtype), "b": rng.normal(size=4).astype(dtype)}


def make_grads(dtype=np.float64, seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [{"w": rng.normal(size=(3, 4)).astype(dtype), "b": rng.normal(size=4).astype(dtype)}
            for _ in range(steps)]


def assert_trees_close(actual, expected, rtol=1e-12):
    """Same structure; every leaf within ``rtol`` of the expected leaf's largest entry."""
    a_leaves, a_def = pytree.flatten(actual)
    e_leaves, e_def = pytree.flatten(expected)
    assert a_def == e_def
    for a, e in zip(a_leaves, e_leaves):
        assert np.shape(a) == np.shape(e)
        scale = max(np.max(np.abs(e)), np.finfo(np.float64).tiny)
        assert np.max(np.abs(np.asarray(a) - e)) <= rtol * scale, (a, e)


def run(opt, params, grads):
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(g, state, params)
    return params, state


# ----------------------------------------------------------------------------------
# Reference implementations: the update rules as written in PyTorch's documentation,
# one plain loop each.  ``lr_at(k)`` is the learning rate of the k-th update (k from 0).

def constant_lr(lr):
    return lambda k: lr


def ref_sgd(params, grads, lr_at):
    p = {k: v.copy() for k, v in params.items()}
    for step, g in enumerate(grads):
        for k in p:
            p[k] = p[k] - lr_at(step) * g[k]
    return p


def ref_momentum(params, grads, lr_at, beta, nesterov):
    p = {k: v.copy() for k, v in params.items()}
    buf = {k: None for k in p}
    for step, g in enumerate(grads):
        for k in p:
            buf[k] = g[k].copy() if buf[k] is None else beta * buf[k] + g[k]
            d = g[k] + beta * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr_at(step) * d
    return p


def ref_rmsprop(params, grads, lr_at, alpha, eps):
    p = {k: v.copy() for k, v in params.items()}
    sq = {k: np.zeros_like(v) for k, v in p.items()}
    for step, g in enumerate(grads):
        for k in p:
            sq[k] = alpha * sq[k] + (1 - alpha) * g[k] * g[k]
            p[k] = p[k] - lr_at(step) * g[k] / (np.sqrt(sq[k]) + eps)
    return p


def ref_adam(params, grads, lr_at, b1, b2, eps, weight_decay=0.0):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step, g in enumerate(grads):
        t = step + 1
        lr = lr_at(step)
        for k in p:
            p[k] = p[k] * (1 - lr * weight_decay)
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            m_hat = m[k] / (1 - b1 ** t)
            v_hat = v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_clipped(grads, max_norm):
    out = []
    for g in grads:
        norm = math.sqrt(sum(float(np.sum(x ** 2)) for x in g.values()))
        coef = min(1.0, max_norm / (norm + 1e-6))
        out.append({k: x * coef for k, x in g.items()})
    return out


def ref_step_decay(lr, step_size, gamma):
    return lambda k: lr * gamma ** (k // step_size)


def ref_piecewise(boundaries, values):
    return lambda k: values[sum(1 for b in boundaries if k >= b)]


def ref_cosine(lr, total, final):
    return lambda k: final + 0.5 * (lr - final) * (1 + math.cos(math.pi * min(k, total) / total))


CLIP_NORM = 3.6  # the random gradients' norms are 2.4 to 4.9: some steps clip, some don't

# name -> (optimizer, reference: (params, grads) -> params after len(grads) updates)
CASES = {
    "sgd": (optim.sgd(0.1), lambda p, gs: ref_sgd(p, gs, constant_lr(0.1))),
    "momentum": (optim.momentum(0.1, beta=0.8),
                 lambda p, gs: ref_momentum(p, gs, constant_lr(0.1), 0.8, nesterov=False)),
    "nesterov": (optim.momentum(0.1, beta=0.8, nesterov=True),
                 lambda p, gs: ref_momentum(p, gs, constant_lr(0.1), 0.8, nesterov=True)),
    "rmsprop": (optim.rmsprop(0.01, decay=0.9, eps=1e-6),
                lambda p, gs: ref_rmsprop(p, gs, constant_lr(0.01), 0.9, 1e-6)),
    "adam": (optim.adam(0.05, b1=0.8, b2=0.95, eps=1e-7),
             lambda p, gs: ref_adam(p, gs, constant_lr(0.05), 0.8, 0.95, 1e-7)),
    "adamw": (optim.adamw(0.05, b1=0.8, b2=0.95, eps=1e-7, weight_decay=0.3),
              lambda p, gs: ref_adam(p, gs, constant_lr(0.05), 0.8, 0.95, 1e-7, 0.3)),
    "clip_by_global_norm": (
        optim.clip_by_global_norm(optim.momentum(0.1), CLIP_NORM),
        lambda p, gs: ref_momentum(p, ref_clipped(gs, CLIP_NORM), constant_lr(0.1), 0.9, False)),
    "constant_schedule": (optim.sgd(optim.constant(0.1)),
                          lambda p, gs: ref_sgd(p, gs, constant_lr(0.1))),
    "piecewise_schedule": (
        optim.momentum(optim.piecewise([3, 7], [0.1, 0.05, 0.01])),
        lambda p, gs: ref_momentum(p, gs, ref_piecewise([3, 7], [0.1, 0.05, 0.01]), 0.9, False)),
    "step_decay_schedule": (
        optim.adam(optim.step_decay(0.1, 3, 0.5, total_steps=STEPS)),
        lambda p, gs: ref_adam(p, gs, ref_step_decay(0.1, 3, 0.5), 0.9, 0.999, 1e-8)),
    "cosine_schedule": (  # total_steps < STEPS: the last updates hold final_lr
        optim.adamw(optim.cosine(0.1, 7, final_lr=0.01)),
        lambda p, gs: ref_adam(p, gs, ref_cosine(0.1, 7, 0.01), 0.9, 0.999, 1e-8, 1e-2)),
}


def test_clip_cases_cover_clipped_and_unclipped_steps():
    norms = [math.sqrt(sum(np.sum(x ** 2) for x in g.values())) for g in make_grads()]
    assert min(norms) < CLIP_NORM < max(norms)


@pytest.mark.parametrize("name", CASES)
def test_ten_steps_match_numpy_reference(name):
    opt, reference = CASES[name]
    params, grads = make_params(), make_grads()
    new_params, state = run(opt, params, grads)
    assert_trees_close(new_params, reference(params, grads))
    assert state["step"] == STEPS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_jit_update_matches_eager_numpy(name, backend):
    opt, _ = CASES[name]
    params, grads = make_params(), make_grads()
    eager = run(opt, params, grads)
    update = llgrad.jit(opt.update, backend=backend)
    traced = (params, opt.init(params))
    for g in grads:
        traced = update(g, traced[1], traced[0])
    assert_trees_close(traced, eager)


@pytest.mark.parametrize("backend", [None, *BACKENDS])
@pytest.mark.parametrize("name", CASES)
def test_float32_params_stay_float32(name, backend):
    opt, _ = CASES[name]
    params, grads = make_params(np.float32), make_grads(np.float32, steps=3)
    update = opt.update if backend is None else llgrad.jit(opt.update, backend=backend)
    state = opt.init(params)
    for g in grads:
        params, state = update(g, state, params)
    for leaf in pytree.flatten((params, state))[0]:
        assert leaf.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_state_is_zeros_of_params_dtype_with_a_0d_step(dtype):
    params = make_params(dtype)
    state = optim.adam(1e-3).init(params)
    assert sorted(state) == ["m", "step", "v"]
    assert isinstance(state["step"], np.ndarray) and state["step"].shape == ()
    assert state["step"].dtype == dtype and state["step"] == 0
    for slot in ("m", "v"):
        for key, p in params.items():
            assert state[slot][key].dtype == dtype
            assert np.array_equal(state[slot][key], np.zeros_like(p))


def test_update_does_not_mutate_its_arguments():
    opt = optim.adamw(0.1)
    params, (grads, *_) = make_params(), make_grads()
    state = run(opt, params, make_grads(steps=2))[1]
    before = [np.copy(x) for x in pytree.flatten((grads, state, params))[0]]
    opt.update(grads, state, params)
    after = pytree.flatten((grads, state, params))[0]
    assert all(np.array_equal(b, a) for b, a in zip(before, after))


def test_nested_pytree_updates_each_leaf_as_a_flat_dict_would():
    rng = np.random.default_rng(5)
    shapes = [(2, 3), (3,), (4,), ()]
    leaves = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(3)]
    nest = lambda xs: {"layers": [{"w": xs[0], "b": xs[1]}], "head": (xs[2], xs[3])}
    flat = lambda xs: dict(enumerate(xs))
    opt = optim.adam(0.1)
    nested_result = run(opt, nest(leaves), [nest(g) for g in grads])[0]
    flat_result = run(opt, flat(leaves), [flat(g) for g in grads])[0]
    assert_trees_close(nested_result, nest([flat_result[i] for i in range(4)]), rtol=0)


def test_grads_of_another_structure_are_rejected():
    opt = optim.sgd(0.1)
    params = make_params()
    with pytest.raises(ValueError, match="structure"):
        opt.update({"w": params["w"]}, opt.init(params), params)


@pytest.mark.parametrize("schedule, reference", [
    (optim.constant(0.3), constant_lr(0.3)),
    (optim.piecewise([2, 5, 9], [1.0, 0.5, 0.25, 0.1]),
     ref_piecewise([2, 5, 9], [1.0, 0.5, 0.25, 0.1])),
    (optim.step_decay(0.2, 4, 0.3, total_steps=20), ref_step_decay(0.2, 4, 0.3)),
    (optim.cosine(0.2, 12, final_lr=0.02), ref_cosine(0.2, 12, 0.02)),
], ids=["constant", "piecewise", "step_decay", "cosine"])
def test_schedule_values_match_their_formula(schedule, reference):
    for k in range(20):
        assert math.isclose(schedule(np.array(float(k))), reference(k), rel_tol=1e-15)


def test_step_decay_holds_its_last_value_after_total_steps():
    schedule = optim.step_decay(1.0, 3, 0.5, total_steps=7)  # decays at steps 3 and 6
    assert [float(schedule(np.array(float(k)))) for k in (5, 6, 9, 100)] == [0.5, 0.25, 0.25, 0.25]


def test_piecewise_needs_one_more_value_than_boundaries():
    with pytest.raises(ValueError, match="one more value"):
        optim.piecewise([1, 2], [0.1, 0.2])


def test_reprs_show_the_hyperparameters():
    assert repr(optim.adam(1e-3)) == "Adam(lr=0.001, b1=0.9, b2=0.999, eps=1e-08)"
    assert repr(optim.clip_by_global_norm(optim.sgd(optim.cosine(0.1, 100)), 1.0)) == (
        "ClipByGlobalNorm(inner=SGD(lr=Cosine(lr=0.1, total_steps=100, final_lr=0.0)), "
        "max_norm=1.0, eps=1e-06)")


# ----------------------------------------------------------------------------------
# torch.optim as an oracle (torch's default hyperparameters, float64)

TORCH_CASES = {
    "sgd": (optim.sgd(0.1), "SGD", dict(lr=0.1)),
    "momentum": (optim.momentum(0.1), "SGD", dict(lr=0.1, momentum=0.9)),
    "nesterov": (optim.momentum(0.1, nesterov=True), "SGD",
                 dict(lr=0.1, momentum=0.9, nesterov=True)),
    "rmsprop": (optim.rmsprop(0.01), "RMSprop", dict(lr=0.01)),
    "adam": (optim.adam(0.05), "Adam", dict(lr=0.05)),
    "adamw": (optim.adamw(0.05), "AdamW", dict(lr=0.05)),
}


@pytest.mark.parametrize("name", TORCH_CASES)
def test_ten_steps_match_torch_optim(name):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional oracle)")
    opt, torch_class, kwargs = TORCH_CASES[name]
    params, grads = make_params(), make_grads()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_opt = getattr(torch.optim, torch_class)(list(tensors.values()), **kwargs)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        torch_opt.step()
    expected = {k: t.detach().numpy() for k, t in tensors.items()}
    assert_trees_close(run(opt, params, grads)[0], expected)


def test_clipping_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch", reason="torch is not installed (optional oracle)")
    params, grads = make_params(), make_grads()
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_opt = torch.optim.SGD(list(tensors.values()), lr=0.1)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), CLIP_NORM)
        torch_opt.step()
    expected = {k: t.detach().numpy() for k, t in tensors.items()}
    opt = optim.clip_by_global_norm(optim.sgd(0.1), CLIP_NORM)
    assert_trees_close(run(opt, params, grads)[0], expected)


@pytest.mark.parametrize("schedule, torch_scheduler, kwargs", [
    (optim.step_decay(0.1, 3, 0.5, total_steps=STEPS), "StepLR", dict(step_size=3, gamma=0.5)),
    (optim.cosine(0.1, STEPS, final_lr=0.01), "CosineAnnealingLR", dict(T_max=STEPS, eta_min=0.01)),
], ids=["step_decay", "cosine"])
def test_schedules_match_torch_lr_schedulers(schedule, torch_scheduler, kwargs):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional oracle)")
    torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = getattr(torch.optim.lr_scheduler, torch_scheduler)(torch_opt, **kwargs)
    for k in range(STEPS):
        assert math.isclose(schedule(np.array(float(k))), scheduler.get_last_lr()[0],
                            rel_tol=1e-12)
        torch_opt.step()
        scheduler.step()
