"""tanh's native code is within a few ulp of numpy's over every kind of input.

float64 tanh lowers to an expm1 form when libmvec is loaded (llgrad/compiler/codegen/
math.py); this sweep covers both that form and plain tanh (libmvec off), vector lanes
and scalar tail elements (the sweep's length is odd), and the inputs where a rewrite
of tanh goes wrong: ±0, tiny and subnormal numbers (cancellation), the middle range,
large ones (overflow of exp), ±inf and NaN.
"""
from __future__ import annotations

import numpy as np
import pytest

from llgrad.compiler.pipeline import compile_graph
from llgrad.ir import Builder, Graph, TensorType

#: the bound tests/test_codegen.py holds every transcendental op to (8 eps relative),
#: in ulp of the result
MAX_ULP = 8


def _sweep(dtype):
    info = np.finfo(dtype)
    tiny, sub = float(info.tiny), float(info.smallest_subnormal)
    magnitudes = np.concatenate([
        np.geomspace(sub, tiny, 200),                 # subnormal
        np.geomspace(tiny, 1e-3, 2000),               # tiny: tanh(x) ~ x
        np.linspace(1e-3, 30.0, 40001),               # the whole curved range
        np.geomspace(30.0, float(info.max) / 4, 500),  # saturated
        [0.0, sub, tiny, 0.5, 0.6, 0.625, 1.0, 9.0, 9.01, 19.0, 22.0, 22.1, 354.0, 356.0,
         710.0, 711.0, float(info.max), np.inf],
    ]).astype(dtype)
    x = np.concatenate([magnitudes, -magnitudes, [np.nan]]).astype(dtype)
    return x if len(x) % 2 else x[:-1]   # odd, so a scalar tail runs after vector lanes


def _ulps(got, want):
    """Distance in units of the last place of the numpy result (exact where both agree)."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    spacing = np.spacing(np.abs(want).astype(want.dtype))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(got.astype(np.float64) - want) / spacing)


@pytest.fixture(scope="module", params=[(d, m) for d in ("float64", "float32")
                                        for m in (True, False)],
                ids=lambda p: f"{p[0]}-{'libmvec' if p[1] else 'scalar'}")
def tanh_native(request):
    dtype, libmvec = request.param
    x = _sweep(dtype)
    b = Builder()
    p = b.parameter(index=0, type=TensorType(x.shape, dtype), name="x")
    (got,) = compile_graph(Graph([p], [b.emit("tanh", p)], name="tanh"), libmvec=libmvec)(x)
    return x, got


def test_tanh_is_within_the_ulp_bound_of_numpy(tanh_native):
    x, got = tanh_native
    ulps = _ulps(got, np.tanh(x))
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= MAX_ULP, (x[worst], got[worst], np.tanh(x[worst]))


def test_tanh_keeps_signed_zero_nan_and_saturates(tanh_native):
    x, got = tanh_native
    want = np.tanh(x)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.array_equal(np.isnan(got), np.isnan(x))
    big = np.abs(x) >= 30
    assert np.array_equal(got[big], np.sign(x[big]))
    small = (np.abs(x) < np.finfo(x.dtype).tiny) & (x != 0)   # subnormal: tanh(x) == x
    assert np.array_equal(got[small], x[small])
