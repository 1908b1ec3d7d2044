"""The recorded source of a user's network: a Python file's text and the factory in it.

A network converted by :func:`oat.models.conversion.convert` from a factory (``oat train
--model-file FILE.py[:FACTORY]``, or a function or class defined in a file) is rebuilt from
this record: the file's whole text, its SHA-256, the factory's name and its (JSON) arguments,
all stored in every checkpoint, so a run still loads after the user edits or deletes the file.

Building runs that text as a module of its own (named after its hash), so the code that built
the network for training is the code that rebuilds it at load time. That executes the user's
Python: the file must be self-contained (it may import installed packages; a sibling module it
imports is not recorded and is refused when the text runs), and its top-level code runs again
each time a process first loads the record.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import sys
import threading
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from oat.errors import ConvertError

DEFAULT_FACTORY = "make_model"
# A network's source is a page of Python; anything far larger is not one (and would bloat every checkpoint).
MAX_SOURCE_BYTES = 1 << 20
# One execution of a given text per process, also under threads; re-entrant, as a model file may convert.
_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelSource:
    """A Python file's text and the factory in it that returns the user's ``nn.Module``.

    Attributes:
        filename: the file's name as given (messages; its copy in the run folder).
        factory: the name of a function or class defined at the file's top level.
        text: the file's whole text.
        sha256: SHA-256 of ``text`` (UTF-8).
        kwargs: the factory's keyword arguments (JSON values).
    """

    filename: str
    factory: str
    text: str = field(repr=False)
    sha256: str
    kwargs: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ making a record
    @classmethod
    def from_file(cls, spec: str, kwargs: dict | None = None) -> ModelSource:
        """``"FILE.py"`` or ``"FILE.py:FACTORY"`` (default factory :data:`DEFAULT_FACTORY`)."""
        path, factory = parse_model_file(spec)
        p = Path(path)
        if not p.is_file():
            raise ConvertError(f"model file {path} does not exist")
        return cls.of_text(_read(p), p.name, factory, kwargs)

    @classmethod
    def of_factory(cls, factory, kwargs: dict | None = None) -> ModelSource:
        """The record of a function or class defined at the top level of a file."""
        name = getattr(factory, "__name__", None)
        where = f"factory {name or factory!r}"
        if not name or getattr(factory, "__qualname__", name) != name:
            raise ConvertError(f"{where} is not defined at the top level of a file, so its source cannot be "
                               "recorded; define it there, or convert an instance (oat.convert(make_net(), ...)) "
                               "for use in memory only")
        if getattr(factory, "__module__", None) == "__main__":
            raise ConvertError(f"{where} is defined in the script being run: recording it would run the whole "
                               "script again at load time; move the network into a file of its own and import it")
        try:
            path = inspect.getsourcefile(factory)
        except TypeError:
            path = None
        if not path or not Path(path).is_file():
            raise ConvertError(f"{where} has no source file (defined interactively?), so its source cannot be "
                               "recorded; put it in a .py file, or convert an instance for use in memory only")
        return cls.of_text(_read(Path(path)), Path(path).name, name, kwargs)

    @classmethod
    def of_text(cls, text: str, filename: str, factory: str, kwargs: dict | None = None) -> ModelSource:
        if factory not in top_level_names(text, filename):
            raise ConvertError(f"{filename} defines no {factory} at its top level; name the factory that returns "
                               f"your network (FILE.py:NAME){_choices(text, filename)}")
        return cls(filename, factory, text, _sha256(text), json_kwargs(kwargs or {}, factory))

    def with_kwargs(self, **kwargs) -> ModelSource:
        return replace(self, kwargs=json_kwargs({**self.kwargs, **kwargs}, self.factory))

    # ------------------------------------------------------------------ using it
    def load_factory(self):
        """The factory, from the recorded text run as a module of its own (once per process)."""
        module = _module_of(self.text, self.filename, self.sha256)
        fn = getattr(module, self.factory, None)
        if not callable(fn):
            raise ConvertError(f"{self.filename}: {self.factory} is not a function or class")
        return fn

    def accepts(self, name: str) -> bool:
        """Whether the factory takes a keyword ``name`` (or any keyword)."""
        try:
            params = inspect.signature(self.load_factory()).parameters.values()
        except (TypeError, ValueError):
            return False
        return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

    def build(self) -> nn.Module:
        """Call the factory with the recorded arguments; the user's (unconverted) module."""
        fn = self.load_factory()
        try:
            module = fn(**self.kwargs)
        except Exception as e:  # the user's code: any error is theirs, said in one line
            raise ConvertError(f"{self.filename}: {self.factory}(**{self.kwargs}) failed: {_first_line(e)}") from e
        if not isinstance(module, nn.Module):
            raise ConvertError(f"{self.filename}: {self.factory} returned a {type(module).__name__}, not an "
                               "nn.Module")
        return module

    # ------------------------------------------------------------------ the checkpoint record
    def to_dict(self) -> dict:
        return {"file": self.filename, "factory": self.factory, "kwargs": self.kwargs, "sha256": self.sha256,
                "text": self.text}

    @classmethod
    def from_dict(cls, d) -> ModelSource:
        """The record read back from a checkpoint; a text that does not match its hash is refused."""
        keys = ("file", "factory", "kwargs", "sha256", "text")
        if not isinstance(d, dict) or set(d) != set(keys) or not all(isinstance(d[k], str) for k in keys
                                                                         if k != "kwargs"):
            raise ConvertError("the recorded network source is malformed")
        if not isinstance(d["kwargs"], dict):
            raise ConvertError("the recorded network source is malformed (kwargs is not a mapping)")
        if _sha256(d["text"]) != d["sha256"]:
            raise ConvertError(f"the recorded source of {d['file']} does not match its SHA-256 (edited or damaged)")
        return cls(d["file"], d["factory"], d["text"], d["sha256"], d["kwargs"])


