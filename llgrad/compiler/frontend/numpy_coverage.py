"""What the front end supports of numpy's API, read from the numpy table: the page
docs/numpy-support.md is this module's output (``python -m
llgrad.compiler.frontend.numpy_coverage > docs/numpy-support.md``), and
tests/test_numpy_coverage.py checks that the page's lists of supported names are the
table's, so the page cannot drift from the code.

numpy's callables (ufuncs and functions of ``np``, ``np.linalg``, and the methods of
``np.ndarray``) fall into four groups: those the table answers on traced arrays,
those it refuses with a message of its own (``numpy_ops.REFUSED``), those that make
constants (no array argument, so a traced value never reaches them), and the rest,
which numpy's dispatch brings to a "not supported by llgrad" error, grouped here by
the reason they are out of reach.
"""
from __future__ import annotations

import types

import numpy as np

from llgrad.compiler.frontend import numpy_ops
from llgrad.compiler.frontend.trace import Tracer

#: numpy functions that take shapes and Python numbers, not arrays: inside a traced
#: function they make constants, as in plain numpy
CONSTANT_MAKERS = {"arange", "empty", "eye", "full", "identity", "indices", "ones", "tri",
                   "zeros", "diag_indices", "tril_indices", "triu_indices", "mask_indices",
                   "fromfunction", "fromiter", "frombuffer", "fromstring", "bartlett",
                   "blackman", "hamming", "hanning", "kaiser", "geomspace", "logspace",
                   "array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray",
                   "empty_like", "copy", "require", "asarray_chkfinite", "asmatrix", "bmat"}

#: why the other callables are out of reach, each with the names it covers (a name not
#: listed falls under "not yet")
REASONS = {
    "the result's shape depends on the values": {
        "argwhere", "nonzero", "flatnonzero", "extract", "compress", "trim_zeros",
        "unique_all", "unique_counts", "unique_inverse", "unique_values",
        "setdiff1d", "union1d", "intersect1d", "setxor1d", "bincount", "histogram",
        "histogram2d", "histogramdd", "histogram_bin_edges", "roots", "polyfit",
        "real_if_close", "ix_", "unravel_index", "ravel_multi_index"},
    "in-place writes (a traced array is immutable: use llgrad.numpy.at(x)[i].set(v))": {
        "put", "place", "putmask", "copyto", "fill_diagonal"},
    "complex numbers, strings, dates, bits, files and printing (not numbers llgrad traces)": {
        "iscomplex", "iscomplexobj", "isreal", "isrealobj", "sort_complex", "isnat",
        "busday_count", "busday_offset", "is_busday", "datetime_as_string", "datetime_data",
        "packbits", "unpackbits", "bitwise_count", "bitwise_left_shift",
        "bitwise_right_shift", "left_shift", "right_shift", "gcd", "lcm", "array2string",
        "array_repr", "array_str", "format_float_positional", "format_float_scientific",
        "base_repr", "binary_repr", "load", "loadtxt", "save", "savetxt", "savez",
        "savez_compressed", "genfromtxt", "fromfile", "fromregex", "from_dlpack",
        "frexp", "modf", "ldexp", "spacing", "nextafter", "divmod"},
    "questions about types, memory and settings (ask them of x.dtype and x.shape)": {
        "can_cast", "common_type", "isdtype", "issubdtype", "min_scalar_type",
        "mintypecode", "promote_types", "result_type", "typename", "may_share_memory",
        "shares_memory", "isfortran", "isscalar", "iterable", "get_include",
        "get_printoptions", "set_printoptions", "printoptions", "getbufsize",
        "setbufsize", "geterr", "seterr", "geterrcall", "seterrcall", "show_config",
        "show_runtime", "info", "nested_iters", "frompyfunc", "einsum_path",
        "broadcast_shapes"},
}

#: whole namespaces llgrad does not trace, and why
NAMESPACES = {
    "np.random": "random numbers: draw them outside the traced function and pass them in",
    "np.fft": "complex results",
    "np.polynomial": "polynomial classes (np.polyval and friends are not traced either)",
    "np.ma": "masked arrays",
    "np.char, np.strings, np.rec": "strings and records",
}


def _is_callable_api(value) -> bool:
    return isinstance(value, (np.ufunc, types.FunctionType, types.BuiltinFunctionType)) or \
        type(value).__name__ == "_ArrayFunctionDispatcher"


def _public(module) -> dict:
    return {n: getattr(module, n) for n in dir(module)
            if not n.startswith("_") and _is_callable_api(getattr(module, n))}


