"""The run folder's life: recognise a run, refuse what is not one, replace one safely.

A run folder is recognised by its marker ``RUN/oat-run.json`` (written when the run is
created), or, for runs written before the marker existed, by a ``config.json`` beside a
``checkpoints/latest`` naming a readable checkpoint. ``--overwrite`` replaces only such a
folder: the old run is renamed to a hidden sibling (``.NAME.oat-replaced-PID``), the new run
is created, and the old one is deleted only once the new run's first checkpoint is written;
if training fails before that, the new folder is removed and the old run put back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

from oat.env import package_version
from oat.errors import OatError, RunFolderError
from oat.runlock import LOCK_NAME, lock_held, run_lock, swap_lock

MARKER = "oat-run.json"
MARKER_FORMAT = 1
# Files and folders an oat run writes; a folder holding any of them is not a plain empty target.
OWN_NAMES = (MARKER, "config.json", "log.jsonl", "checkpoints", "results.json", "report.md", "report.html",
             "eval")


def write_marker(out: Path) -> None:
    from oat.checkpoint import atomic_write_text

    doc = {"format": "oat-run", "format_version": MARKER_FORMAT, "oat_version": package_version(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(out / MARKER, json.dumps(doc, indent=1) + "\n")


def has_marker(out: Path) -> bool:
    try:
        doc = json.loads((out / MARKER).read_text()[:10_000])
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == "oat-run"


def is_legacy_run(out: Path) -> bool:
    """A run written before the marker: config.json + a readable newest checkpoint."""
    from oat.checkpoint import read_state, resolve_checkpoint

    if not (out / "config.json").is_file() or not (out / "checkpoints" / "latest").is_file():
        return False
    try:
        read_state(resolve_checkpoint(out))
        return isinstance(json.loads((out / "config.json").read_text()).get("config"), dict)
    except (OatError, OSError, ValueError, AttributeError):
        return False


def is_run(out: Path) -> bool:
    return out.is_dir() and (has_marker(out) or is_legacy_run(out))


def has_run(out: Path) -> bool:
    """Whether ``out`` holds anything an oat run writes (a run, or the remains of one)."""
    return any((out / name).exists() for name in (MARKER, "config.json", "checkpoints"))


def _is_cwd_or_above(out: Path) -> bool:
    cwd, target = Path.cwd().resolve(), out.resolve()
    return target == cwd or target in cwd.parents


def inspect_run_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Check ``out`` without changing anything; returns True when an existing run is to be resumed."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder")
    if overwrite and not resume:
        _check_replaceable(out)
    if is_run(out) or (resume and (out / "config.json").is_file()):
        if resume:
            return True
        if not overwrite:
            raise RunFolderError(f"{out} already holds a training run; pass --resume to continue it or "
                                 "--overwrite to replace it")
    elif resume:
        raise RunFolderError(f"--resume: {out} holds no run to resume")
    elif has_run(out):
        raise RunFolderError(f"{out} holds oat files ({', '.join(_own(out))}) but no recognisable run (no "
                             f"{MARKER}, no readable checkpoint); choose another --out or move them away")
    return False


def _own(out: Path) -> list[str]:
    return [n for n in OWN_NAMES if (out / n).exists()]


def _check_replaceable(out: Path) -> None:
    """--overwrite replaces an oat run and nothing else; said before anything changes."""
    if not out.exists():
        return
    if _is_cwd_or_above(out):
        raise RunFolderError(f"--overwrite will not replace {out}, the current folder or one above it; "
                             "give the run folder's own path")
    if out.is_symlink():
        raise RunFolderError(f"--overwrite will not replace {out}: it is a symbolic link")
    if is_run(out) or not any(p.name != LOCK_NAME for p in out.iterdir()):
        return
    raise RunFolderError(f"--overwrite replaces only an oat run, and {out} is not one (no {MARKER}, no "
                         "readable checkpoint) but is not empty; nothing was changed")


def leftovers(out: Path) -> list[Path]:
    """Old runs that an ``--overwrite`` killed before the new run's first checkpoint left aside."""
    return sorted(out.parent.glob(f".{out.name}.oat-replaced-*")) if out.parent.is_dir() else []


