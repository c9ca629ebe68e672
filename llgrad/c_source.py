"""The C text of an exported function: its header, the wrapper that calls the compiled
graph, and an example program.  Pure text from an ``Interface``; ``export.py`` builds
the interface and runs the compiler.

The C function takes one pointer per argument leaf and per result leaf, then a
caller-owned workspace: nothing is allocated, nothing global is written, so two threads
with two workspaces may call it at once.  The wrapper checks what C cannot: a required
pointer that is NULL, and results that overlap arguments or each other (the compiled
kernels assume they do not, so an overlap would give wrong numbers, not an error).

A graph with a bounded ``while_loop`` (``max_steps``), or the gradient of an unbounded
one (whose tape grows on the heap), leaves a message in its module's status word when
a loop runs out of steps or its tape out of memory (``compiler/codegen/while_loop.py``);
the wrapper reads and clears that word after the call and returns the loop's own code,
``LOOP_LIMIT_CODE + k`` for the ``k``-th such message, each defined in the header with
its text, which names the loop's line.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from llgrad.compiler.codegen.while_loop import ACCESSOR as WHILE_STATUS
from llgrad.ir.graph import identifiers

#: C type of each llgrad dtype (bool is one byte, 0 or 1, as in numpy)
C_TYPES = {"float64": "double", "float32": "float", "int64": "int64_t", "bool": "bool"}
ERRORS = (("OK", 0, "success"),
          ("ERROR_NULL", 1, "a required pointer (argument, result or workspace) is NULL"),
          ("ERROR_OVERLAP", 2, "a result overlaps an argument or another result"))
#: the code of the first bounded while_loop that ran out of steps; the next loops follow
LOOP_LIMIT_CODE = 3
#: alignment the wrapper gives the workspace (the compiled kernels' buffers need 64)
ALIGN = 64

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while bool true false workspace".split())


@dataclass(frozen=True)
class Leaf:
    """One argument or result of the C function."""
    c_name: str      # its parameter name in C
    path: str        # its place in the Python pytree, e.g. params['w1']
    dtype: str
    shape: tuple

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def declaration(self, const: bool) -> str:
        return f"{'const ' if const else ''}{C_TYPES[self.dtype]} *{self.c_name}"

    def describe(self) -> str:
        return f"{self.path}: {self.dtype}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Interface:
    """Everything the C text says about one exported function."""
    name: str
    summary: str              # what it computes, in one line
    inputs: tuple
    outputs: tuple
    arena_bytes: int
    kernels: str              # the compiled graph's entry symbol
    target: str               # the CPU it was compiled for
    link: tuple               # libraries a static link needs (-lm ...)
    python: dict              # how load_library rebuilds the Python interface
    updates: tuple = ()       # (output, input) pairs: results written back into arguments
    threads: int = 1          # > 1: large kernels run on the library's worker pool
    loop_limits: tuple = ()   # the message of each bounded while_loop, by its code's order

    @property
    def updated(self) -> set:
        """Indices of the arguments the function updates in place."""
        return {i for _, i in self.updates}

    @property
    def returned(self) -> list:
        """The results the caller passes a pointer for (not the in-place updates)."""
        kept = {o for o, _ in self.updates}
        return [leaf for k, leaf in enumerate(self.outputs) if k not in kept]

    def error_codes(self) -> list:
        """(macro suffix, code, meaning) of every code the C function may return."""
        return list(ERRORS) + [(f"ERROR_LOOP{k}", LOOP_LIMIT_CODE + k, message)
                               for k, message in enumerate(self.loop_limits)]

    @property
    def workspace_bytes(self) -> int:
        """The arena, then each in-place result before it is copied back, all aligned."""
        return ALIGN + _aligned(self.arena_bytes) + sum(_aligned(self.outputs[o].nbytes)
                                                        for o, _ in self.updates)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def c_names(paths) -> list[str]:
    """Distinct C identifiers for pytree paths: ``params['w1']`` -> ``params_w1``."""
    return identifiers(paths, _C_KEYWORDS)


def _macro(iface, *parts) -> str:
    return "_".join((iface.name, *parts)).upper()


def header(iface: Interface) -> str:
    """``NAME.h``: sizes as defines, error codes, the two functions, each leaf explained."""
    guard = _macro(iface, "H")
    lines = [f"/* {iface.name}.h: generated by llgrad.export.",
             f" * {iface.summary}",
             f" * Compiled for CPU {iface.target}; no Python, numpy or llvmlite at run time.",
             f" * Link: {iface.name}.so, or {iface.name}.a with "
             f"{' '.join('-l' + lib for lib in iface.link)}.",
             *([" * Matrix products call the system's CBLAS (cblas_dgemm, cblas_sgemm)."]
               if "blas" in iface.link else []),
             " * Arrays are C-contiguous (row-major); results must not overlap arguments",
             " * or each other.  Re-entrant: concurrent calls need one workspace each. */",
             f"#ifndef {guard}", f"#define {guard}", "",
             "#include <stdbool.h>", "#include <stddef.h>", "#include <stdint.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    for suffix, value, meaning in iface.error_codes():
        lines.append(f"#define {_macro(iface, suffix)} {value}  /* {_comment(meaning)} */")
    if iface.loop_limits:
        lines += ["/* A loop that runs out of steps (or of memory for its tape) stops early:",
                  " * the results are then partial.",
                  " * The flag is one per library, so a call running at the same time in",
                  " * another thread may report it too. */"]
    lines.append("")
    for title, leaves in (("arguments", iface.inputs), ("results", iface.returned)):
        lines.append(f"/* {title}: elements of each (its pytree path: dtype[shape]) */")
        for leaf in leaves:
            lines.append(f"#define {_macro(iface, leaf.c_name, 'SIZE')} {leaf.size}"
                         f"  /* {leaf.describe()} */")
        lines.append("")
    if iface.threads > 1:
        lines += [f"/* Large kernels run on {iface.threads} threads: the caller's and workers of",
                  " * the library's pool, started by the first call that needs them, or now by",
                  f" * {iface.name}_init() (which also makes a forked child start its own).",
                  f" * {iface.name}_shutdown() parks the workers; they use no CPU until the next",
                  " * call.  Calls from several threads at once are safe: a call that finds",
                  " * the pool busy runs its parts itself. */",
                  f"int {iface.name}_init(void);", f"void {iface.name}_shutdown(void);", ""]
    lines += ["/* Bytes the caller provides as the workspace (any alignment). */",
              f"size_t {iface.name}_workspace_size(void);", "",
              f"/* {iface.summary}",
              f" * Returns {_macro(iface, 'OK')} or an error code above. */",
              f"int {iface.name}(", *_parameters(iface, comments=True), "", "#ifdef __cplusplus",
              "}", "#endif", "#endif", ""]
    return "\n".join(lines)


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def _parameters(iface: Interface, comments: bool) -> list[str]:
    updated = iface.updated
    params = ([(leaf.declaration(k not in updated),
                leaf.describe() + ("; updated in place" if k in updated else ""))
               for k, leaf in enumerate(iface.inputs)]
              + [(leaf.declaration(False), leaf.describe()) for leaf in iface.returned]
              + [("void *workspace", f"{iface.name}_workspace_size() bytes")])
    width = max(len(p) for p, _ in params) + 1
    out = []
    for k, (param, about) in enumerate(params):
        end = ");" if k == len(params) - 1 else ","
        text = f"    {param}{end}"
        out.append(f"{text:<{width + 6}} /* {about} */" if comments else text)
    return out


def wrapper(iface: Interface) -> str:
    """The C function: checks its pointers, packs them with the aligned workspace in
    the order the compiled graph reads them, calls it, and copies in-place results back
    (they are computed into the workspace: arguments and results must not overlap)."""
    n_in, n_out = len(iface.inputs), len(iface.outputs)
    written_back = dict(iface.updates)
    pointers, sizes = [], []
    for k, leaf in enumerate((*iface.inputs, *iface.outputs)):
        back = k >= n_in and (k - n_in) in written_back
        pointers.append("0" if back else f"(void *){leaf.c_name}")
        sizes.append("0" if back else str(leaf.nbytes))
    placed, offset = [], _aligned(iface.arena_bytes)
    for out, _ in iface.updates:
        placed.append(f"    packed[{n_in + out}] = base + {offset};")
        offset += _aligned(iface.outputs[out].nbytes)
    copies = [f"    memcpy((void *){iface.inputs[arg].c_name}, packed[{n_in + out}], "
              f"{iface.outputs[out].nbytes});" for out, arg in iface.updates]
    in_place = sorted(iface.updated)   # results too: they must not overlap another argument
    in_place_checks = [
        f"    static const int in_place[{len(in_place)}] = {{{', '.join(map(str, in_place))}}};",
        f"    for (int k = 0; k < {len(in_place)}; k++)",
        "        for (int j = 0; j < N_IN; j++)",
        "            if (j != in_place[k] && overlap(packed[in_place[k]], bytes[in_place[k]], "
        "packed[j], bytes[j]))",
        f"                return {_macro(iface, 'ERROR_OVERLAP')};"] if in_place else []
    signature = "\n".join(_parameters(iface, comments=False))[:-1]   # no ";"
    return "\n".join([
        f"/* {iface.name}.c: generated by llgrad.export; calls the compiled graph. */",
        "#include <string.h>", f'#include "{iface.name}.h"', "",
        f"void {iface.kernels}(void **packed);",
        *([f"int64_t *{iface.kernels}_while_status(void) "
           f"__asm__(\"{iface.kernels}{WHILE_STATUS}\");"] if iface.loop_limits else []), "",
        "/* the interface, for llgrad.load_library */",
        f"const char {iface.name}_llgrad_interface[] = {json.dumps(iface.to_json())};", "",
        f"size_t {iface.name}_workspace_size(void) {{ return {iface.workspace_bytes}; }}", "",
        *(_pool_functions(iface) if iface.threads > 1 else []),
        "static int overlap(const char *a, size_t na, const char *b, size_t nb) {",
        "    return na && nb && a < b + nb && b < a + na;", "}", "",
        f"int {iface.name}(", signature, "{",
        f"    enum {{ N_IN = {n_in}, N_ALL = {n_in + n_out} }};",
        f"    void *packed[N_ALL + 1] = {{{', '.join(pointers)}}};",
        f"    static const size_t bytes[N_ALL + 1] = {{{', '.join(sizes)}}};",
        f"    if (!workspace) return {_macro(iface, 'ERROR_NULL')};",
        "    for (int i = 0; i < N_ALL; i++)",
        f"        if (!packed[i] && bytes[i]) return {_macro(iface, 'ERROR_NULL')};",
        "    for (int i = N_IN; i < N_ALL; i++)",
        "        for (int j = 0; j < i; j++)",
        "            if (overlap(packed[i], bytes[i], packed[j], bytes[j]))",
        f"                return {_macro(iface, 'ERROR_OVERLAP')};", *in_place_checks,
        f"    char *base = (char *)(((uintptr_t)workspace + {ALIGN - 1}) & ~(uintptr_t){ALIGN - 1});",
        "    packed[N_ALL] = base;", *placed,
        f"    {iface.kernels}(packed);", *copies, *_loop_status(iface),
        f"    return {_macro(iface, 'OK')};", "}", ""])


def _loop_status(iface: Interface) -> list[str]:
    """Reading and clearing the status word of bounded loops, then the failed loop's
    code: its message (the word holds its address) told apart by its text."""
    if not iface.loop_limits:
        return []
    tests = [f"        if (!strcmp(message, {json.dumps(text)})) return {_macro(iface, suffix)};"
             for suffix, _, text in iface.error_codes()[len(ERRORS):]]
    return ["    {",
            "        const char *message = (const char *)(uintptr_t)__atomic_exchange_n(",
            f"            {iface.kernels}_while_status(), 0, __ATOMIC_RELAXED);",
            "        if (message) {", *["    " + t for t in tests],
            f"            return {_macro(iface, 'ERROR_LOOP0')};", "        }", "    }"]


def _pool_functions(iface: Interface) -> list[str]:
    """``NAME_init`` and ``NAME_shutdown`` over the pool's entry points (runtime/pool.py)."""
    name = iface.name
    return [
        "#include <pthread.h>",
        f"void {name}_parallel(void (*task)(void *, int64_t), void *ctx, int64_t parts);",
        f"void {name}_pool_rest(void);", f"void {name}_pool_reset(void);", "",
        "static void nothing(void *ctx, int64_t part) { (void)ctx; (void)part; }",
        f"static void at_fork(void) {{ pthread_atfork(0, 0, {name}_pool_reset); }}", "",
        f"int {name}_init(void) {{",
        "    static pthread_once_t once = PTHREAD_ONCE_INIT;",
        "    pthread_once(&once, at_fork);",
        f"    {name}_parallel(nothing, 0, {iface.threads});   /* starts the workers */",
        f"    return {_macro(iface, 'OK')};", "}", "",
        f"void {name}_shutdown(void) {{ {name}_pool_rest(); }}", ""]


