"""llgrad.export, export_train and load_library: the library a C program links is the
Python function, bit for bit, without Python.

Oracles: the same function called in Python (``llgrad.value_and_grad(loss)(...)``,
``llgrad.hessian(f)(w)``, ``llgrad.train(..., grad_norms=False)``), the generated header
read as a C compiler reads it, and a C program of our own (tests/c/harness.c) that
reads its inputs from files the test writes and writes its results to files the test
reads back.  The harness also runs the error cases, two threads at once, and the
workspace under AddressSanitizer, valgrind and a guard page.
"""
import functools
import operator
import os
import re
import shutil
import subprocess
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_identical
from models import mlp_loss

import llgrad
from llgrad.runtime import aot

HARNESS = Path(__file__).parent / "c" / "harness.c"
CC = os.environ.get("CC", "cc")
needs_cc = pytest.mark.skipif(   # the examples say "cc" whatever $CC is
    any(shutil.which(tool) is None for tool in (CC, "cc", "ar")),
    reason=f"llgrad.export links with a C compiler ({CC!r}) and ar, and the tests build C "
           f"programs with it and cc: not found (Debian: apt-get install gcc libc6-dev)")
runs_avx2 = pytest.mark.skipif(not aot.features("host")["avx2"],
                               reason="runs code compiled for x86-64-v3: this CPU has no AVX2")

# the README's MLP ("Gradients of plain numpy code")
_rng = np.random.default_rng(0)
PARAMS = {"w1": _rng.normal(size=(64, 128)) * 0.1, "b1": np.zeros(128),
          "w2": _rng.normal(size=(128, 10)) * 0.1, "b2": np.zeros(10)}
X, Y = _rng.normal(size=(256, 64)), np.eye(10)[_rng.integers(0, 10, 256)]

# training: 10 steps of 25 rows, in order (one epoch of llgrad.train with shuffle=None)
OPT = llgrad.optim.adam(1e-2)
BATCH, STEPS = 25, 10
ORDER = np.arange(BATCH * STEPS, dtype=np.int64)


def bumpy(w):
    """A scalar function of a 4-vector with every second derivative non-zero."""
    return np.sum(np.sin(w) * np.exp(-w)) + w[0] * w[1] * w[2] * w[3] + np.log(1 + w @ w)


W = np.array([0.3, -1.2, 0.7, 2.0])


@pytest.fixture(scope="module", autouse=True)
def llgrad_threads():
    """The Python oracles compiled with two threads.  A one-thread process (a one-core
    machine, or LLGRAD_THREADS=1) sends products of 2**17 to 2**20 multiply-adds to BLAS
    (codegen/matmul.py, BLAS_MIN_FLOPS) where one that splits work keeps them in llgrad's
    register tiles; an export never calls BLAS (it must run without scipy), so only the
    tiles' results are the export's bit for bit (BLAS sums in another order: 1e-17
    apart on this MLP)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLGRAD_THREADS", "2")
        yield


def leaves(tree, root):
    """(path, array) of each leaf, dict keys sorted, paths as Python writes them:
    ``params['b1']``."""
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in leaves(tree[k], f"{root}[{k!r}]")]
    return [(root, np.asarray(tree))]


def c_name(path):
    """The C parameter of a pytree path: ``params['b1']`` -> ``params_b1``."""
    return re.sub(r"\W+", "_", path).strip("_")


@dataclass(eq=False)   # hashable: the harness is built once per case
class Case:
    """An exported library and what the C function should read and write: (path, array)
    of each argument, of each result the caller passes a buffer for, and of each
    argument after the call (updated in place, or as it was)."""
    exported: object   # llgrad.export's Exported
    args: list
    results: list
    after: list

    @property
    def name(self):
        return self.exported.interface.name

    @property
    def folder(self):
        return Path(self.exported.header).parent

    @property
    def header(self):
        return Path(self.exported.header).read_text()

    @property
    def updated(self):
        """The indices of the arguments the function updates in place."""
        return [k for k, ((_, a), (_, b)) in enumerate(zip(self.args, self.after)) if a is not b]


def mlp_case(folder, **options):
    value, grads = llgrad.value_and_grad(mlp_loss)(PARAMS, X, Y)
    args = leaves(PARAMS, "params") + [("x", X), ("y", Y)]
    exported = llgrad.export(llgrad.value_and_grad(mlp_loss), PARAMS, X, Y, path=folder,
                             name=f"mlp_{c_name(options.get('target', 'host'))}", **options)
    return Case(exported, args, [("value", value)] + leaves(grads, "grad params"), args)


def hessian_case(folder):
    exported = llgrad.export(llgrad.hessian(bumpy), W, path=folder, name="bumpy_hessian")
    return Case(exported, [("w", W)], [("out", llgrad.hessian(bumpy)(W))], [("w", W)])


def train_python():
    result = llgrad.train(mlp_loss, PARAMS, (X, Y), OPT, batch_size=BATCH, grad_norms=False)
    assert result.steps == STEPS
    return result


def train_case(folder):
    exported = llgrad.export_train(mlp_loss, PARAMS, (X, Y), OPT, batch_size=BATCH,
                                   steps=STEPS, path=folder, name="mlp_adam")
    data = [("data[0]", X), ("data[1]", Y), ("order", ORDER)]
    trained = train_python()
    return Case(exported, leaves(PARAMS, "params") + leaves(OPT.init(PARAMS), "opt_state") + data,
                [("losses", trained.loss_history)],
                leaves(trained.params, "params") + leaves(trained.opt_state, "opt_state") + data)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The three libraries the C harness runs, each exported once for the module."""
    return {"mlp": mlp_case(tmp_path_factory.mktemp("mlp")),
            "hessian": hessian_case(tmp_path_factory.mktemp("hessian")),
            "train": train_case(tmp_path_factory.mktemp("train"))}


