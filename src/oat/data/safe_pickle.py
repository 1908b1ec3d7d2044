"""Unpickling a data file without trusting it (the official CIFAR "python version" batches).

Pickle IS the official CIFAR format, so we unpickle; but a pickle is a program. Besides
running code (refused: only a handful of globals resolve, each to a checked stand-in),
a few hundred bytes can make a loader allocate gigabytes (an array of a huge declared shape)
or build a structure that shares its parts (a list put twice into the next, 30 times over)
whose traversal by ``np.asarray`` is exponential. So:

1. :func:`prescan` walks the opcodes (``pickletools.genops``) before anything is built and
   simulates the stack: every object's expanded size (as if each shared reference, a memo
   GET or a DUP, were a copy) and nesting depth. It refuses a size beyond a budget
   proportional to the file's length, a depth beyond :data:`MAX_DEPTH`, a container
   modified after it was placed in another (it would grow every copy at once), a container
   inside itself, and the opcodes an official batch never holds (persistent ids,
   extensions, out-of-band buffers).
2. :class:`RestrictedUnpickler` then builds arrays only through stand-ins for numpy's
   reconstructors: plain boolean/integer dtypes, data exactly the bytes in the file.

Every refusal is one :class:`~oat.errors.DataError` line.
"""

from __future__ import annotations

import io
import pickle
import pickletools

import numpy as np

from oat.errors import DataError

