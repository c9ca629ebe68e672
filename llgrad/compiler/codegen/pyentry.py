"""The native Python entry of one call signature: a C function in LLVM IR.

``PyObject *entry(PyObject *self, PyObject *args, PyObject *kwargs)`` (a
``METH_VARARGS | METH_KEYWORDS`` builtin) does what the generated Python
of ``compiler.dispatch.fastcall`` does, by reading object memory instead of running bytecode:
it checks that ``args`` has the compiled structure (exact container types, sizes,
dict keys, float leaves or arrays of the compiled shape, dtype object and flags),
puts the leaves' values or data pointers into the executable's packed argument
array, calls the executable's entry and builds the user's result with the C API.
Any other call (keywords, another structure, anything that differs) is passed on to
the table's ``fallback`` callable, whose answer or error is the call's (the Python
paths decide, or the native entry of another signature, which falls back in turn);
NULL is otherwise returned only with an exception set by a failing C-API call.

The code is a pure function of the *plan* (a JSON-able structure description), so
its object code can be cached on disk under a key naming the plan alone: every
address of the process (type objects, dict keys, dtype objects, the fallback, buffers,
the pooled output arrays, the executable's entry) is read at run time from a table
of words, a numpy array that is item 0 of the tuple ``self``.  The first words of
the table are ``HEADER``; the plan names every other word it reads by its index
after them.

Every value read from the arguments is held in registers until the last C-API call
that might run Python code (a dict lookup comparing keys, the garbage collector
running a finaliser while a container is allocated) could let another thread in:
only then are the shared packed array, the value slots and the output pool touched,
and the chosen pool generation is claimed (its arrays increfed) before any
allocation.  The result is built from the root down, every new object attached to
its parent at once, so on a failed allocation releasing the root (and the claimed
arrays not yet handed out) releases everything.
"""
from __future__ import annotations

from llvmlite import ir

from llgrad.llvm.scalar import I8, I64, PTR, declare, i64

I32 = ir.IntType(32)
F64 = ir.DoubleType()
SYMBOL = "llgrad_pyentry"

#: the table's first words, in this order
HEADER = ("fallback", "tuple", "list", "dict", "float", "ndarray", "none", "empty_tuple",
          "run", "packed", "values", "results", "scratch", "refill")
_AT = {name: k for k, name in enumerate(HEADER)}
_BASE = len(HEADER)   # where the plan's own words start

#: C-API functions the entry calls: name -> (return type, argument types)
CAPI = {"Py_IncRef": (ir.VoidType(), [PTR]), "Py_DecRef": (ir.VoidType(), [PTR]),
        "PyErr_Occurred": (PTR, []), "PyDict_GetItemWithError": (PTR, [PTR, PTR]),
        "PyFloat_FromDouble": (PTR, [F64]), "PyTuple_New": (PTR, [I64]),
        "PyList_New": (PTR, [I64]), "PyDict_New": (PTR, []),
        "PyDict_SetItem": (I32, [PTR, PTR, PTR]), "PyObject_GetItem": (PTR, [PTR, PTR]),
        "PyObject_CallNoArgs": (PTR, [PTR]), "PyObject_Call": (PTR, [PTR, PTR, PTR])}


def build(plan: dict, offsets) -> str:
    """The LLVM IR of the entry for ``plan`` (see ``compiler.dispatch.fastcall.native_plan``);
    ``offsets``: ``runtime.pyobjects.Objects``."""
    module = ir.Module(name="pyentry")
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, PTR]), SYMBOL)
    _Entry(module, fn, plan, offsets).emit()
    return str(module)


