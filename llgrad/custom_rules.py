"""Derivatives given by hand: ``llgrad.custom_vjp``, ``llgrad.custom_jvp`` (JAX's
interface) and ``llgrad.stop_gradient``.

The function's value is traced as ordinary code, so it runs and fuses like any other;
each output leaf is then wrapped in a custom call node that holds the user's rule,
traced once into a Graph (``compiler/frontend/nested.py``).  Differentiation sends
nothing into the function's own nodes: reverse and forward mode inline the rule instead
(``compiler/autodiff/custom.py``), each node under the user's source line, so
``print(llgrad.grad(f).trace(x).backward)`` shows the rule where it was written.  A
rule must take what it reads as arguments: one closing over a traced value is refused
(its derivative with respect to that value would be a silent zero).

A numerically stable derivative (``log1p(exp(x))``), gradient clipping and the
straight-through estimator are the common uses::

    @llgrad.custom_vjp
    def clip_gradient(x):
        return x

    clip_gradient.defvjp(lambda x: (x, ()), lambda _, g: (np.clip(g, -1, 1),))
"""
from __future__ import annotations

import functools

import numpy as np

from llgrad.compiler.frontend import pytree
from llgrad.compiler.frontend.nested import call_site, close, function_name, trace_nested
from llgrad.compiler.frontend.trace import Tracer, lift
from llgrad.ir.errors import ShapeError, UnsupportedError


def stop_gradient(x):
    """``x`` (any pytree), with a zero derivative in every mode: what flows through it
    is treated as a constant."""
    leaves, tree = pytree.flatten(x)
    if not any(isinstance(leaf, Tracer) for leaf in leaves):
        return x
    with call_site("llgrad.stop_gradient") as b:
        return pytree.unflatten(tree, [Tracer(b.stop_gradient(leaf.node))
                                       if isinstance(leaf, Tracer) else leaf
                                       for leaf in leaves])


class _CustomFunction:
    """A function with a derivative rule: called on concrete values it is just the
    function; traced, its float outputs become custom calls holding the rule.  Called
    inside its own rule (JAX's examples compute ``f(x)`` in the jvp rule) it is just
    the function too: the rule is traced when the function is, not on demand."""

    kind = ""      # the primitive is ``<kind>_call``
    define = ""    # the method that gives the rule

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(sorted(nondiff_argnums))
        self.rules = None
        self.in_rule = False

    def __call__(self, *args):
        leaves = pytree.flatten(args)[0]
        if self.in_rule or not any(isinstance(leaf, Tracer) for leaf in leaves):
            return self.fun(*args)
        name = function_name(self.fun)
        if self.rules is None:
            raise UnsupportedError(f"{name} is a {self.kind} function without its rule: "
                                   f"call {name}.{self.define}(...) first")
        static, args = self._split(name, args)
        leaves, in_tree = pytree.flatten(args)
        with call_site(f"llgrad.{self.kind} function {name}") as b:
            nodes = [lift(leaf) for leaf in leaves]
            out_leaves, out_tree = pytree.flatten(self.fun(*self._merged(static, args)))
            values = [lift(leaf) for leaf in out_leaves]
            self.in_rule = True
            try:
                attrs = self._rule_graphs(name, static, args, in_tree, nodes, out_tree, values)
            finally:
                self.in_rule = False
            wrapped = [b.emit(f"{self.kind}_call", v, *nodes, index=k, name=name, **attrs)
                       if v.type.is_float else v for k, v in enumerate(values)]
        return pytree.unflatten(out_tree, [Tracer(n) for n in wrapped])

    def _split(self, name, args):
        """The ``nondiff_argnums`` arguments (static: constants of the rules, never
        differentiated) and the others."""
        if any(k >= len(args) for k in self.nondiff_argnums):
            raise UnsupportedError(f"{name}: nondiff_argnums {self.nondiff_argnums} for a "
                                   f"call with {len(args)} arguments")
        static = tuple(args[k] for k in self.nondiff_argnums)
        for k, value in zip(self.nondiff_argnums, static):
            if any(isinstance(leaf, Tracer) for leaf in pytree.flatten(value)[0]):
                raise UnsupportedError(
                    f"{name}: argument {k} is in nondiff_argnums but is a traced value; "
                    f"nondiff arguments are constants (functions, sizes, flags): pass an "
                    f"array as an ordinary argument and return None as its cotangent")
        return static, tuple(a for k, a in enumerate(args) if k not in self.nondiff_argnums)

    def _merged(self, static, args):
        """The full argument list from the static and the other arguments."""
        merged, rest, fixed = [], iter(args), dict(zip(self.nondiff_argnums, static))
        for k in range(len(args) + len(static)):
            merged.append(fixed[k] if k in fixed else next(rest))
        return merged