MAX_DEPTH = 16  # an official batch nests 6 deep (dict > array > state tuple > dtype > tuple > str)
DTYPES = ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")  # what a data array may hold
_NEVER = {"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GROW = {"APPENDS", "SETITEMS", "ADDITEMS"}  # pop to the mark, then add the items to the object below it


class _Node:
    """A simulated stack object: its expanded size, nesting depth, and whether it was put in another."""

    __slots__ = ("size", "depth", "used")

    def __init__(self, size: int = 1, depth: int = 0):
        self.size, self.depth, self.used = size, depth, False


_MARK = object()


class _Scan:
    def __init__(self, budget: int):
        self.budget, self.stack, self.memo = budget, [], {}

    def check(self, node: _Node) -> _Node:
        if node.size > self.budget:
            raise DataError(f"it would expand to more than {self.budget} objects (shared references repeated)")
        if node.depth > MAX_DEPTH:
            raise DataError(f"it nests deeper than {MAX_DEPTH} levels")
        return node

    def top(self) -> _Node:
        if not self.stack or self.stack[-1] is _MARK:
            raise DataError("malformed pickle (stack underflow)")
        return self.stack[-1]

    def pop(self) -> _Node:
        self.top()
        return self.stack.pop()

    def pop_mark(self) -> list[_Node]:
        items = []
        while self.stack and self.stack[-1] is not _MARK:
            items.append(self.stack.pop())
        if not self.stack:
            raise DataError("malformed pickle (no mark)")
        self.stack.pop()
        return items

    def grow(self, items: list[_Node]) -> None:
        """Items added to the object on top of the stack (APPEND(S), SETITEM(S), BUILD …)."""
        target = self.stack[-1] if self.stack else _MARK
        if target is _MARK:
            raise DataError("malformed pickle (nothing to add to)")
        if target.used or any(i is target for i in items):
            raise DataError("a container is modified after it was used, or holds itself")
        for i in items:
            i.used = True
        target.size += sum(i.size for i in items)
        target.depth = max([target.depth] + [i.depth + 1 for i in items])
        self.check(target)

    def new(self, parts: list[_Node], count: int) -> None:
        """``count`` new objects made of ``parts`` (a tuple, a REDUCE, a GLOBAL …)."""
        for p in parts:
            p.used = True
        depth = 1 + max((p.depth for p in parts), default=-1)
        size = 1 + sum(p.size for p in parts)
        for _ in range(count):
            self.stack.append(self.check(_Node(size, depth)))

    def step(self, op, arg) -> None:
        name = op.name
        if name in _NEVER:
            raise DataError(f"it holds a {name} opcode, which a data file never needs")
        if name == "MARK":
            self.stack.append(_MARK)
        elif name == "POP":
            self.stack.pop() if self.stack else self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.stack.append(self.top())
        elif name in _GET:
            if arg not in self.memo:
                raise DataError("malformed pickle (memo key missing)")
            self.stack.append(self.memo[arg])
        elif name in _PUT or name == "MEMOIZE":
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.top()
        elif name == "APPEND":
            self.grow([self.pop()])
        elif name == "SETITEM" or name == "BUILD":
            self.grow([self.pop() for _ in range(2 if name == "SETITEM" else 1)])
        elif name in _GROW:
            self.grow(self.pop_mark())
        else:
            self.generic(op)

    def generic(self, op) -> None:
        before = op.stack_before
        if pickletools.markobject in before:
            parts = self.pop_mark() + [self.pop() for _ in range(before.index(pickletools.markobject))]
        else:
            parts = [self.pop() for _ in before]
        self.new(parts, len(op.stack_after))


def prescan(data: bytes) -> None:
    """Refuse a pickle whose objects would grow far beyond the file (see the module notes)."""
    scan = _Scan(budget=len(data) + 1024)
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "STOP":
                return
            scan.step(op, arg)
    except DataError:
        raise
    except Exception as exc:  # genops raises ValueError on a truncated or malformed opcode stream
        raise DataError(f"malformed pickle ({exc}); truncated or corrupt?") from None
    raise DataError("malformed pickle (no STOP); truncated?")


# --------------------------------------------------------------------------- stand-ins
def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else value


class _Dtype:
    """Stands in for ``numpy.dtype`` in a data file: plain boolean and integer types only."""

    def __init__(self, obj, align=False, copy=False):
        name = _text(obj)
        if not isinstance(name, str) or name not in DTYPES:
            raise DataError(f"dtype {obj!r} is not allowed in a data file (only {', '.join(DTYPES)})")
        self.dtype = np.dtype(name)

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise DataError("a dtype with fields or sub-arrays is not allowed in a data file")
        endian = _text(state[1])
        if endian not in ("<", ">", "|", "="):
            raise DataError(f"dtype byte order {endian!r} is not valid")
        if endian in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(endian)


class _NdarrayType:
    """Stands in for the ``numpy.ndarray`` class named by a pickled array."""


def _array(shape, dtype, raw, fortran: bool = False) -> np.ndarray:
    """An array whose data are exactly the bytes ``raw`` of the file (no allocation beyond it)."""
    if not isinstance(dtype, _Dtype):
        raise DataError("an array's dtype must be a plain numpy dtype")
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 4:
        raise DataError(f"array shape {shape!r} is not valid")
    if not isinstance(raw, (bytes, bytearray)):
        raise DataError("an array's data must be bytes")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.dtype.itemsize != len(raw):
        raise DataError(f"array of shape {shape} needs {count * dtype.dtype.itemsize} bytes; the file holds {len(raw)}")
    return np.frombuffer(bytearray(raw), dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _Reconstruct:
    """Stands in for ``numpy.core.multiarray._reconstruct``: the array is made by BUILD's state."""

    def __init__(self, subtype, shape=None, dtype=None):
        if subtype is not _NdarrayType:
            raise DataError("only plain numpy arrays are allowed in a data file")
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError("malformed array state")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array(shape, dtype, raw, bool(fortran))


def _frombuffer(buf, dtype, shape, order="C"):
    """Stands in for numpy's protocol-5 ``_frombuffer``."""
    return _array(tuple(shape), dtype, buf, _text(order) == "F")


def _encode(obj, encoding="utf-8"):
    """Stands in for ``_codecs.encode``: how Python 3 writes bytes at protocol <= 2 (str → latin-1)."""
    if not isinstance(obj, str) or _text(encoding) not in ("latin1", "latin-1"):
        raise DataError("only latin-1 str → bytes conversions are allowed in a data file")
    return obj.encode("latin1")


ALLOWED = {("numpy", "ndarray"): _NdarrayType, ("numpy", "dtype"): _Dtype, ("_codecs", "encode"): _encode}
for _module in ("numpy.core", "numpy._core"):  # numpy >= 2 moved the internals; files name either
    ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _Reconstruct
    ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in :data:`ALLOWED`, each to its checked stand-in."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file") from None


def load(data: bytes):
    """Unpickle ``data`` after :func:`prescan`; arrays come back as numpy arrays.

    ``encoding="bytes"``: the official files are Python 2 pickles with str keys.
    """
    prescan(data)
    obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    return _arrays(obj)


def _arrays(obj):
    """Top-level dict values (the only place an official batch holds an array) as numpy arrays."""
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if isinstance(value, _Reconstruct):
            if value.array is None:
                raise DataError("an array without its data")
            value = value.array
        out[key] = value
    return out