class _Entry:
    def __init__(self, module, fn, plan, offsets):
        self.plan, self.o = plan, offsets
        self.fn = fn
        self.capi = {name: declare(module, name, *sig) for name, sig in CAPI.items()}
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.miss = fn.append_basic_block("miss")     # not answered here: the fallback
        self.error = fn.append_basic_block("error")   # a C-API call failed
        self.fail = fn.append_basic_block("fail")     # building the result failed

    # -- reading memory ----------------------------------------------------------------

    def field(self, obj, offset: int, typ=PTR):
        b = self.b
        return b.load(b.gep(obj, [i64(offset)], inbounds=True, source_etype=I8), typ=typ)

    def word(self, index, typ=PTR):
        """Word ``index`` (an int or an i64 value) of the table."""
        index = i64(index) if isinstance(index, int) else index
        b = self.b
        return b.load(b.gep(self.words, [index], inbounds=True, source_etype=PTR), typ=typ)

    def call(self, name, *args):
        return self.b.call(self.capi[name], list(args))

    def require(self, condition, otherwise=None):
        """Go on only where ``condition`` (i1) holds; else to ``otherwise`` (the
        fallback)."""
        ok = self.fn.append_basic_block()
        self.b.cbranch(condition, ok, otherwise or self.miss)
        self.b.position_at_end(ok)

    def same(self, a, b):
        return self.b.icmp_unsigned("==", a, b)

    def is_type(self, obj, header: str):
        return self.same(self.field(obj, self.o.type), self.word(_AT[header]))

    # -- the function ------------------------------------------------------------------

    def emit(self):
        b, o, plan = self.b, self.o, self.plan
        self.root = b.alloca(PTR)
        b.store(ir.Constant(PTR, None), self.root)
        self.done = b.alloca(I64)   # array outputs handed over (the rest are released on failure)
        b.store(i64(0), self.done)
        # the arrays claimed (a refill by another thread may change the table meanwhile)
        self.claimed = b.alloca(PTR, max(plan["n_out"], 1))
        self.words = self.field(self.field(self.fn.args[0], o.tuple_items), o.array_data)
        args, kwargs = self.fn.args[1:]
        no_keywords = self.fn.append_basic_block()
        self.require(b.icmp_unsigned("!=", kwargs, ir.Constant(PTR, None)), no_keywords)
        self.require(self.same(self.field(kwargs, o.dict_used, I64), i64(0)))
        b.branch(no_keywords)
        b.position_at_end(no_keywords)
        self.require(self.is_type(args, "tuple"))
        self.require(self.same(self.field(args, o.size, I64), i64(len(plan["args"]))))
        leaves = []
        for k, spec in enumerate(plan["args"]):
            leaves += self.unpack(self.field(args, o.tuple_items + 8 * k), spec)
        if plan["floats"]:
            values = [self.float_value(leaf) for leaf in leaves]
        else:
            values = [self.array_data(leaf, shape, descr)
                      for leaf, shape, descr in zip(leaves, plan["shapes"], plan["descrs"])]
        outputs = self.run(values)
        self.build(plan["result"], iter(outputs), self.attach_root)
        b.ret(b.load(self.root, typ=PTR))
        self.emit_exits()

    def unpack(self, obj, spec) -> list:
        """The leaves of one argument (borrowed references), its structure checked."""
        o, kind = self.o, spec[0]
        if kind == "leaf":
            return [obj]
        self.require(self.is_type(obj, kind))
        if kind == "dict":
            keys = spec[1]
            self.require(self.same(self.field(obj, o.dict_used, I64), i64(len(keys))))
            return [self.lookup(obj, key) for key in keys]
        n = spec[1]
        self.require(self.same(self.field(obj, o.size, I64), i64(n)))
        if kind == "tuple":
            return [self.field(obj, o.tuple_items + 8 * k) for k in range(n)]
        items = self.field(obj, o.list_items)
        return [self.field(items, 8 * k) for k in range(n)]

    def lookup(self, mapping, key: int):
        b = self.b
        value = self.call("PyDict_GetItemWithError", mapping, self.word(_BASE + key))
        found = self.fn.append_basic_block()
        absent = self.fn.append_basic_block()
        b.cbranch(b.icmp_unsigned("!=", value, ir.Constant(PTR, None)), found, absent)
        b.position_at_end(absent)
        raised = self.call("PyErr_Occurred")
        b.cbranch(b.icmp_unsigned("!=", raised, ir.Constant(PTR, None)), self.error, self.miss)
        b.position_at_end(found)
        return value

    def float_value(self, leaf):
        self.require(self.is_type(leaf, "float"))
        return self.field(leaf, self.o.float_value, F64)

    def array_data(self, leaf, shape, descr: int):
        b, o = self.b, self.o
        self.require(self.is_type(leaf, "ndarray"))
        ok = self.same(self.field(leaf, o.array_nd, I32), ir.Constant(I32, len(shape)))
        ok = b.and_(ok, self.same(self.field(leaf, o.array_descr), self.word(_BASE + descr)))
        flags = b.and_(self.field(leaf, o.array_flags, I32), ir.Constant(I32, o.required_flags))
        ok = b.and_(ok, self.same(flags, ir.Constant(I32, o.required_flags)))
        self.require(ok)
        if shape:
            dims = self.field(leaf, o.array_dims)
            ok = ir.Constant(ir.IntType(1), 1)
            for d, extent in enumerate(shape):
                ok = b.and_(ok, self.same(self.field(dims, 8 * d, I64), i64(extent)))
            self.require(ok)
        return self.field(leaf, o.array_data)

    def run(self, values) -> list:
        """Fill the packed array, call the executable; the outputs (floats: values in
        registers; arrays: the claimed arrays of a free pool generation)."""
        b, plan = self.b, self.plan
        n_in, n_out = len(values), plan["n_out"]
        # loaded as a typed pointer: llvmlite calls a value by its pointee function type
        runner = self.word(_AT["run"], ir.FunctionType(ir.VoidType(), [PTR]).as_pointer())
        packed = self.word(_AT["packed"])
        if plan["floats"]:
            slots = self.word(_AT["values"])
            for k, value in enumerate(values):
                b.store(value, b.gep(slots, [i64(k)], inbounds=True, source_etype=F64))
            b.call(runner, [packed])
            results = self.word(_AT["results"])
            return [b.load(b.gep(results, [i64(k)], inbounds=True, source_etype=F64), typ=F64)
                    for k in range(n_out)]
        base = self.free_generation()
        for k, data in enumerate(values):
            b.store(data, b.gep(packed, [i64(k)], inbounds=True, source_etype=PTR))
        arrays = []
        for k in range(n_out):
            array = self.word(b.add(base, i64(k)))
            self.call("Py_IncRef", array)
            b.store(array, b.gep(self.claimed, [i64(k)], inbounds=True, source_etype=PTR))
            b.store(self.field(array, self.o.array_data),
                    b.gep(packed, [i64(n_in + k)], inbounds=True, source_etype=PTR))
            arrays.append(array)
        b.call(runner, [packed])
        return arrays

    def free_generation(self):
        """The table index of the first pool generation only the pool holds (every array
        with reference count 1).  When the caller holds one of each, the pool's
        ``refill()`` replaces one with new arrays and the pool is searched again (another
        thread may have run meanwhile: then the fallback)."""
        b = self.b
        chosen = self.fn.append_basic_block("chosen")
        starts = self.search(chosen)
        refilled = self.call("PyObject_CallNoArgs", self.word(_AT["refill"]))
        self.require(b.icmp_unsigned("!=", refilled, ir.Constant(PTR, None)), self.error)
        self.call("Py_DecRef", refilled)
        starts += self.search(chosen)
        b.branch(self.miss)
        b.position_at_end(chosen)
        base = b.phi(I64)
        for start, block in starts:
            base.add_incoming(start, block)
        return base

    def search(self, chosen) -> list:
        """Branch to ``chosen`` from the first free generation; (its index, block) pairs."""
        b, plan = self.b, self.plan
        n_out, starts = plan["n_out"], []
        for g in range(plan["generations"]):
            start = _BASE + plan["pool"] + g * n_out
            free = ir.Constant(ir.IntType(1), 1)
            for k in range(n_out):
                count = self.field(self.word(start + k), self.o.refcnt, I64)
                free = b.and_(free, self.same(count, i64(1)))
            starts.append((i64(start), b.block))
            nxt = self.fn.append_basic_block()
            b.cbranch(free, chosen, nxt)
            b.position_at_end(nxt)
        return starts

    # -- the result --------------------------------------------------------------------

    def check(self, obj):
        self.require(self.b.icmp_unsigned("!=", obj, ir.Constant(PTR, None)), self.fail)
        return obj

    def attach_root(self, obj):
        self.b.store(obj, self.root)

    def build(self, spec, outputs, attach):
        """Make the object of ``spec``, attach it, then fill it (containers)."""
        b, o, kind = self.b, self.o, spec[0]
        if kind == "leaf":
            attach(self.leaf(spec, next(outputs)))
        elif kind == "none":
            none = self.word(_AT["none"])
            self.call("Py_IncRef", none)
            attach(none)
        elif kind == "tuple":
            obj = self.check(self.call("PyTuple_New", i64(len(spec[1]))))
            attach(obj)
            for k, child in enumerate(spec[1]):
                self.build(child, outputs, lambda item, k=k: b.store(item, b.gep(
                    obj, [i64(o.tuple_items + 8 * k)], inbounds=True, source_etype=I8)))
        elif kind == "list":
            obj = self.check(self.call("PyList_New", i64(len(spec[1]))))
            attach(obj)
            items = self.field(obj, o.list_items)
            for k, child in enumerate(spec[1]):
                self.build(child, outputs, lambda item, k=k: b.store(item, b.gep(
                    items, [i64(k)], inbounds=True, source_etype=PTR)))
        else:   # dict: spec[1] the keys' table indices, spec[2] the values
            obj = self.check(self.call("PyDict_New"))
            attach(obj)
            for key, child in zip(spec[1], spec[2]):
                self.build(child, outputs, lambda item, key=key: self.set_item(obj, key, item))

    def set_item(self, mapping, key: int, item):
        status = self.call("PyDict_SetItem", mapping, self.word(_BASE + key), item)
        self.call("Py_DecRef", item)
        self.require(self.same(status, ir.Constant(I32, 0)), self.fail)

    def leaf(self, spec, output):
        """Output ``spec[1]`` as ``spec[2]``: "float" (a Python float), "float64" (an
        np.float64, through the 0-d scratch array), "array" (the pool's array),
        "scalar" (the numpy scalar of a 0-d pool array, ``a[()]``)."""
        b, how = self.b, spec[2]
        empty = self.word(_AT["empty_tuple"])
        if how == "float":
            return self.check(self.call("PyFloat_FromDouble", output))
        if how == "float64":
            scratch = self.word(_AT["scratch"])
            b.store(output, self.field(scratch, self.o.array_data))
            return self.check(self.call("PyObject_GetItem", scratch, empty))
        if how == "scalar":
            output_array, output = output, self.check(self.call("PyObject_GetItem", output, empty))
            self.call("Py_DecRef", output_array)
        b.store(b.add(b.load(self.done, typ=I64), i64(1)), self.done)
        return output

    def emit_exits(self):
        b = self.b
        b.position_at_end(self.miss)
        b.ret(self.call("PyObject_Call", self.word(_AT["fallback"]), *self.fn.args[1:]))
        b.position_at_end(self.error)
        b.ret(ir.Constant(PTR, None))
        b.position_at_end(self.fail)
        self.call("Py_DecRef", b.load(self.root, typ=PTR))
        if not self.plan["floats"]:
            # the claimed arrays not yet in the result: outputs done .. n_out - 1
            head, body, end = (self.fn.append_basic_block(n) for n in ("drop", "drop.1", "drop.2"))
            first, start = b.load(self.done, typ=I64), b.block
            b.branch(head)
            b.position_at_end(head)
            k = b.phi(I64)
            k.add_incoming(first, start)
            b.cbranch(b.icmp_unsigned("<", k, i64(self.plan["n_out"])), body, end)
            b.position_at_end(body)
            self.call("Py_DecRef", b.load(b.gep(self.claimed, [k], inbounds=True,
                                                source_etype=PTR), typ=PTR))
            nxt = b.add(k, i64(1))
            k.add_incoming(nxt, body)
            b.branch(head)
            b.position_at_end(end)
        b.ret(ir.Constant(PTR, None))
