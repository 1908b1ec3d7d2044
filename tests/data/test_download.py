"""Downloads against a local HTTP server: verified files land in place, bad ones leave nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from data_fakes import make_tar_gz, write_cifar10, write_idx_set

from oat.data import download as dl
from oat.data import load_data
from oat.errors import DataError


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves ``tmp_path/served`` on 127.0.0.1 and points OAT_DATA_MIRROR at it; stops at the end."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("OAT_DATA_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setattr(dl, "TIMEOUT_S", 5)
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def patch_checksums(monkeypatch, name: str, served: Path) -> None:
    """Replaces the published checksums of ``name`` by those of the generated files."""
    patched = tuple(replace(r, md5=md5(served / r.filename)) for r in dl.RESOURCES[name])
    monkeypatch.setitem(dl.RESOURCES, name, patched)


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".oat-*")]


def test_cifar10_tarball_download(server, tmp_path, monkeypatch):
    make_tar_gz(write_cifar10(tmp_path / "src"), server / "cifar-10-python.tar.gz")
    patch_checksums(monkeypatch, "cifar10", server)
    root = tmp_path / "data"
    s = load_data("cifar10", root, download=True, val_size=10)
    assert (len(s.train), len(s.test)) == (50, 10)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not leftovers(root) and not (root / "cifar-10-python.tar.gz").exists()
    (server / "cifar-10-python.tar.gz").unlink()  # present files are not fetched again
    load_data("cifar10", root, download=True, val_size=10)


def test_mnist_gz_download(server, tmp_path, monkeypatch):
    write_idx_set(server)
    patch_checksums(monkeypatch, "mnist", server)
    s = load_data("mnist", tmp_path / "data", download=True, val_size=5)
    assert (len(s.train), len(s.val), len(s.test)) == (25, 5, 10)
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    write_idx_set(server)
    patch_checksums(monkeypatch, "mnist", server)
    (server / "t10k-images-idx3-ubyte.gz").write_bytes(b"corrupted in transit")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz has MD5 .* expected .*corrupt download"):
        load_data("mnist", root, download=True, val_size=5)
    assert not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert not leftovers(root)


def test_corrupt_archive_leaves_nothing(server, tmp_path, monkeypatch):
    (server / "cifar-10-python.tar.gz").write_bytes(b"not a tarball at all")
    patch_checksums(monkeypatch, "cifar10", server)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="cannot unpack"):
        load_data("cifar10", root, download=True)
    assert not leftovers(root) and not (root / "cifar-10-batches-py").exists()


def test_offline_failure_says_where_to_put_files(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(
        DataError, match=r"download of .*train_32x32.mat failed .* put it at .*svhn/train_32x32.mat"
    ):
        load_data("svhn", root, download=True)
    assert not leftovers(root)


def test_mirror_table_used_without_env(monkeypatch):
    monkeypatch.delenv("OAT_DATA_MIRROR", raising=False)
    assert (
        dl.url_for("cifar10", dl.RESOURCES["cifar10"][0])
        == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