def _rule(fn, shown: str, what: str, name: str, types, in_tree, names):
    """A rule traced into a Graph (named ``shown``, the user's function); it must not
    read traced values it was not given."""
    trace = trace_nested(fn, shown, types, in_tree, names)
    if trace.captured:
        raise UnsupportedError(
            f"the {what} rule {trace.name}() of {name} reads a traced value it was not "
            f"given (it closes over {trace.captured[0].type} from the enclosing "
            f"function); pass it as an argument of {name}")
    return trace, close(trace, [])


def _expect(name: str, what: str, got_tree, want_tree, root: str):
    if got_tree != want_tree:
        raise ShapeError(f"{name}: its {what} returned {pytree.leaf_names(got_tree, root)}, "
                         f"expected the structure {pytree.leaf_names(want_tree, root)}")


class custom_vjp(_CustomFunction):
    """``f = custom_vjp(f)``; ``f.defvjp(fwd, bwd)`` with ``fwd(*args) -> (out,
    residuals)`` and ``bwd(residuals, g) -> one cotangent per argument`` (each in that
    argument's structure, or None for zero).  Reverse mode uses the rule; forward mode
    refuses, as in JAX.  ``custom_vjp(f, nondiff_argnums=(0,))``: those arguments are
    constants of the rules (a function, a size), passed to ``bwd`` first, as in JAX:
    ``bwd(*nondiff, residuals, g)`` gives cotangents of the other arguments only."""

    kind, define = "custom_vjp", "defvjp"

    def defvjp(self, fwd, bwd):
        self.rules = (fwd, bwd)

    def _rule_graphs(self, name, static, args, in_tree, nodes, out_tree, values):
        user_fwd, user_bwd = self.rules
        fwd = functools.wraps(user_fwd)(lambda *a: user_fwd(*self._merged(static, a)))
        bwd = functools.wraps(user_bwd)(lambda res, g: user_bwd(*static, res, g))
        names = pytree.leaf_names(in_tree, "args")
        forward, fwd_graph = _rule(fwd, function_name(user_fwd), "forward", name,
                                   [n.type for n in nodes], in_tree, names)
        if forward.out_tree[:2] != ("tuple", 2):
            raise ShapeError(f"{name}: its forward rule {forward.name}() must return a pair "
                             f"(output, residuals)")
        primal_tree, res_tree = forward.out_tree[2]
        _expect(name, f"forward rule {forward.name}()'s output", primal_tree, out_tree, "out")
        n_out = len(values)
        residuals = forward.out_types[n_out:]
        arg_trees = [pytree.flatten(a)[1] for a in args]

        def cotangents(res, g):
            """bwd's result as one leaf per argument leaf (zeros for None)."""
            result = bwd(res, g)
            if not isinstance(result, tuple) or len(result) != len(args):
                raise ShapeError(f"{name}: its backward rule {function_name(bwd)}() must "
                                 f"return a tuple of {len(args)} cotangents (one per "
                                 f"argument), got {type(result).__name__}")
            leaves = []
            for k, (ct, tree) in enumerate(zip(result, arg_trees)):
                if ct is None:
                    ct = pytree.unflatten(tree, [np.zeros(n.shape, n.type.np_dtype)
                                                 for n in nodes[len(leaves):]])
                ct_leaves, ct_tree = pytree.flatten(ct)
                _expect(name, f"backward rule's cotangent {k}", ct_tree, tree, f"arg{k}")
                leaves += ct_leaves
            return leaves

        _, bwd_graph = _rule(cotangents, function_name(bwd), "backward", name,
                             residuals + [v.type for v in values],
                             ("tuple", 2, (res_tree, out_tree)),
                             [f"residual[{k}]" for k in range(len(residuals))]
                             + [f"cotangent[{k}]" for k in range(n_out)])
        return {"fwd": fwd_graph, "bwd": bwd_graph, "n_out": n_out}


class custom_jvp(_CustomFunction):
    """``f = custom_jvp(f)``; ``f.defjvp(rule)`` with ``rule(primals, tangents) ->
    (out, tangent_out)``, linear in the tangents.  Forward mode applies the rule;
    reverse mode its transpose.  With ``nondiff_argnums`` those arguments are constants
    passed to the rule first, ``rule(*nondiff, primals, tangents)``, where ``primals``
    and ``tangents`` hold the other arguments only, as in JAX."""

    kind, define = "custom_jvp", "defjvp"

    def defjvp(self, rule):
        self.rules = rule
        return rule

    def _rule_graphs(self, name, static, args, in_tree, nodes, out_tree, values):
        types = [n.type for n in nodes]
        pair_tree = pytree.flatten((args, args))[1]
        names = pytree.leaf_names(in_tree, "primals") + pytree.leaf_names(in_tree, "tangents")
        rule = functools.wraps(self.rules)(lambda primals, tangents: self.rules(
            *static, primals, tangents))
        trace, graph = _rule(rule, function_name(self.rules), "jvp", name,
                             types + types, pair_tree, names)
        _expect(name, f"jvp rule {trace.name}()", trace.out_tree,
                ("tuple", 2, (out_tree, out_tree)), "jvp")
        return {"jvp": graph}
