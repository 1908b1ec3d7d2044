"""Small pretrained models shipped in the package: ``oat.load("pretrained:NAME")``, ``oat pretrained``.

Each model is a folder under ``oat/pretrained/models/`` holding a checkpoint as training writes
it (``model.safetensors``, and a ``state.json`` stripped to what inference needs: architecture,
conditioning spec, resolved config, ε), the evaluation rows the trade-off benchmark measured for
it (``results.json``) and a manifest (``model.json``: what it is, the command that trained it, the
commit, SA/RA per λ, and the SHA-256 of every file, checked before anything is read).
``index.json`` lists the names in order. ``benchmarks/package_pretrained.py`` writes the folder;
nothing else does. ``OAT_PRETRAINED_DIR`` (or ``root=``) points at another folder of that layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from oat.errors import CheckpointError, ConfigError, RunFolderError

ENV = "OAT_PRETRAINED_DIR"
INDEX, MANIFEST = "index.json", "model.json"
INDEX_FORMAT, MANIFEST_FORMAT, FORMAT_VERSION = "oat-pretrained", "oat-pretrained-model", 1
FILES = ("model.safetensors", "state.json", "results.json")
# A model's name and its checkpoint's name: one path component, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REINSTALL = "reinstall oat-torch (or rebuild the folder with benchmarks/package_pretrained.py)"


def default_root() -> Path:
    """The package's own folder of pretrained models."""
    return Path(str(resources.files("oat.pretrained") / "models"))


def pretrained_root(root=None) -> Path:
    """``root``, else ``$OAT_PRETRAINED_DIR``, else the package's folder."""
    if root is not None:
        return Path(root)
    return Path(os.environ[ENV]) if os.environ.get(ENV) else default_root()


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"pretrained models: {path} is missing; {_REINSTALL}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"pretrained models: {path} is unreadable or not valid JSON; {_REINSTALL}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"pretrained models: {path} is not {what}; {_REINSTALL}")
    return doc


def names(root=None) -> list[str]:
    """The names of the pretrained models, in the index's order."""
    r = pretrained_root(root)
    doc = _read_json(r / INDEX, "an index of pretrained models")
    found = doc.get("models")
    if doc.get("format") != INDEX_FORMAT or not isinstance(found, list) or not all(
            isinstance(n, str) and _NAME.fullmatch(n) for n in found):
        raise CheckpointError(f"pretrained models: {r / INDEX} is not an index of pretrained models; {_REINSTALL}")
    return found


def manifest(name: str, root=None) -> dict:
    """The manifest (``model.json``) of pretrained model ``name``; unknown names are refused in one line."""
    r = pretrained_root(root)
    known = names(r)
    if name not in known:
        raise ConfigError(f"unknown pretrained model {name!r}; available: {', '.join(known) or 'none'}")
    doc = _read_json(r / name / MANIFEST, "a pretrained model's manifest")
    files = doc.get("files")
    if (doc.get("format") != MANIFEST_FORMAT or doc.get("name") != name or not isinstance(files, dict)
            or not all(isinstance(files.get(f), dict) for f in FILES)
            or not _NAME.fullmatch(str(doc.get("checkpoint", "")))):
        raise CheckpointError(f"pretrained model {name!r}: {r / name / MANIFEST} is malformed; {_REINSTALL}")
    return doc


def list_pretrained(root=None) -> list[dict]:
    """Every pretrained model's manifest, in the index's order."""
    r = pretrained_root(root)
    return [manifest(n, r) for n in names(r)]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_folder(name: str, root=None) -> Path:
    """The folder of pretrained model ``name`` once each of its files matches the manifest's SHA-256."""
    r = pretrained_root(root)
    doc = manifest(name, r)
    folder = r / name
    for fname in FILES:
        path = folder / fname
        if not path.is_file():
            raise CheckpointError(f"pretrained model {name!r}: {fname} is missing from {folder}; {_REINSTALL}")
        if not path.resolve().is_relative_to(folder.resolve()):
            raise CheckpointError(f"pretrained model {name!r}: {path} resolves outside {folder}; refused")
        if file_sha256(path) != doc["files"][fname].get("sha256"):
            raise CheckpointError(f"pretrained model {name!r}: {path} does not match the SHA-256 in its manifest "
                                  f"(a damaged or altered copy); {_REINSTALL}")
    return folder


def load_pretrained(name: str, device="cpu", root=None):
    """Pretrained model ``name`` (files verified first), in eval mode, as ``oat.load`` returns a run's."""
    from oat.checkpoint import load_model

    return load_model(verified_folder(name, root), device)


def copy_to(name: str, out, root=None, log=print) -> Path:
    """Write pretrained model ``name`` as a new run folder ``out`` (for ``oat evaluate``/``report``/``export``).

    ``out`` must not exist or be an empty folder: nothing is ever overwritten. The run is
    assembled in a hidden sibling and renamed into place, so it appears whole or not at all.
    """
    from oat.rundir import write_marker

    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise RunFolderError(f"{out} exists and is not an empty folder; --copy-to writes a new run folder")
    r = pretrained_root(root)
    src, doc = verified_folder(name, r), manifest(name, r)
    state = _read_json(src / "state.json", "a checkpoint state")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        ckpt = tmp / "checkpoints" / doc["checkpoint"]
        ckpt.mkdir(parents=True)
        for fname in ("model.safetensors", "state.json"):
            shutil.copyfile(src / fname, ckpt / fname)
        (tmp / "checkpoints" / "latest").write_text(doc["checkpoint"] + "\n")
        shutil.copyfile(src / "results.json", tmp / "results.json")
        shutil.copyfile(src / MANIFEST, tmp / "pretrained.json")
        meta = {"config": state.get("config", {}), "eps": state.get("eps"),
                "pretrained": {"name": name, "sha256": doc["files"]["model.safetensors"]["sha256"],
                               "commit": doc.get("commit"), "command": doc.get("command")}}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
        write_marker(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # as mkdir would have made it, not mkdtemp's 0700
        os.rename(tmp, out)  # onto an empty folder, or a new name; fails if out filled up meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"pretrained model {name!r} → {out} (a run folder: oat evaluate, oat report, oat export take it)")
    return out
