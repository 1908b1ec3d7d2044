"""Fetching the official files of a data set, checksum-verified, leaving nothing half-written.

Each file is streamed to a hidden temporary file in the target folder while its MD5 is
computed; only a file whose checksum matches the one the data set publishes is renamed
into place (``os.replace``, atomic on one file system) or, for an archive, extracted
into a temporary folder whose top-level entries are then renamed into place. Any
failure, interruption included, deletes the temporary files.

Base URLs come from ``MIRRORS``; the environment variable ``OAT_DATA_MIRROR`` replaces
every base URL (file names are appended to it), for mirrors and for tests that serve
files from a local HTTP server.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from oat.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Resource:
    """One file to fetch.

    Attributes:
        filename: Name of the file at the base URL.
        md5: Checksum published for the file.
        target: Path, relative to the data root, that exists once the file is in place
            (the file itself, or for an archive the folder it unpacks to).
        archive: Whether the file is a .tar.gz to unpack into the data root.
    """

    filename: str
    md5: str
    target: str
    archive: bool = False


MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    "svhn": "http://ufldl.stanford.edu/housenumbers/",
    "stl10": "http://ai.stanford.edu/~acoates/stl10/",
}


def _idx(folder: str, md5s: tuple[str, str, str, str]) -> tuple[Resource, ...]:
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    return tuple(Resource(n, m, f"{folder}/{n}") for n, m in zip(names, md5s))


# MD5 checksums as published by each data set's authors.
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": _idx(
        "mnist",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fashion-mnist": _idx(
        "fashion-mnist",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    "cifar10": (
        Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py", True),
    ),
    "cifar100": (
        Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", True),
    ),
    "svhn": (
        Resource("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", "svhn/train_32x32.mat"),
        Resource("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", "svhn/test_32x32.mat"),
    ),
    "stl10": (Resource("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb", "stl10_binary", True),),
}


def url_for(name: str, resource: Resource) -> str:
    """Returns the URL of ``resource``: ``$OAT_DATA_MIRROR`` or ``MIRRORS[name]``, plus the file name."""
    base = os.environ.get("OAT_DATA_MIRROR") or MIRRORS[name]
    return base.rstrip("/") + "/" + resource.filename


def download(name: str, root: str | os.PathLike) -> None:
    """Fetches every official file of data set ``name`` into ``root`` that is not there yet.

    Args:
        name: A key of ``RESOURCES``.
        root: Data root; created if missing.

    Raises:
        DataError: If a download fails or a checksum does not match; nothing is left behind.
    """
    if name not in RESOURCES:
        raise DataError(
            f"{name}: nothing to download (bundled or unknown); downloadable: {', '.join(RESOURCES)}"
        )
    root = Path(root).expanduser()
    for resource in RESOURCES[name]:
        target = root / resource.target
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = fetch_verified(url_for(name, resource), resource.md5, target.parent, name, target)
        try:
            if resource.archive:
                extract_tar(part, root, name)
                if not target.exists():
                    raise DataError(
                        f"{name}: {resource.filename} did not contain {resource.target}; wrong archive?"
                    )
            else:
                os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)


def fetch_verified(url: str, md5: str, folder: Path, name: str, target: Path) -> Path:
    """Streams ``url`` into a temporary file in ``folder`` and returns it once its MD5 matches.

    The temporary file is deleted on any failure, so an interrupted or corrupt download
    leaves nothing behind.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".oat-download-", suffix=".part")
    tmp_path = Path(tmp)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp_path.unlink(missing_ok=True)
        raise DataError(
            f"{name}: download of {url} failed ({exc}); fetch it by hand and put it at {target}"
        ) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != md5:
        tmp_path.unlink(missing_ok=True)
        raise DataError(
            f"{name}: {url} has MD5 {digest.hexdigest()}, expected {md5}; corrupt download, removed"
        )
    return tmp_path


def extract_tar(archive: Path, root: Path, name: str) -> None:
    """Unpacks a .tar.gz into a temporary folder in ``root``, then renames its top-level entries into place.

    Members with absolute paths, ``..`` or anything other than plain files and folders
    are refused: an archive must not write outside ``root``.
    """
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".oat-extract-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                    raise DataError(f"{name}: archive {archive.name} has unsafe member {m.name!r}; refused")
            try:
                tar.extractall(staging, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members already checked
                tar.extractall(staging, members=members)
        for entry in staging.iterdir():
            os.replace(entry, root / entry.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{name}: cannot unpack {archive.name} ({exc}); corrupt archive?") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
