"""The schema of a checkpoint's ``state.json``, checked before any value is used.

A hand-edited or damaged state (``"epoch": "two"``, λ values as strings, a torch RNG state
of the wrong length) would otherwise fail deep inside resume or model building with a
Python error; here each violation is one line naming the field. Messages name the field
and the type found, never the value itself (a state file may be anything).
"""

from __future__ import annotations

import math
import numbers

from oat.errors import CheckpointError

# Lengths of the Python (Mersenne Twister: 624 words + position) and NumPy (MT19937) states,
# and of torch's CPU generator state.
PY_STATE_LEN = 625
NP_STATE_LEN = 624


class StateSchemaError(CheckpointError):
    """A ``state.json`` whose fields have the wrong types or shapes."""


def _kind(v) -> str:
    return type(v).__name__


def _int(doc: dict, key: str, where, minimum: int = 0, required: bool = False) -> None:
    if key not in doc:
        if required:
            raise StateSchemaError(f"{where}: state.json lacks {key!r}")
        return
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise StateSchemaError(f"{where}: state.json field {key!r} must be a whole number ≥ {minimum}; "
                               f"got a {_kind(v)}")


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(doc: dict, key: str, where, label: str) -> list:
    v = doc.get(key)
    if not isinstance(v, list) or not v or not all(_number(x) for x in v):
        raise StateSchemaError(f"{where}: {label} must be a non-empty list of finite numbers")
    return v


def _bytes_list(v, n: int | None = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in v))


def _words(v, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(w, int) and 0 <= w < 2**32 for w in v)


def check_rng(rng, where) -> None:
    """The RNG states saved by :func:`oat.checkpoint.rng_state`."""
    import torch

    bad = StateSchemaError(f"{where}: state.json has a malformed RNG state; it cannot be resumed exactly")
    if not isinstance(rng, dict):
        raise bad
    py, np_state, th = rng.get("python"), rng.get("numpy"), rng.get("torch")
    if not (isinstance(py, list) and len(py) == 3 and isinstance(py[0], int) and _words(py[1], PY_STATE_LEN)
            and (py[2] is None or _number(py[2]))):
        raise bad
    if not (isinstance(np_state, list) and len(np_state) == 5 and np_state[0] == "MT19937"
            and _words(np_state[1], NP_STATE_LEN) and all(isinstance(x, int) for x in np_state[2:4])
            and _number(np_state[4])):
        raise bad
    if not _bytes_list(th, len(torch.get_rng_state())):
        raise bad


def check_state(doc, where, newest: int) -> dict:
    """Check ``doc`` (a parsed state.json) against the schema; returns it unchanged.

    Raises:
        StateSchemaError: one line naming the first field that is wrong.
        CheckpointError: a format version newer than ``newest``.
    """
    if not isinstance(doc, dict) or "format_version" not in doc or "arch" not in doc:
        raise StateSchemaError(f"{where}: state.json is not an oat checkpoint state (no format_version/arch)")
    _int(doc, "format_version", where, minimum=1)
    if doc["format_version"] > newest:
        raise CheckpointError(f"{where} has format version {doc['format_version']}, newer than this oat "
                              f"supports ({newest}); upgrade oat-torch")
    arch = doc["arch"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise StateSchemaError(f"{where}: state.json field 'arch' must hold the model's name")
    _int(arch, "in_channels", where, minimum=1, required=True)
    _int(arch, "num_classes", where, minimum=1, required=True)
    if not isinstance(arch.get("kwargs", {}), dict):
        raise StateSchemaError(f"{where}: state.json field 'arch.kwargs' must be a mapping")
    cond = doc.get("conditioning")
    if not isinstance(cond, dict):
        raise StateSchemaError(f"{where}: state.json field 'conditioning' must be a mapping")
    _numbers(cond, "lams", where, "the λ set ('conditioning.lams')")
    if "widths" in cond:
        _numbers(cond, "widths", where, "the widths ('conditioning.widths')")
    _int(cond, "dim", where, minimum=1)
    for key in ("epoch", "step", "batch"):
        _int(doc, key, where)
    _int(doc, "world_size", where, minimum=1)
    if "eps" in doc and not _number(doc["eps"]):
        raise StateSchemaError(f"{where}: state.json field 'eps' must be a finite number; got a {_kind(doc['eps'])}")
    for key in ("config", "optimizer", "partial"):
        if key in doc and not isinstance(doc[key], dict):
            raise StateSchemaError(f"{where}: state.json field {key!r} must be a mapping; got a {_kind(doc[key])}")
    if not all(_number(v) for v in doc.get("partial", {}).values()):
        raise StateSchemaError(f"{where}: state.json field 'partial' must map names to finite numbers")
    if "rng" in doc:
        check_rng(doc["rng"], where)
    if "gen_states" in doc and not (isinstance(doc["gen_states"], list)
                                    and all(_bytes_list(g) for g in doc["gen_states"])):
        raise StateSchemaError(f"{where}: state.json field 'gen_states' must be a list of generator states")
    return doc


def check_table(tensors: dict, n_lams: int, where) -> None:
    """The stored λ encoding table has one row per λ of the stored set."""
    table = tensors.get("lam_table")
    if table is not None and table.dim() == 2 and table.shape[0] != n_lams:
        raise StateSchemaError(f"{where}: the stored λ encoding table has {table.shape[0]} rows but state.json "
                               f"lists {n_lams} λ values; the checkpoint is inconsistent")