def _free_sibling(out: Path) -> Path:
    # Never reuse a name: a leftover may be the only copy of a run (pids are reused).
    for n in range(1000):
        aside = out.with_name(f".{out.name}.oat-replaced-{os.getpid()}" + (f"-{n}" if n else ""))
        if not os.path.lexists(aside):
            return aside
    raise RunFolderError(f"--overwrite: too many set-aside runs beside {out}; delete the .{out.name}.oat-replaced-* "
                         "folders")


class RunDirSession:
    """The run folder of one ``train`` call: its lock, and a pending replacement of an old run."""

    def __init__(self, out: Path, active: bool, log=print):
        self.out, self.active, self.log = Path(out), active, log
        self.aside: Path | None = None
        self._stack = ExitStack()

    def __enter__(self):
        if self.active:
            self._stack.enter_context(run_lock(self.out, "oat train"))
            _SESSIONS[os.path.realpath(self.out)] = self
        return self

    def create(self, overwrite: bool) -> None:
        """Create the run folder (moving an old run aside if ``overwrite``) and write the marker."""
        out = self.out
        for old in leftovers(out):
            self.log(f"note: {old} holds a run an interrupted --overwrite set aside; delete it if unneeded")
        if overwrite and is_run(out):
            self.aside = _free_sibling(out)
            os.rename(out, self.aside)
            self.log(f"--overwrite: the old run is set aside as {self.aside.name} and deleted once the new "
                     "run's first checkpoint is written")
        # exist_ok only when nothing was moved: a folder that appeared since is not ours to replace.
        out.mkdir(parents=True, exist_ok=self.aside is None)
        if self.active:
            if self.aside is not None and lock_held(out):
                swap_lock(out, self.aside)
            elif not lock_held(out):
                self._stack.enter_context(run_lock(out, "oat train"))
        write_marker(out)

    def resumed(self) -> None:
        if not has_marker(self.out):  # a run from before the marker: mark it now
            write_marker(self.out)

    def checkpoint_written(self) -> None:
        if self.aside is not None:
            shutil.rmtree(self.aside)
            self.aside = None
            self.log("--overwrite: the new run has its first checkpoint; the old run is deleted")

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.aside is not None:
                self._restore()
        finally:
            _SESSIONS.pop(os.path.realpath(self.out), None)
            self._stack.close()
        return False

    def _restore(self) -> None:
        """Training failed before the new run's first checkpoint: put the old run back."""
        aside, self.aside = self.aside, None
        try:
            shutil.rmtree(self.out, ignore_errors=True)  # only the new run's own files are in it
            os.rename(aside, self.out)
        except OSError as e:  # say where the old run is rather than hide the training error
            self.log(f"--overwrite: the new run failed and the old run could not be put back ({e.strerror}); "
                     f"it is kept in {aside}")
            return
        if self.active and lock_held(self.out):
            swap_lock(self.out, self.out.with_name(self.out.name + ".removed"))
        self.log(f"--overwrite: the new run failed before its first checkpoint; the old run is back in {self.out}")


# realpath of a run folder -> the session training into it (one per folder per process).
_SESSIONS: dict[str, RunDirSession] = {}


def session_of(out: Path) -> RunDirSession | None:
    return _SESSIONS.get(os.path.realpath(out))


def create_run_dir(out: Path, overwrite: bool, log=print) -> None:
    """Create ``out`` (replacing a run there when ``overwrite``): called once the inputs are known good.

    Inside ``train`` the old run is deleted after the new run's first checkpoint; called on
    its own (no session), the replacement is immediate.
    """
    session = session_of(out)
    if session is not None:
        session.create(overwrite)
        return
    standalone = RunDirSession(out, active=False, log=log)
    standalone.create(overwrite)
    standalone.checkpoint_written()


def checkpoint_written(out: Path) -> None:
    session = session_of(out)
    if session is not None:
        session.checkpoint_written()


