"""The CIFAR unpickler bounds its work: small crafted pickles that would allocate gigabytes,
expand shared references exponentially or nest without end are refused in one DataError
line, fast, before they grow; official batches (Python 2's and numpy's own) still load.

Each malicious file is read in a forked child with its address space capped and an alarm
set, so a guard that fails ends the child, never the test run or the machine.
"""

import os
import pickle
import resource
import signal
import struct
import time

import numpy as np
import pytest

from oat.data.cifar import read_batch
from oat.errors import DataError

LIMIT = 512 << 20  # bytes of address space a child may add


def guarded(path, label_key=b"labels", timeout=10):
    """``read_batch(path)`` in a forked child: ``(outcome, message, rss growth in bytes, seconds)``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            vsz = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (vsz + LIMIT, vsz + LIMIT))
            signal.alarm(timeout)
            rss0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
            try:
                read_batch(path, label_key, "cifar10")
                out = "ok|"
            except BaseException as exc:
                out = f"{type(exc).__name__}|{exc}"
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
            os.write(w, f"{grown}|{time.perf_counter() - t0:.3f}|{out}".encode()[:8000])
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert text, f"the child died (status {status}): the guard did not stop the file"
    grown, secs, kind, msg = text.split("|", 3)
    return kind, msg, int(grown), float(secs)


def refused(tmp_path, blob: bytes, *words):
    path = tmp_path / "test_batch"
    path.write_bytes(blob)
    kind, msg, grown, secs = guarded(path)
    assert kind == "DataError", f"{kind}: {msg}"
    assert "\n" not in msg and "MemoryError" not in msg, msg
    assert all(w in msg for w in words), msg
    assert grown < 64 << 20 and secs < 2.0, (grown, secs)
    return msg


def _batch(value_ops: bytes) -> bytes:
    """A protocol-2 pickle of ``{b"data": V, b"labels": V}`` where the ops leave V on the stack
    (memo 0 holds V; the ops may use memo slots 1-250)."""
    return (b"\x80\x02}(" + b"C\x04data" + value_ops + b"q\x00" + b"C\x06labels" + b"h\x00" + b"u.")


def exponential_lists(levels: int, dup: bool) -> bytes:
    """l0 = [0]; l(k+1) = [lk, lk]: 2**levels ints once expanded, ~8 bytes per level."""
    ops = b"]K\x00aq\x01"
    for k in range(1, levels + 1):
        get = bytes([ord("h"), k])
        ops += b"](" + (get + b"2" if dup else get + get) + b"e" + bytes([ord("q"), k + 1])
    return _batch(ops)


def test_exponential_shared_lists_are_refused(tmp_path):
    for dup in (False, True):
        blob = exponential_lists(30, dup)
        assert len(blob) < 400
        refused(tmp_path, blob, "expand")


def test_a_deep_nesting_is_refused(tmp_path):
    depth = 100_000
    refused(tmp_path, _batch(b"(" * depth + b"l" * depth), "deeper")


def test_growing_a_list_after_sharing_it_is_refused(tmp_path):
    # Share an empty list 64 times over (within budget), then fill it: every share grows at once.
    ops = b"]q\x01"
    for k in range(1, 7):
        ops += b"](" + bytes([ord("h"), k]) * 2 + b"e" + bytes([ord("q"), k + 1])
    ops += b"h\x01(" + b"K\x01" * 50 + b"e0" + b"h\x07"
    refused(tmp_path, _batch(ops), "modified after it was used")


def test_a_list_holding_itself_is_refused(tmp_path):
    refused(tmp_path, _batch(b"]q\x01h\x01h\x01a"), "holds itself")


def test_a_huge_declared_array_is_refused_without_allocating(tmp_path):
    # _reconstruct(ndarray, (2**33,), b"b"): numpy would allocate 8 GB before looking at the data.
    recon = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + b"\x8a\x05" + (2**33).to_bytes(5, "little")
    recon += b"\x85C\x01b\x87R"
    state = b"(K\x01\x8a\x05" + (2**33).to_bytes(5, "little") + b"\x85cnumpy\ndtype\nC\x02u1\x89\x88\x87R"
    state += b"(K\x03C\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x00tb"
    refused(tmp_path, b"\x80\x03}(C\x04data" + recon + state + b"C\x06labels]u.", "bytes")


def test_a_subarray_dtype_is_refused(tmp_path):
    dtype = b"cnumpy\ndtype\n(C\x02u1\x8a\x04\x00\xca\x9a\x3b\x85t\x85R"  # dtype(("u1", (10**9,)))
    refused(tmp_path, b"\x80\x03}(C\x04data" + dtype + b"C\x06labels]u.", "not allowed")


def test_keys_and_labels_outside_the_official_structure_are_refused(tmp_path):
    data = np.zeros((2, 3072), np.uint8)
    for batch, words in (({b"data": data, b"labels": [0, 1], b"extra": 1}, ("extra",)),
                         ({b"data": data, b"labels": [[0], [1]]}, ("integer labels",)),
                         ({b"data": data, b"labels": [0, -1]}, ("integer labels",)),
                         ({b"data": data, b"labels": [0, 1, 2]}, ("list of 2 labels",)),
                         ({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, ("expected uint8",))):
        refused(tmp_path, pickle.dumps(batch, protocol=2), *words)


def py2_batch(n: int) -> bytes:
    """An official-style batch as Python 2's cPickle wrote it (protocol 2, BINSTRING data)."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (n, 3072), dtype=np.uint8).tobytes()
    labels = b"](" + b"".join(b"K" + bytes([i % 10]) for i in range(n)) + b"e"
    names = b"](" + b"".join(b"U\x06f%d.png" % (i % 10) for i in range(n)) + b"e"
    array = (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R"
             b"(K\x01M" + struct.pack("<H", n) + b"M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
             b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(raw)) + raw
             + b"tb")
    return (b"\x80\x02}q\x00(U\x0bbatch_labelU\x12training batch 1/5U\x06labels" + labels + b"U\x04data" + array
            + b"U\x09filenames" + names + b"u.")


@pytest.mark.parametrize("protocol", [None, 2, 3, 4, 5])
def test_official_batches_still_load(tmp_path, protocol):
    n = 300
    path = tmp_path / "batch"
    if protocol is None:
        path.write_bytes(py2_batch(n))
        raw = np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)
    else:
        raw = np.random.default_rng(1).integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {b"batch_label": b"x", b"data": raw, b"labels": [i % 10 for i in range(n)],
                 b"filenames": [b"f%d.png" % i for i in range(n)]}
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = read_batch(path, b"labels", "cifar10")
    assert np.array_equal(images.reshape(n, 3072), raw) and labels.tolist() == [i % 10 for i in range(n)]
    kind, msg, grown, secs = guarded(path)
    assert kind == "ok", msg


def test_a_refusal_is_one_data_error_line(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(exponential_lists(30, True))
    with pytest.raises(DataError) as info:
        read_batch(path, b"labels", "cifar10")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
