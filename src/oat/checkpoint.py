"""Self-describing, crash-safe checkpoints: safetensors weights + JSON, no pickles.

A checkpoint is a folder ``RUN/checkpoints/epoch-NNNN/`` holding ``model.safetensors``,
``optimizer.safetensors`` (the optimiser's tensors, flattened) and ``state.json`` (format
version, epoch, architecture, conditioning spec, resolved config, optimiser hyper-
parameters, scheduler step, RNG states). It is written under a temporary name, every
file fsynced, then renamed; ``RUN/checkpoints/latest`` (replaced atomically too) names
the newest. A crash at any moment leaves the previous good checkpoint readable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oat.conditioning import Conditioning
from oat.errors import CheckpointError, OatError
from oat.state_schema import check_state, check_table

FORMAT_VERSION = 1


# --------------------------------------------------------------------------- atomic files
def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    return {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    try:
        _set_rng_state(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError):
        raise CheckpointError("the checkpoint's RNG state is malformed; it cannot be resumed exactly") from None


def _set_rng_state(state: dict) -> None:
    random.setstate(_tupled(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupled(x):
    return tuple(_tupled(v) for v in x) if isinstance(x, list) else x


# --------------------------------------------------------------------------- save
def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors needs contiguous tensors; channels_last weights are not.
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten ``optimizer.state_dict()`` into tensors (``state.<i>.<key>``) and JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(ckpt_root: Path, name: str, model, optimizer=None, state: dict | None = None,
                    keep: int = 2) -> Path:
    """Write checkpoint ``ckpt_root/name`` atomically and point ``latest`` at it.

    Args:
        ckpt_root: the run's ``checkpoints`` folder.
        name: e.g. ``epoch-0003``.
        model: a :class:`~oat.models.ConditionedNet` (unwrapped).
        optimizer: optional optimiser whose state is saved.
        state: JSON-able training state (epoch, scheduler step, config, …).
        keep: how many epoch checkpoints to keep (older ones are removed after the swap).
    """
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".{name}.", suffix=".tmp"))
    try:
        doc = {"format_version": FORMAT_VERSION, "arch": model.arch, "conditioning": model.spec.to_dict(),
               **(state or {})}
        save_file(model_tensors(model), str(tmp / "model.safetensors"), metadata={"format": "oat"})
        _write_delay()
        if optimizer is not None:
            tensors, opt_json = optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            doc["optimizer"] = opt_json
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        for f in tmp.iterdir():
            _fsync_file(f)
        fsync_dir(tmp)
        final = ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_root / "latest", name + "\n")
    _prune(ckpt_root, keep, protect=name)
    return final


def _write_delay() -> None:
    """Fault injection for the crash tests: ``OAT_CKPT_WRITE_DELAY=S`` sleeps S seconds between
    a checkpoint's files, so a test can kill the process while a checkpoint is half written."""
    delay = os.environ.get("OAT_CKPT_WRITE_DELAY")
    if delay:
        time.sleep(float(delay))


def _prune(ckpt_root: Path, keep: int, protect: str) -> None:
    epochs = sorted(p for p in ckpt_root.glob("epoch-*") if p.is_dir() and p.name != protect)
    for p in epochs[: max(0, len(epochs) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".*.tmp"):  # leftovers of a crash mid-write
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- load
def resolve_checkpoint(path) -> Path:
    """A run folder, a ``checkpoints`` folder, or a checkpoint folder → the checkpoint folder."""
    p = Path(path)
    if not p.exists():
        hint = (f"; {p} names a bundled model, which `oat pretrained {str(p).removeprefix('pretrained:')} "
                "--copy-to RUN` makes a run folder of" if str(p).startswith("pretrained:") else "")
        raise CheckpointError(f"no checkpoint or run folder at {p}{hint}")
    if p.is_file():
        if p.name in ("model.safetensors", "state.json"):
            return p.parent
        raise CheckpointError(f"{p} is not an oat checkpoint (expected a folder with model.safetensors "
                              "and state.json; pickled files are never loaded)")
    if (p / "state.json").exists() or (p / "model.safetensors").exists():
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    latest = root / "latest"
    if not latest.exists():
        raise CheckpointError(f"{p} holds no checkpoint (no {latest.relative_to(p.parent)} file)")
    ckpt = root / _latest_name(latest, root)
    if not ckpt.is_dir():
        raise CheckpointError(f"{latest} names a missing checkpoint {ckpt.name!r}")
    _check_inside(ckpt, root, "checkpoint folder")
    for f in ("model.safetensors", "optimizer.safetensors", "state.json"):
        if (ckpt / f).exists():
            _check_inside(ckpt / f, ckpt, "checkpoint file")
    return ckpt


# What ``latest`` may name: one path component, no leading dot (no "..", no hidden temp folder).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_inside(path: Path, root: Path, what: str) -> None:
    """A symlink may not lead a run's checkpoint out of its run folder (to /etc/passwd, say)."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise CheckpointError(f"{path} is a {what} that resolves outside {root}; refused")


def _latest_name(latest: Path, root: Path) -> str:
    """The checkpoint name in ``latest``, read without ever echoing the file's contents."""
    _check_inside(latest, root, "'latest' file")
    if not latest.is_file():
        raise CheckpointError(f"{latest} is not a file")
    with open(latest, "rb") as f:
        raw = f.read(257)
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if not _NAME.fullmatch(name):
        raise CheckpointError(f"{latest} does not name a checkpoint (expected one folder name such as "
                              "epoch-0003); it is damaged")
    return name


def read_state(ckpt: Path) -> dict:
    f = ckpt / "state.json"
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} lacks state.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{f} is truncated or corrupt (not valid JSON)") from None
    return check_state(doc, ckpt, FORMAT_VERSION)