def _c_array(leaf: Leaf, values) -> str:
    flat = np.asarray(values, dtype=leaf.dtype).ravel()
    if leaf.dtype in ("float64", "float32"):   # C has no literal for inf and nan
        items = [repr(v) if math.isfinite(v) else "NAN" if math.isnan(v)
                 else "INFINITY" if v > 0 else "-INFINITY" for v in map(float, flat)]
    else:
        items = [str(int(v)) for v in flat]
    body = ",".join(items) or "0"
    return f"static {C_TYPES[leaf.dtype]} {leaf.c_name}[{max(leaf.size, 1)}] = {{{body}}};"


def example(iface: Interface, arguments) -> str:
    """``NAME_example.c``: calls the function on the arguments given to export (so it
    prints what Python computed) and prints each result's first elements and sum."""
    declarations = [_c_array(leaf, value) for leaf, value in zip(iface.inputs, arguments)]
    declarations += [f"static {C_TYPES[leaf.dtype]} {leaf.c_name}[{max(leaf.size, 1)}];"
                     for leaf in iface.returned]
    call = ", ".join([leaf.c_name for leaf in (*iface.inputs, *iface.returned)]
                     + ["workspace"])
    shown = [iface.inputs[k] for k in sorted(iface.updated)] + iface.returned
    prints = []
    for leaf in shown:
        prints.append(f"""    {{
        double sum = 0;
        printf("{leaf.path} {leaf.dtype}[{', '.join(map(str, leaf.shape))}]:");
        for (size_t i = 0; i < {leaf.size}; i++) {{
            sum += (double){leaf.c_name}[i];
            if (i < 4) printf(" %.17g", (double){leaf.c_name}[i]);
        }}
        printf("%s  sum %.17g\\n", {leaf.size} > 4 ? " ..." : "", sum);
    }}""")
    return "\n".join([
        f"/* {iface.name}_example.c: generated by llgrad.export.  Build and run:",
        f" *   cc {iface.name}_example.c {iface.name}.a "
        f"{' '.join('-l' + lib for lib in iface.link)} -o {iface.name}_example "
        f"&& ./{iface.name}_example */",
        "#include <math.h>", "#include <stdio.h>", "#include <stdlib.h>",
        f'#include "{iface.name}.h"', "",
        *declarations, "", "int main(void) {",
        f"    void *workspace = malloc({iface.name}_workspace_size());",
        f"    int status = {iface.name}({call});",
        "    free(workspace);",
        f'    if (status != {_macro(iface, "OK")}) {{ fprintf(stderr, "error %d\\n", status); '
        "return 1; }",
        *prints, "    return 0;", "}", ""])