@pytest.fixture(scope="module")
def harness():
    """``harness(case, flavour)``: the C harness built against ``case``'s header, linked
    with its .so ("shared"), its .a ("static"), or its .a under ASan ("asan")."""
    return functools.cache(build_harness)


@pytest.fixture(scope="module")
def for_cpu(tmp_path_factory):
    """``for_cpu(target)``: the MLP case exported for the CPU ``target``, once."""
    return functools.cache(lambda target: mlp_case(tmp_path_factory.mktemp(c_name(target)),
                                                   target=target))


def link_flags(case):
    """The -l flags of the header's "Link:" line."""
    found = re.search(r"Link: .* with ((?:-l\w+ ?)*)\.", case.header)
    assert found, "the header names no libraries for a static link"
    return found.group(1).split()


def build_harness(case, flavour):
    pointers = ", ".join(f"p[{k}]" for k in range(len(case.args) + len(case.results)))
    (case.folder / "harness_bind.h").write_text("\n".join([
        f'#include "{case.name}.h"', f"#define LIB_CALL(p, ws) {case.name}({pointers}, ws)",
        f"#define LIB_WORKSPACE_SIZE {case.name}_workspace_size",
        *(f"#define LIB_{code} {case.name.upper()}_{code}"
          for code in ("OK", "ERROR_NULL", "ERROR_OVERLAP")), ""]))
    binary = case.folder / f"harness_{flavour}"
    library = ([str(case.folder / f"{case.name}.so"), f"-Wl,-rpath,{case.folder}"]
               if flavour == "shared" else [str(case.folder / f"{case.name}.a"), *link_flags(case)])
    sanitize = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"] if flavour == "asan" else []
    compiled = subprocess.run(
        [CC, "-std=c11", "-O1", "-Wall", "-Werror", *sanitize, f"-I{case.folder}", str(HARNESS),
         *library, "-pthread", "-o", str(binary)],
        capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    return binary


def run_harness(binary, mode, case, folder, wrapper=(), env=None):
    """Run the harness on ``case``'s arguments, written into ``folder``."""
    lines = [f"{len(case.args)} {len(case.results)}"]
    for k, (_, array) in enumerate(case.args):
        np.ascontiguousarray(array).tofile(folder / f"in{k}")
        lines.append(f"{folder / f'in{k}'} {array.nbytes} {int(k in case.updated)}")
    lines += [f"{folder / f'out{k}'} {array.nbytes}" for k, (_, array) in enumerate(case.results)]
    (folder / "manifest").write_text("\n".join(lines) + "\n")
    return subprocess.run([*wrapper, str(binary), mode, str(folder / "manifest")],
                          capture_output=True, text=True, env=env, timeout=120)


def assert_wrote_what_python_computes(case, folder):
    """The results the harness wrote into ``folder``, and the arguments after its call,
    equal Python's bit for bit."""
    written = [(f"out{k}", path, want) for k, (path, want) in enumerate(case.results)]
    written += [(f"in{k}.after", path, want) for k, (path, want) in enumerate(case.after)]
    for file, path, want in written:
        got = np.fromfile(folder / file, dtype=want.dtype).reshape(want.shape)
        np.testing.assert_array_equal(got, want, err_msg=path, strict=True)


# ----------------------------------------------------------------------------------
# 1. a C program links the library and computes what Python computes, bit for bit

@needs_cc
@pytest.mark.parametrize("which", ["mlp", "hessian", "train"])
def test_header_declares_each_leaf_in_order(cases, which):
    """The prototype's parameters: each argument leaf (const unless updated in place),
    each result, then the workspace, with the leaves' C names."""
    case = cases[which]
    prototype = re.search(rf"^int {case.name}\((.*?)\);", case.header, re.S | re.M).group(1)
    declared = re.findall(r"(const )?(double|float|int64_t|bool|void) \*(\w+)[,)]?",
                          prototype + ")")
    assert [(const, name) for const, _, name in declared] == (
        [("" if k in case.updated else "const ", c_name(path))
         for k, (path, _) in enumerate(case.args)]
        + [("", c_name(path)) for path, _ in case.results] + [("", "workspace")])


@needs_cc
@pytest.mark.parametrize("flavour", ["shared", "static"])
@pytest.mark.parametrize("which", ["mlp", "hessian", "train"])
def test_c_program_computes_what_python_does(cases, harness, which, flavour, tmp_path):
    """value_and_grad of the README's MLP, the Hessian of a 4-vector function and 10
    Adam steps, called from C through the .so and through the .a: every result, and
    every argument after the call (parameters and optimiser state updated in place,
    the rest unchanged), equal Python's bit for bit."""
    case = cases[which]
    done = run_harness(harness(case, flavour), "run", case, tmp_path)
    assert done.returncode == 0, done.stderr
    assert_wrote_what_python_computes(case, tmp_path)


# ----------------------------------------------------------------------------------
# 2. the shared library needs no Python

@needs_cc
@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd not found")
def test_shared_library_links_no_python(cases):
    listed = subprocess.run(["ldd", cases["mlp"].exported.shared], capture_output=True,
                            text=True, check=True).stdout
    needed = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert not any("python" in lib for lib in needed), listed
    system = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libmvec.so")
    assert all(lib.startswith(system) or "/ld-linux" in lib for lib in needed), listed


# ----------------------------------------------------------------------------------
# 3. the workspace is enough: ASan, a guard page, valgrind

@needs_cc
@pytest.mark.parametrize("which", ["mlp", "hessian", "train"])
def test_asan_build_runs_clean_in_exactly_the_workspace_it_asks_for(cases, harness, which,
                                                                    tmp_path):
    """The harness malloc's exactly NAME_workspace_size() bytes (and every argument and
    result exactly its size): the wrapper's accesses are checked by ASan."""
    case = cases[which]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}   # leaks: valgrind's part below
    done = run_harness(harness(case, "asan"), "run", case, tmp_path, env=env)
    assert "ERROR: AddressSanitizer" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert_wrote_what_python_computes(case, tmp_path)