def read_tensors(f: Path) -> dict[str, torch.Tensor]:
    if not f.exists():
        raise CheckpointError(f"{f.parent} lacks {f.name}")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{f} is truncated or corrupt ({str(e).splitlines()[0][:80]})") from None


def build_from_state(doc: dict, module=None):
    """Rebuild the architecture recorded in a checkpoint's state (no weights); ``module``: see :func:`load_model`."""
    from oat.models import build_model

    try:
        return build_model(doc["arch"], Conditioning.from_dict(doc["conditioning"]), module)
    except OatError as e:
        raise CheckpointError(f"checkpoint describes a model this oat cannot build: {e}") from None
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint state is malformed ({e})") from None


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where) -> None:
    """Load tensors into ``model``, refusing any mismatch in names or shapes with one line."""
    if getattr(model, "spec", None) is not None:
        check_table(tensors, len(model.spec.lams), where)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
    if missing or unexpected or bad:
        first = (missing or unexpected or bad)[0]
        raise CheckpointError(f"{where} holds weights of another architecture or conditioning spec "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} "
                              f"mis-shaped tensors; first: {first})")
    model.load_state_dict(tensors)


def load_model(path, device="cpu", *, module=None):
    """Load a model from a run folder or a checkpoint folder, in eval mode.

    A network converted with :func:`oat.convert` (``oat train --model-file``) is rebuilt from the
    Python source its checkpoint records: loading it **runs that file's code** (the user's own
    network file, copied into the run; load only runs you trust).

    Args:
        path: run folder (its newest checkpoint) or checkpoint folder; or the string
            ``"pretrained:NAME"``, a model shipped in the package (``oat pretrained`` lists them).
        device: where to put the model.
        module: for a converted network only: the ``nn.Module`` (an instance, or a factory
            returning one) to convert instead of running the recorded source; needed when the
            network was converted from an instance. It must have the checkpoint's layers (names
            and shapes are checked).

    Returns:
        The :class:`~oat.models.ConditionedNet` with its weights, in eval mode.
    """
    if isinstance(path, str) and path.startswith("pretrained:"):  # a str only: a Path is always a folder
        from oat.pretrained import load_pretrained

        return load_pretrained(path.removeprefix("pretrained:"), device)
    ckpt = resolve_checkpoint(path)
    doc = read_state(ckpt)
    model = build_from_state(doc, module)
    load_weights(model, read_tensors(ckpt / "model.safetensors"), ckpt)
    model.checkpoint_state = doc
    return model.to(device).eval()


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt: Path, doc: dict) -> None:
    tensors = read_tensors(ckpt / "optimizer.safetensors")
    opt = doc.get("optimizer") or {}
    state: dict = {}
    try:
        for key, v in tensors.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
        for key, v in opt.get("scalars", {}).items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        # str(e) of a KeyError is the key: a name from the file, short, never its contents
        raise CheckpointError(f"{ckpt} optimiser state is malformed or does not fit this model "
                              f"({type(e).__name__}: {str(e)[:80]})") from None