def parse_model_file(spec: str) -> tuple[str, str]:
    """``"FILE.py[:FACTORY]"`` → ``(path, factory)``."""
    path, factory = spec, DEFAULT_FACTORY
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier():
        path, factory = head, tail
    if not path.endswith(".py"):
        raise ConvertError(f"model_file {spec!r} must name a Python file: FILE.py or FILE.py:FACTORY")
    return path, factory


def top_level_names(text: str, filename: str) -> set[str]:
    """Functions, classes and assigned names at the top level of a Python text."""
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as e:
        raise ConvertError(f"{filename} is not valid Python: {e.msg} (line {e.lineno})") from None
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def json_kwargs(kwargs: dict, factory: str) -> dict:
    """The factory's arguments as the JSON they are recorded as (tuples become lists), so the
    network built for training and the one rebuilt from the record get the same values."""
    try:
        return json.loads(json.dumps(kwargs, allow_nan=False))
    except (TypeError, ValueError):
        raise ConvertError(f"the arguments of {factory} must be JSON values (numbers, strings, lists, mappings) "
                           "so that the run can rebuild the network; got "
                           f"{ {k: type(v).__name__ for k, v in kwargs.items()} }") from None


def _read(path: Path) -> str:
    if path.stat().st_size > MAX_SOURCE_BYTES:
        raise ConvertError(f"{path.name} is larger than {MAX_SOURCE_BYTES >> 20} MiB; a model file holds a network's "
                           "code, not its weights")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConvertError(f"{path.name} is not UTF-8 text") from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _choices(text: str, filename: str) -> str:
    tree = ast.parse(text, filename)
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    return f" (defined there: {', '.join(names[:8])})" if names else ""


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:160]}" if msg else type(e).__name__


def _module_of(text: str, filename: str, sha: str) -> types.ModuleType:
    """Run ``text`` as the module ``oat_model_file_<hash>``, once per process and text."""
    name = f"oat_model_file_{sha[:16]}"
    with _LOCK:
        if name in sys.modules:
            return sys.modules[name]
        module = types.ModuleType(name)
        module.__file__ = filename
        # Registered while it runs, as an import would: dataclasses and pickling look classes up there.
        sys.modules[name] = module
        try:
            exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 - the user's own network file
        except Exception as e:
            del sys.modules[name]
            hint = " (a model file must be self-contained)" if isinstance(e, ImportError) else ""
            raise ConvertError(f"{filename} failed to run: {_first_line(e)}{hint}") from e
        return module