@needs_cc
@pytest.mark.parametrize("which", ["mlp", "hessian", "train"])
def test_kernels_stay_inside_the_workspace(cases, harness, which, tmp_path):
    """ASan does not see the compiled kernels (they are not instrumented): here the
    workspace's last byte sits just before an inaccessible page, so any read or write
    past its end stops the program."""
    case = cases[which]
    done = run_harness(harness(case, "static"), "guard", case, tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert_wrote_what_python_computes(case, tmp_path)


@needs_cc
@runs_avx2
@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed (Debian: apt-get install valgrind)")
def test_valgrind_finds_no_error(for_cpu, harness, tmp_path):
    """valgrind checks every access, the kernels' included, and every allocation.  It
    decodes no AVX-512 (3.19 stops on the host build's first zmm instruction with
    SIGILL), so the library is compiled for x86-64-v3 (AVX2, FMA) here."""
    case = for_cpu("x86-64-v3")
    done = run_harness(harness(case, "static"), "run", case, tmp_path,
                       wrapper=("valgrind", "--error-exitcode=99", "--leak-check=full"))
    assert done.returncode == 0, done.stderr
    assert "ERROR SUMMARY: 0 errors" in done.stderr, done.stderr
    assert_wrote_what_python_computes(case, tmp_path)


# ----------------------------------------------------------------------------------
# 4. re-entrant: two threads, two workspaces

@needs_cc
@pytest.mark.parametrize("which", ["mlp", "train"])
def test_two_threads_at_once_compute_what_one_does(cases, harness, which, tmp_path):
    case = cases[which]
    done = run_harness(harness(case, "shared"), "threads:200", case, tmp_path)
    assert done.returncode == 0 and done.stdout == "mismatches 0\n", done.stdout + done.stderr
    assert_wrote_what_python_computes(case, tmp_path)   # the one-thread reference


# ----------------------------------------------------------------------------------
# 5. error codes

def error_macros(case):
    return {what: int(value) for what, value in re.findall(
        rf"#define {case.name.upper()}_(OK|ERROR_NULL|ERROR_OVERLAP) (\d+)", case.header)}


@needs_cc
@pytest.mark.parametrize("which", ["mlp", "train"])
def test_null_pointers_and_overlapping_results_are_refused_untouched(cases, harness, which,
                                                                     tmp_path):
    """A NULL argument, result or workspace gives NAME_ERROR_NULL; a result on an
    argument, on another result, or an argument updated in place on another argument
    gives NAME_ERROR_OVERLAP; and no buffer changes."""
    case = cases[which]
    macros = error_macros(case)
    assert macros["OK"] == 0 and len(set(macros.values())) == 3, macros
    done = run_harness(harness(case, "static"), "errors", case, tmp_path)
    reports = [line.split() for line in done.stdout.splitlines()]
    n_in, n_out = len(case.args), len(case.results)
    kinds = [r[0].split(":")[0] for r in reports]
    assert kinds == (["null-argument"] * n_in + ["null-result"] * n_out + ["null-workspace"]
                     + ["result-on-argument"] * n_in * n_out
                     + ["updated-on-argument"] * len(case.updated) * (n_in - 1)
                     + ["result-on-result"] * (n_out > 1)), done.stdout
    for what, _, status, _, _, _, untouched in reports:
        wanted = macros["ERROR_NULL" if what.startswith("null") else "ERROR_OVERLAP"]
        assert (int(status), untouched) == (wanted, "1"), what
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------------
# 6. load_library: the exported function back in Python

def two_outputs(a, b):
    return {"sum": np.sum(np.tanh(a) * b), "rows": a @ b.T}, a * 2


def scalar_loss(a, b, c):
    return np.sum(np.sin(a) * b) * c


A, B = np.random.default_rng(1).normal(size=(2, 3, 4))
ROUND_TRIPS = {   # name: (the llgrad function, its arguments)
    "jit": (llgrad.jit(two_outputs), (A, B)),
    "grad": (llgrad.grad(scalar_loss), (A, B, 1.5)),
    "grad_argnums_tuple": (llgrad.grad(scalar_loss, argnums=(0, 2)), (A, B, 1.5)),
    "value_and_grad_dict": (llgrad.value_and_grad(mlp_loss), (PARAMS, X, Y)),
    "hessian": (llgrad.hessian(bumpy), (W,)),
    "jvp": (llgrad.jit(lambda a, t: llgrad.jvp(np.tanh, (a,), (t,))), (A, B)),
}


@needs_cc
@pytest.mark.parametrize("which", ROUND_TRIPS)
def test_loaded_library_returns_what_the_function_returns(which, tmp_path):
    f, args = ROUND_TRIPS[which]
    exported = llgrad.export(f, *args, path=tmp_path, name=which)
    assert_identical(llgrad.load_library(exported.shared)(*args), f(*args))


@needs_cc
def test_loaded_pullback_returns_the_value_and_the_vjp(tmp_path):
    value, pullback = llgrad.vjp(two_outputs, A, B)
    cotangent = ({"rows": np.ones((3, 3)), "sum": np.float64(0.5)}, np.full((3, 4), -1.0))
    exported = llgrad.export(pullback, cotangent, path=tmp_path, name="pullback")
    assert_identical(llgrad.load_library(exported.shared)(A, B, cotangent),
              (value, pullback(cotangent)))


@needs_cc
def test_loaded_training_returns_new_state_and_leaves_the_callers_arrays(cases):
    params = {k: v.copy() for k, v in PARAMS.items()}
    state = OPT.init(params)
    lib = llgrad.load_library(cases["train"].exported.shared)
    new_params, new_state, losses = lib(params, state, (X, Y), ORDER)
    trained = train_python()
    assert_identical(new_params, trained.params)
    assert_identical(new_state, trained.opt_state)
    np.testing.assert_array_equal(losses, trained.loss_history, strict=True)
    assert_identical(params, PARAMS)
    assert_identical(state, OPT.init(PARAMS))


@needs_cc
@pytest.mark.parametrize("args, error, named", [
    (({**PARAMS, "w1": PARAMS["w1"][:32]}, X, Y), llgrad.ShapeError, r"params\['w1'\]"),
    ((PARAMS, X, Y[:, :3]), llgrad.ShapeError, r"argument y "),
    ((PARAMS, X.astype(np.complex128), Y), llgrad.DTypeError, r"argument x "),
    (({k: v for k, v in PARAMS.items() if k != "b2"}, X, Y), llgrad.ShapeError,
     r"x\[0\]\['b1'\].*expected.*x\[0\]\['b2'\]"),
    ((PARAMS, X), llgrad.ShapeError, "expected the structure"),
], ids=["shape-in-dict", "shape", "dtype", "structure", "count"])
def test_loaded_library_names_the_argument_it_refuses(cases, args, error, named):
    lib = llgrad.load_library(cases["mlp"].exported.shared)
    with pytest.raises(error, match=named):
        lib(*args)


# ----------------------------------------------------------------------------------
# 7. target CPUs

#: Another CPU need not round as the host does.  x86-64 (and x86-64-v2) has no FMA: tanh's
#: llvm.fmuladd and the products' multiply-adds round twice there, once with FMA; and
#: x86-64 has no SSE4.1, so no libmvec: exp and log are libm's scalar functions, not
#: libmvec's vector ones (each within a few ulp, not the same ones).  The vector width
#: (128, 256 or 512 bits) also sets the products' tile shapes and the libmvec variant.
#: Each operation then differs by a few ulp, and a gradient here sums 256 rows of such
#: terms: 256 x 4 ulp ~ 2e-13 of its largest element bounds the difference.  Observed on
#: an AVX-512 host: 9e-16 for x86-64, exact for x86-64-v3 (FMA, the same libmvec results).
TARGET_TOLERANCE = 1e-12   # of the largest element of each result


@needs_cc
@runs_avx2
@pytest.mark.parametrize("target", ["x86-64", "x86-64-v3"])
def test_library_for_another_cpu_computes_the_same_within_rounding(for_cpu, target):
    case = for_cpu(target)
    assert f"Compiled for CPU {target};" in case.header
    value, grads = llgrad.load_library(case.exported.shared)(PARAMS, X, Y)
    got = [("value", value)] + leaves(grads, "grad params")
    for (path, want), (_, array) in zip(case.results, got, strict=True):
        np.testing.assert_allclose(array, want, rtol=0,
                                   atol=TARGET_TOLERANCE * np.max(np.abs(want)), err_msg=path)


@needs_cc
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not found")
@pytest.mark.parametrize("target, absent", [("x86-64", ("%ymm", "%zmm", "vfmadd")),
                                            ("x86-64-v3", ("%zmm",))])
def test_library_for_another_cpu_uses_only_its_instructions(for_cpu, target, absent):
    code = subprocess.run(["objdump", "-d", for_cpu(target).exported.shared], capture_output=True,
                          text=True, check=True).stdout
    assert [a for a in absent if a in code] == []


@needs_cc
def test_unknown_cpu_is_named_and_nothing_is_written(tmp_path):
    with pytest.raises(llgrad.LlgradError, match="'pentium-9000'"):
        llgrad.export(llgrad.grad(scalar_loss), A, B, 1.5, path=tmp_path, target="pentium-9000")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------
# 8. failures leave no partial files

@needs_cc
def test_unwritable_folder_is_named_and_nothing_is_written(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    folder = tmp_path / "file" / "lib"
    with pytest.raises(llgrad.LlgradError, match=re.escape(str(folder))):
        llgrad.export(llgrad.grad(scalar_loss), A, B, 1.5, path=folder)
    assert os.listdir(tmp_path) == ["file"]


Pair = namedtuple("Pair", "first second")


def halves(a):
    return Pair(a[:, :2], a[:, 2:])


def scaled(a, k):
    return a * k


@pytest.mark.parametrize("f, args, says", [
    (scalar_loss, (A, B, 1.5), "made by llgrad"),
    (llgrad.jit(scaled, static_argnums=1), (A, 2.0), "static arguments"),
    (llgrad.jit(halves), (A,), "namedtuple"),
], ids=["plain-function", "static-argnums", "namedtuple-result"])
def test_unsupported_function_is_refused_and_nothing_is_written(f, args, says, tmp_path):
    with pytest.raises(llgrad.UnsupportedError, match=says):
        llgrad.export(f, *args, path=tmp_path, name="refused")
    assert os.listdir(tmp_path) == []


@needs_cc
def test_a_folder_in_the_way_of_one_file_leaves_none_of_them(tmp_path):
    """The last step moves the four files in; when one cannot go, those already moved
    go again."""
    (tmp_path / "blocked_example.c").mkdir()
    with pytest.raises(llgrad.LlgradError, match=re.escape(str(tmp_path / "blocked_example.c"))):
        llgrad.export(llgrad.grad(scalar_loss), A, B, 1.5, path=tmp_path, name="blocked")
    assert os.listdir(tmp_path) == ["blocked_example.c"]


@needs_cc
def test_failed_link_leaves_no_file_and_no_scratch_folder(tmp_path, monkeypatch):
    """The C compiler fails after the header, the wrapper and the object code were
    written into the scratch folder: all of it goes."""
    monkeypatch.setenv("CC", "false")
    with pytest.raises(llgrad.LlgradError, match="false -c"):
        llgrad.export(llgrad.grad(scalar_loss), A, B, 1.5, path=tmp_path, name="unlinked")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------
# 9. the example program

def printed(output):
    """{path: (first elements, sum)} of what NAME_example prints."""
    found = {}
    for line in output.splitlines():
        path, numbers = re.fullmatch(r"(.+) \w+\[[\d, ]*\]:(.*)", line).groups()
        first, total = numbers.split("  sum ")
        found[path] = ([float(v) for v in first.split() if v != "..."], float(total))
    return found


def run_example(exported):
    """Build and run NAME_example.c with the command its first comment gives."""
    source = Path(exported.example).read_text()
    command = re.search(r"Build and run:\s*\*\s*(.*?)\s*\*/", source).group(1)
    name = exported.interface.name
    assert command.startswith(f"cc {name}_example.c ") and command.endswith(f"./{name}_example")
    done = subprocess.run(command, shell=True, cwd=Path(exported.example).parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return printed(done.stdout)


def assert_printed(shown, expected):
    """NAME_example printed, for each (path, array) expected, its first four elements
    and its sum (the program's: in order, in double) as %.17g, which reads back exactly."""
    assert list(shown) == [path for path, _ in expected]
    for path, want in expected:
        flat = [float(v) for v in np.ravel(want)]
        first, total = shown[path]
        np.testing.assert_array_equal(first, flat[:4], err_msg=path)
        np.testing.assert_array_equal(total, functools.reduce(operator.add, flat, 0.0),
                                      err_msg=path)


@needs_cc
@pytest.mark.parametrize("which", ["mlp", "train"])
def test_example_program_builds_as_it_says_and_prints_pythons_values(cases, which):
    """The example calls the function on export's example arguments: the MLP's value
    and gradient, or the trained parameters, optimiser state and losses."""
    case = cases[which]
    assert_printed(run_example(case.exported),
                   [case.after[k] for k in case.updated] + case.results)


@needs_cc
def test_example_program_of_infinite_and_nan_arguments_builds(tmp_path):
    """C has no literal for inf or nan: the example writes them as math.h's macros."""
    x = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-310, 2.5])
    f = llgrad.jit(lambda x: np.maximum(x, 0.0) * 2)
    exported = llgrad.export(f, x, path=tmp_path, name="nonfinite")
    assert_printed(run_example(exported), [("out", f(x))])
