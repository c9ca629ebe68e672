"""The derivative recipes of every elementwise primitive, shipped with llgrad.

Reverse and forward mode differentiate an elementwise primitive by replaying a recipe:
the sympy partials of its formula, translated once into Builder steps
(``frontend.sympy_io.record_partials``).  Deriving them means importing sympy and
differentiating, much of a process's first compile (time ``python -c "import
sympy"``); so the recipes are derived once (``python -c "from
llgrad.compiler.autodiff import derivatives as t; t.write()"``) and shipped in
``derivatives.json``.  A recipe is used only while its primitive's formula (and stated
partials, see pow) are the text it was derived from: an edited or new formula is
derived afresh in memory (and tests/test_derivative_table.py fails until the table
is written again).
"""
from __future__ import annotations

import json
import os

from llgrad.ir.primitives import PRIMITIVES

PATH = os.path.join(os.path.dirname(__file__), "derivatives.json")

_shipped: dict | None = None
_derived: dict = {}


def recipes(prim_name: str):
    """Per operand, None (derivative zero almost everywhere) or a recipe that
    ``sympy_frontend.replay`` builds."""
    source = _source(prim_name)
    entry = shipped().get(prim_name) or _derived.get(prim_name)
    if entry is None or {k: entry.get(k) for k in ("formula", "partials")} != source:
        entry = _derived[prim_name] = derive(prim_name)
    return entry["recipes"]


def _source(prim_name: str) -> dict:
    """What a primitive's recipes are derived from: its formula and stated partials."""
    prim = PRIMITIVES[prim_name]
    return {"formula": prim.formula, "partials": list(prim.partials) if prim.partials else None}


def shipped() -> dict:
    """The table as shipped (empty when the file is missing or unreadable)."""
    global _shipped
    if _shipped is None:
        try:
            with open(PATH) as f:
                _shipped = json.load(f)["primitives"]
        except (OSError, ValueError, KeyError, TypeError):
            _shipped = {}
    return _shipped


def derive(prim_name: str) -> dict:
    from llgrad.compiler.frontend.sympy_io import record_partials
    source = {k: v for k, v in _source(prim_name).items() if v is not None}
    return {**source, "recipes": record_partials(prim_name)}


def table() -> dict:
    """Every elementwise primitive's recipes, derived now with sympy."""
    return {name: derive(name) for name in sorted(PRIMITIVES) if PRIMITIVES[name].formula}


def write(path: str = PATH) -> int:
    """Derive the table and write it, one line per primitive (so a changed formula
    reads as a one-line diff); returns how many primitives it holds."""
    data = table()
    lines = [f"  {json.dumps(name)}: {json.dumps(entry, sort_keys=True)}"
             for name, entry in data.items()]
    with open(path, "w") as f:
        f.write('{"primitives": {\n' + ",\n".join(lines) + "\n}}\n")
    return len(data)