def coverage() -> dict:
    """For ``np``, ``np.linalg`` and ``np.ndarray``: the sorted names supported on
    traced arrays, refused with a message of their own, constant makers, and the rest
    by reason (``REASONS``, then "not yet")."""
    numpy_ops.attach(Tracer)   # the table as every front-end module has filled it
    traced = {**numpy_ops.UFUNCS, **numpy_ops.FUNCTIONS}
    out = {}
    for namespace, module in (("np", np), ("np.linalg", np.linalg)):
        names = _public(module)
        refused = {n for n, f in names.items() if f in traced and n in numpy_ops.REFUSED}
        supported = {n for n, f in names.items() if f in traced} - refused
        makers = {n for n in names if n in CONSTANT_MAKERS} - supported
        rest = set(names) - supported - refused - makers
        groups = {why: sorted(rest & members) for why, members in REASONS.items()}
        groups["not yet supported"] = sorted(rest - set().union(*REASONS.values()))
        out[namespace] = {"supported": sorted(supported), "refused": sorted(refused),
                          "constants": sorted(makers), "groups": groups}
    methods = {n for n in dir(np.ndarray) if not n.startswith("_")}
    on_tracer = {n for n in methods if hasattr(Tracer, n)}
    in_place = {m for name in numpy_ops.REFUSED for m in numpy_ops.TABLE[name].methods}
    operators = sorted(n for n in numpy_ops.TRACER_METHODS if n.startswith("__")
                       and n not in ("__array_ufunc__", "__array_function__"))
    out["np.ndarray"] = {"supported": sorted(on_tracer - in_place), "refused": sorted(in_place),
                         "constants": [], "operators": operators,
                         "groups": {"not yet supported": sorted(methods - on_tracer)}}
    out["llgrad.numpy"] = {"extras": sorted(
        n for n in numpy_ops.EXPORTS if not hasattr(np, n))}
    out["scipy"] = {"supported": sorted(n for n in numpy_ops.TABLE if n.startswith("scipy."))}
    return out


def _names(names) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "(none)"


_INTRO = """\
# numpy support

What a function traced by llgrad may call, against numpy's own API (numpy {version}):
generated from the front end's numpy table by `python -m
llgrad.compiler.frontend.numpy_coverage > docs/numpy-support.md`;
`tests/test_numpy_coverage.py` checks that the supported lists below are the table's.

Supported means: called on traced arrays (directly, through numpy's dispatch, or as
an array method or operator) with numpy's semantics, broadcasting, dtypes and keyword
arguments, and differentiable where numpy's result is a float function of the
inputs (see README and the module docstrings for the documented differences, such as
the stable order of `sort`/`argsort`). Everything else raises a clear
`UnsupportedError` naming the function; the "refused" lists have messages of their
own that say what to use instead.

| namespace | numpy's callables | supported | refused with advice | make constants | out of reach |
|---|---|---|---|---|---|
"""


def render() -> str:
    cov = coverage()
    lines = [_INTRO.format(version=np.__version__)]
    for ns in ("np", "np.linalg", "np.ndarray"):
        c = cov[ns]
        rest = sum(len(v) for v in c["groups"].values())
        total = len(c["supported"]) + len(c["refused"]) + len(c["constants"]) + rest
        lines.append(f"| `{ns}` | {total} | {len(c['supported'])} | {len(c['refused'])} | "
                     f"{len(c['constants'])} | {rest} |\n")
    for ns, module in NAMESPACES.items():
        lines.append(f"| `{ns}` | all | 0 | | | all: {module} |\n")
    for ns, title in (("np", "`np.*`"), ("np.linalg", "`np.linalg.*`"),
                      ("np.ndarray", "array methods and attributes")):
        c = cov[ns]
        lines.append(f"\n## {title}\n\n<!-- supported {ns} -->\n**Supported:** "
                     f"{_names(c['supported'])}\n<!-- end -->\n")
        if ns == "np.ndarray":
            lines.append(f"\n**Operators:** {_names(c['operators'])}\n")
        if c["refused"]:
            lines.append(f"\n**Refused with advice:** {_names(c['refused'])}\n")
        if c["constants"]:
            lines.append(f"\n**Make constants** (their arguments are shapes and numbers): "
                         f"{_names(c['constants'])}\n")
        for why, names in c["groups"].items():
            if names:
                lines.append(f"\n**Out of reach, {why}:** {_names(names)}\n")
    lines.append(f"\n## llgrad.numpy's own\n\nFunctions numpy lacks, in `llgrad.numpy` "
                 f"(which also exports every supported name above): "
                 f"{_names(cov['llgrad.numpy']['extras'])}\n")
    lines.append(f"\n## scipy\n\nscipy's functions that models use, in `llgrad.scipy` (scipy's own "
                 f"ufuncs on traced arrays come here too):\n\n<!-- supported scipy -->\n"
                 f"**Supported:** {_names(cov['scipy']['supported'])}\n<!-- end -->\n")
    lines.append("\n## Whole namespaces out of reach\n\n")
    for ns, why in NAMESPACES.items():
        lines.append(f"- `{ns}`: {why}\n")
    return "".join(lines)


if __name__ == "__main__":
    print(render(), end="")
