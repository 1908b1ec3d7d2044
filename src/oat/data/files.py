"""Locating a data set's files under a user-given root, and reading them with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

from oat.errors import DataError


def find_dir(root: str | os.PathLike, subdirs: tuple[str, ...], required: tuple[str, ...], what: str) -> Path:
    """Returns the folder holding all of ``required``: ``root`` itself or ``root/<subdir>``.

    Users point ``--data-dir`` either at the data set's own folder or at its parent;
    both work.

    Args:
        root: Folder given by the user.
        subdirs: Names of the data set's folder, tried below ``root``.
        required: File names that must all be present. A name ending in ``.gz`` also
            matches the uncompressed file, and the other way round.
        what: Data set name, for the error message.

    Raises:
        DataError: If ``root`` is missing or no candidate folder holds every file.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{what}: data directory {root} does not exist; expected it to contain {', '.join(required)}"
        )
    for candidate in (root, *(root / s for s in subdirs)):
        if all(resolve_file(candidate, name) is not None for name in required):
            return candidate
    places = " or ".join(str(p) for p in (root, *(root / s for s in subdirs)))
    raise DataError(f"{what}: expected files {', '.join(required)} in {places}; not all found")


def resolve_file(folder: Path, name: str) -> Path | None:
    """Returns ``folder/name``, or its gzipped/plain twin, or None if neither exists."""
    twin = name[:-3] if name.endswith(".gz") else name + ".gz"
    for candidate in (folder / name, folder / twin):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path, what: str) -> bytes:
    """Reads a whole file, gunzipping it if it is gzipped, with a DataError on failure.

    Compression is detected from the content (gzip magic ``1f 8b``), not the name, so a
    file gunzipped in place but not renamed still reads.
    """
    import gzip
    import zlib

    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        return data
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{what}: cannot read {path} ({exc.__class__.__name__}: {exc}); truncated or corrupt?"
        ) from exc
