"""The dataset download layer: mirrors, checksums, IDX / CIFAR-10 parsing, safe tar, cache errors.

No internet: files are served by a local http.server on 127.0.0.1, and the real checksum tables are
replaced by tables of tiny fake files (the dataset classes take their file table as an argument).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fwbench import builtin
from fwbench.datasets import cache, cifar, download, idx, remote
from fwbench.datasets.base import Dataset
from fwbench.datasets.download import RemoteFile
from fwbench.errors import DatasetError
from fwbench.registry import Registry

ALTERNATIVES = "--dataset mnist_5k or --dataset digits"
HTML_PAGE = b"<html><body><h1>Welcome</h1>This file has moved.</body></html>"


# -- a loopback HTTP server ------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("User-Agent", "")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        status, body, ctype, send_length = route
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def http(server, monkeypatch):
    """The server with fresh routes; proxies off so requests go straight to loopback."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server.routes.clear()
    server.requests.clear()
    return server


def serve(server, path: str, body: bytes, *, status: int = 200,
          ctype: str = "application/octet-stream", send_length: bool = True) -> None:
    server.routes[path] = (status, body, ctype, send_length)


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


def remote_file(name: str, body: bytes) -> RemoteFile:
    return RemoteFile(name, len(body), hashlib.sha256(body).hexdigest())


def no_partial_files(folder: Path) -> bool:
    return not list(folder.glob("*.part")) and not list(folder.glob(".extract-*"))


# -- fake data -------------------------------------------------------------------------------------
def fake_mnist(n_train: int = 6, n_test: int = 4, seed: int = 0):
    """(IdxFiles table, {name: gz bytes}, (x_train, y_train, x_test, y_test)) of tiny IDX files."""
    rng = np.random.default_rng(seed)
    arrays = (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8))
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    bodies = {name: gzip.compress(idx.encode_idx(a), mtime=0) for name, a in zip(names, arrays)}
    table = remote.IdxFiles(*(remote_file(name, bodies[name]) for name in names))
    return table, bodies, arrays


CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_batch(records: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 256, (records, cifar.RECORD_BYTES), dtype=np.uint8)
    table[:, 0] = rng.integers(0, 10, records)
    return table.tobytes()


def make_tar(entries) -> bytes:
    """A .tar.gz from ``(name, bytes | None, type)``; None makes a directory, type a link kind."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif kind is not None:
                info.type, info.linkname = kind, data.decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fake_cifar_members(records: int = 2) -> dict[str, bytes]:
    members = {name: cifar_batch(records, i) for i, name in
               enumerate((*cifar.TRAIN_BATCHES, cifar.TEST_BATCH))}
    members[cifar.META] = ("\n".join(CIFAR_NAMES) + "\n\n").encode()
    return members


def fake_cifar_tar(records: int = 2) -> tuple[bytes, dict[str, bytes]]:
    members = fake_cifar_members(records)
    entries = [(cifar.ARCHIVE_DIR, None, None)]
    entries += [(f"{cifar.ARCHIVE_DIR}/{name}", data, None) for name, data in members.items()]
    entries += [(f"{cifar.ARCHIVE_DIR}/readme.html", b"<html>readme</html>", None)]
    return make_tar(entries), members


# -- download: mirrors, checksums, errors ---------------------------------------------------------
def test_first_mirror_404_falls_back_to_second(http, tmp_path):
    body = b"real file contents" * 100
    serve(http, "/good/data.bin", body)
    file = remote_file("data.bin", body)
    path = download.download(file, [f"{http.url}/missing/", f"{http.url}/good/"], tmp_path,
                             dataset="toy", progress=False)
    assert path == tmp_path / "data.bin" and path.read_bytes() == body
    assert [p for p, _ in http.requests] == ["/missing/data.bin", "/good/data.bin"]
    assert all(agent.startswith("fwbench/") for _, agent in http.requests)
    assert no_partial_files(tmp_path)


@pytest.mark.parametrize("send_length", [True, False])
def test_html_page_with_status_200_counts_as_a_failed_mirror(http, tmp_path, send_length):
    body = bytes(range(256)) * 40
    serve(http, "/html/data.bin", HTML_PAGE, ctype="text/html; charset=utf-8", send_length=send_length)
    serve(http, "/good/data.bin", body)
    file = remote_file("data.bin", body)
    download.download(file, [f"{http.url}/html/", f"{http.url}/good/"], tmp_path, dataset="toy",
                      progress=False)
    assert (tmp_path / "data.bin").read_bytes() == body
    assert no_partial_files(tmp_path)


def test_same_size_wrong_content_is_a_checksum_failure(http, tmp_path):
    body = b"A" * 1000
    serve(http, "/bad/data.bin", b"B" * 1000)
    file = remote_file("data.bin", body)
    with pytest.raises(DatasetError, match=r"/bad/ \(sha256 mismatch\)"):
        download.download(file, [f"{http.url}/bad/"], tmp_path, dataset="toy", progress=False)
    assert not (tmp_path / "data.bin").exists() and no_partial_files(tmp_path)


def test_all_mirrors_failing_is_one_line_naming_file_reasons_folder_and_alternatives(http, tmp_path):
    serve(http, "/html/train.gz", HTML_PAGE, ctype="text/html")
    file = RemoteFile("train.gz", 5000, "0" * 64)
    dead = closed_port_url()
    mirrors = [f"{http.url}/missing/", f"{http.url}/html/", dead, "ftp://example.invalid/"]
    with pytest.raises(DatasetError) as info:
        download.download(file, mirrors, tmp_path / "toy", dataset="toy", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download train.gz for dataset 'toy': ")
    assert f"{http.url}/missing/ (HTTP 404)" in message
    assert f"{http.url}/html/ (serves {len(HTML_PAGE)} bytes of text/html, expected 5,000)" in message
    assert f"{dead} (Connection refused)" in message
    assert "ftp://example.invalid/ (unsupported URL scheme 'ftp'" in message
    assert f"in {tmp_path / 'toy'} by hand" in message
    assert "FWBENCH_MIRRORS_TOY" in message
    assert message.endswith("--dataset synthetic to measure throughput only)") and ALTERNATIVES in message
    assert no_partial_files(tmp_path / "toy")


def test_silent_server_times_out_and_next_mirror_is_used(http, tmp_path):
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        body = b"payload" * 50
        serve(http, "/good/x.bin", body)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        download.download(remote_file("x.bin", body), [url, f"{http.url}/good/"], tmp_path,
                          dataset="toy", progress=False, timeout=0.3)
        assert (tmp_path / "x.bin").read_bytes() == body
        with pytest.raises(DatasetError, match=r"/ \(timed out after 0\.3 s\)"):
            download.download(remote_file("y.bin", body), [url], tmp_path, dataset="toy",
                              progress=False, timeout=0.3)
    finally:
        silent.close()


def test_mirrors_env_override(monkeypatch):
    monkeypatch.delenv("FWBENCH_MIRRORS_FASHION_MNIST", raising=False)
    assert download.resolve_mirrors("fashion_mnist", ("https://a/x/",)) == ("https://a/x/",)
    monkeypatch.setenv("FWBENCH_MIRRORS_FASHION_MNIST", "http://127.0.0.1:8000, file:///srv/m/ ")
    assert download.mirrors_env_var("fashion_mnist") == "FWBENCH_MIRRORS_FASHION_MNIST"
    assert download.resolve_mirrors("fashion_mnist", ("https://a/x/",)) == (
        "http://127.0.0.1:8000/", "file:///srv/m/")


def test_file_url_mirror_works(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    body = b"local copy" * 10
    (source / "f.bin").write_bytes(body)
    download.download(remote_file("f.bin", body), [source.as_uri() + "/"], tmp_path / "cache",
                      dataset="toy", progress=False)
    assert (tmp_path / "cache" / "f.bin").read_bytes() == body


# -- IDX -------------------------------------------------------------------------------------------
def test_idx_round_trip_gz_and_plain(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    (tmp_path / "i.gz").write_bytes(gzip.compress(idx.encode_idx(images)))
    (tmp_path / "l").write_bytes(idx.encode_idx(labels))
    x = idx.read_images(tmp_path / "i.gz")
    y = idx.read_labels(tmp_path / "l")
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.uint8 and x.flags.writeable
    np.testing.assert_array_equal(x[:, 0], images)
    assert y.dtype == np.int64 and y.tolist() == [7, 0, 9]
    assert len(idx.encode_idx(images)) == 16 + images.size and len(idx.encode_idx(labels)) == 8 + 3


@pytest.mark.parametrize("mutate, reader, pattern", [
    (lambda b: b[:2] + b"\x09" + b[3:], idx.read_labels, r"data type byte 0x09, expected 0x08"),
    (lambda b: b"\x12\x34" + b[2:], idx.read_labels, r"not an IDX file \(magic"),
    (lambda b: b, idx.read_images, r"IDX magic 2049 \(1 dims\), expected 2051"),
    (lambda b: b[:-1], idx.read_labels, r"header \(5\) needs 13 \(truncated\)"),
    (lambda b: b + b"\x00", idx.read_labels, r"trailing bytes"),
    (lambda b: b[:6], idx.read_labels, r"truncated IDX header"),
    (lambda b: b[:8] + b"\x0a" + b[9:], idx.read_labels, r"label 10 out of range"),
])
def test_idx_validation_errors_name_the_file(tmp_path, mutate, reader, pattern):
    path = tmp_path / "labels.idx"
    path.write_bytes(mutate(idx.encode_idx(np.array([1, 2, 3, 4, 5], dtype=np.uint8))))
    with pytest.raises(DatasetError, match=pattern) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip_and_wrong_image_size(tmp_path):
    data = gzip.compress(idx.encode_idx(np.zeros((2, 28, 28), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz: not a readable gzip file"):
        idx.read_images(tmp_path / "cut.gz")
    (tmp_path / "small.gz").write_bytes(gzip.compress(idx.encode_idx(np.zeros((2, 8, 8), np.uint8))))
    with pytest.raises(DatasetError, match=r"small\.gz: images of 8x8, expected 28x28"):
        idx.read_images(tmp_path / "small.gz")


# -- CIFAR-10 binary -------------------------------------------------------------------------------
def test_cifar_batch_layout_label_then_red_green_blue(tmp_path):
    data = cifar_batch(3, seed=1)
    (tmp_path / "b.bin").write_bytes(data)
    x, y = cifar.read_batch(tmp_path / "b.bin", records=3)
    raw = np.frombuffer(data, np.uint8).reshape(3, 3073)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, raw[:, 0])
    np.testing.assert_array_equal(x[1, 0].ravel(), raw[1, 1:1025])        # red plane, row-major
    np.testing.assert_array_equal(x[1, 2].ravel(), raw[1, 2049:3073])     # blue plane
    assert x[2, 1, 0, 5] == raw[2, 1 + 1024 + 5]                           # green, row 0, col 5
    assert cifar.BATCH_BYTES == 30_730_000


def test_cifar_batch_validation(tmp_path):
    (tmp_path / "short.bin").write_bytes(cifar_batch(3, 0)[:-1])
    with pytest.raises(DatasetError, match=r"short\.bin: 9,218 bytes, expected 9,219 \(3 records"):
        cifar.read_batch(tmp_path / "short.bin", records=3)
    with pytest.raises(DatasetError, match=r"expected 30,730,000 \(10,000 records"):
        cifar.read_batch(tmp_path / "short.bin")
    bad = bytearray(cifar_batch(2, 0))
    bad[3073] = 10
    (tmp_path / "label.bin").write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match=r"label 10 out of range"):
        cifar.read_batch(tmp_path / "label.bin", records=2)
    (tmp_path / "meta.txt").write_text("cat\ndog\n\n")
    with pytest.raises(DatasetError, match=r"meta\.txt: 2 class names, expected 10"):
        cifar.read_class_names(tmp_path / "meta.txt")


# -- safe tar extraction ---------------------------------------------------------------------------
def test_safe_extract_flattens_the_wanted_members(tmp_path):
    data, members = fake_cifar_tar()
    (tmp_path / "a.tar.gz").write_bytes(data)
    paths = cifar.safe_extract(tmp_path / "a.tar.gz", tmp_path / "out")
    assert [p.name for p in paths] == list(cifar.MEMBERS)
    assert all(p.read_bytes() == members[p.name] for p in paths)
    assert not (tmp_path / "out" / "readme.html").exists()
    assert sorted(os.listdir(tmp_path / "out")) == sorted(cifar.MEMBERS)


@pytest.mark.parametrize("evil", [
    ("../evil", b"x", None),
    (f"{cifar.ARCHIVE_DIR}/../../evil", b"x", None),
    ("/tmp/fwbench-evil-absolute", b"x", None),
    (f"{cifar.ARCHIVE_DIR}/evil.sh", b"#!/bin/sh\n", None),
    (f"{cifar.ARCHIVE_DIR}/{cifar.META}", b"/etc/passwd", tarfile.SYMTYPE),
    (f"{cifar.ARCHIVE_DIR}/{cifar.TEST_BATCH}", b"/etc/passwd", tarfile.LNKTYPE),
])
def test_safe_extract_rejects_unexpected_members(tmp_path, evil):
    members = fake_cifar_members()
    entries = [(f"{cifar.ARCHIVE_DIR}/{n}", d, None) for n, d in members.items()]
    entries.insert(3, evil)  # in the middle: nothing may reach the folder even before it
    (tmp_path / "evil.tar.gz").write_bytes(make_tar(entries))
    dest = tmp_path / "sub" / "out"
    with pytest.raises(DatasetError, match="refusing to extract") as info:
        cifar.safe_extract(tmp_path / "evil.tar.gz", dest)
    assert repr(evil[0]) in str(info.value)
    assert os.listdir(dest) == []
    assert not (tmp_path / "sub" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/fwbench-evil-absolute").exists()


def test_safe_extract_names_missing_members(tmp_path):
    members = fake_cifar_members()
    del members[cifar.TEST_BATCH]
    tar = make_tar([(f"{cifar.ARCHIVE_DIR}/{n}", d, None) for n, d in members.items()])
    (tmp_path / "a.tar.gz").write_bytes(tar)
    with pytest.raises(DatasetError, match=r"lacks cifar-10-batches-bin/test_batch\.bin"):
        cifar.safe_extract(tmp_path / "a.tar.gz", tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


# -- the datasets, end to end ----------------------------------------------------------------------
def test_mnist_fetch_with_fallback_then_load(http, tmp_path, monkeypatch):
    table, bodies, arrays = fake_mnist()
    for name, body in bodies.items():
        serve(http, f"/html/{name}", HTML_PAGE, ctype="text/html")
        serve(http, f"/good/{name}", body)
    monkeypatch.setenv("FWBENCH_MIRRORS_MNIST", f"{http.url}/html/,{http.url}/good/")
    dataset = remote.Mnist(files=table)
    assert not dataset.is_cached(tmp_path)
    assert dataset.fetch(tmp_path, progress=False) == tmp_path / "mnist"
    assert dataset.is_cached(tmp_path)
    data = dataset.load(tmp_path)
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64 and data.x_test.shape == (4, 1, 28, 28)
    for got, want in zip((data.x_train[:, 0], data.y_train, data.x_test[:, 0], data.y_test), arrays):
        np.testing.assert_array_equal(got, want)
    assert data.class_names == tuple("0123456789") and not data.synthetic
    # a second fetch finds everything verified and downloads nothing
    http.requests.clear()
    dataset.fetch(tmp_path, progress=False)
    assert http.requests == []


def test_fashion_mnist_class_names_and_env_var(http, tmp_path, monkeypatch):
    table, bodies, _ = fake_mnist(seed=3)
    for name, body in bodies.items():
        serve(http, f"/f/{name}", body)
    monkeypatch.setenv("FWBENCH_MIRRORS_FASHION_MNIST", f"{http.url}/f")
    dataset = remote.FashionMnist(files=table)
    dataset.fetch(tmp_path, progress=False)
    assert (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert dataset.load(tmp_path).class_names[0] == "T-shirt/top"
    assert dataset.load(tmp_path).class_names[9] == "Ankle boot"


def test_load_without_cache_is_one_clear_line(tmp_path):
    for dataset, first in ((remote.Mnist(), "train-images-idx3-ubyte.gz"),
                           (remote.Cifar10(), "data_batch_1.bin")):
        assert not dataset.is_cached(tmp_path)
        with pytest.raises(DatasetError) as info:
            dataset.load(tmp_path)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"dataset '{dataset.name}' is not downloaded: missing {first}")
        assert f"in {tmp_path / dataset.name};" in message
        assert f"`bench data fetch {dataset.name}`" in message and ALTERNATIVES in message


def test_fetch_offline_names_file_and_alternatives(tmp_path):
    dataset = remote.Mnist(mirrors=[closed_port_url()], timeout=5)
    with pytest.raises(DatasetError) as info:
        dataset.fetch(tmp_path, progress=False)
    message = str(info.value)
    assert message.startswith("could not download train-images-idx3-ubyte.gz for dataset 'mnist'")
    assert "Connection refused" in message and ALTERNATIVES in message
    assert str(tmp_path / "mnist") in message and "FWBENCH_MIRRORS_MNIST" in message


def test_corrupt_cache_is_reported_and_force_refetch_fixes_it(http, tmp_path, monkeypatch):
    table, bodies, arrays = fake_mnist()
    for name, body in bodies.items():
        serve(http, f"/good/{name}", body)
    dataset = remote.Mnist(files=table, mirrors=[f"{http.url}/good/"])
    dataset.fetch(tmp_path, progress=False)
    dataset.load(tmp_path)
    # flip one byte, keep the size, change the mtime: the marker no longer vouches for it
    path = tmp_path / "mnist" / table.train_images.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DatasetError) as info:
        dataset.load(tmp_path)
    assert str(info.value) == (
        f"dataset 'mnist': cached file {path} is corrupt (sha256 mismatch); delete it or run "
        "`bench data fetch mnist --force` to download it again")
    # a truncated file is caught by its size
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(DatasetError, match=r"is corrupt \(\d[\d,]* bytes, expected [\d,]+\)"):
        dataset.load(tmp_path)
    http.requests.clear()
    dataset.fetch(tmp_path, progress=False, force=True)
    assert len(http.requests) == 4  # force downloads every file again
    np.testing.assert_array_equal(dataset.load(tmp_path).x_train[:, 0], arrays[0])


def test_plain_fetch_replaces_only_corrupt_files(http, tmp_path):
    table, bodies, _ = fake_mnist()
    for name, body in bodies.items():
        serve(http, f"/good/{name}", body)
    dataset = remote.Mnist(files=table, mirrors=[f"{http.url}/good/"])
    dataset.fetch(tmp_path, progress=False)
    (tmp_path / "mnist" / table.test_labels.name).write_bytes(b"garbage")
    http.requests.clear()
    dataset.fetch(tmp_path, progress=False)
    assert [p for p, _ in http.requests] == [f"/good/{table.test_labels.name}"]
    dataset.load(tmp_path)


def test_verified_marker_skips_rehashing_unchanged_files(http, tmp_path, monkeypatch):
    table, bodies, _ = fake_mnist()
    for name, body in bodies.items():
        serve(http, f"/good/{name}", body)
    dataset = remote.Mnist(files=table, mirrors=[f"{http.url}/good/"])
    dataset.fetch(tmp_path, progress=False)

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(download, "sha256_file", no_hashing)
    dataset.load(tmp_path)  # every file is vouched for by .verified.json
    (tmp_path / "mnist" / cache.MARKER).unlink()
    with pytest.raises(AssertionError, match="re-hashed"):
        dataset.load(tmp_path)


def test_parse_error_after_checksum_names_dataset_and_fix(http, tmp_path):
    bad = gzip.compress(idx.encode_idx(np.zeros(5, np.uint8)))  # labels where images belong
    table, bodies, _ = fake_mnist()
    table = remote.IdxFiles(remote_file(table.train_images.name, bad), table.train_labels,
                            table.test_images, table.test_labels)
    bodies[table.train_images.name] = bad
    for name, body in bodies.items():
        serve(http, f"/good/{name}", body)
    dataset = remote.Mnist(files=table, mirrors=[f"{http.url}/good/"])
    dataset.fetch(tmp_path, progress=False)
    with pytest.raises(DatasetError, match=r"^dataset 'mnist': .*train-images-idx3-ubyte\.gz: IDX "
                                           r"magic 2049 .*`bench data fetch mnist --force`$"):
        dataset.load(tmp_path)


def test_cifar10_fetch_extract_load_and_corruption(http, tmp_path):
    data, members = fake_cifar_tar(records=2)
    archive = remote_file("cifar-10-binary.tar.gz", data)
    serve(http, "/good/cifar-10-binary.tar.gz", data)
    dataset = remote.Cifar10(files=remote.CifarFiles(archive, records_per_batch=2),
                             mirrors=[f"{http.url}/missing/", f"{http.url}/good/"])
    dataset.fetch(tmp_path, progress=False)
    folder = tmp_path / "cifar10"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*cifar.MEMBERS, cache.MARKER])
    assert dataset.is_cached(tmp_path)
    loaded = dataset.load(tmp_path)
    assert loaded.x_train.shape == (10, 3, 32, 32) and loaded.x_test.shape == (2, 3, 32, 32)
    assert loaded.y_train.dtype == np.int64 and loaded.class_names == CIFAR_NAMES
    raw = np.frombuffer(members["data_batch_2.bin"], np.uint8).reshape(2, 3073)
    np.testing.assert_array_equal(loaded.x_train[2].ravel(), raw[0, 1:])
    np.testing.assert_array_equal(loaded.y_train[2:4], raw[:, 0])
    # corrupt a batch (same size): detected against the sha256 recorded at extraction
    batch = folder / "data_batch_3.bin"
    body = bytearray(batch.read_bytes())
    body[100] ^= 1
    batch.write_bytes(bytes(body))
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin is corrupt \(sha256 mismatch\); .*"
                                           r"`bench data fetch cifar10 --force`"):
        dataset.load(tmp_path)
    dataset.fetch(tmp_path, progress=False)  # a plain fetch sees the bad file and extracts again
    assert dataset.load(tmp_path).x_train.shape == (10, 3, 32, 32)
    assert not (folder / archive.name).exists()


def test_cifar10_archive_put_by_hand_is_used_without_network(tmp_path):
    data, _ = fake_cifar_tar(records=2)
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / "cifar-10-binary.tar.gz").write_bytes(data)
    dataset = remote.Cifar10(files=remote.CifarFiles(remote_file("cifar-10-binary.tar.gz", data), 2),
                             mirrors=[closed_port_url()])
    dataset.fetch(tmp_path, progress=False)
    assert dataset.load(tmp_path).x_test.shape == (2, 3, 32, 32)


def test_cifar10_archive_with_evil_member_is_rejected(http, tmp_path):
    members = fake_cifar_members()
    entries = [(f"{cifar.ARCHIVE_DIR}/{n}", d, None) for n, d in members.items()]
    data = make_tar([("../evil", b"boom", None), *entries])
    serve(http, "/good/cifar-10-binary.tar.gz", data)
    dataset = remote.Cifar10(files=remote.CifarFiles(remote_file("cifar-10-binary.tar.gz", data), 2),
                             mirrors=[f"{http.url}/good/"])
    with pytest.raises(DatasetError, match=r"unexpected member '\.\./evil'"):
        dataset.fetch(tmp_path, progress=False)
    assert not (tmp_path / "evil").exists() and not dataset.is_cached(tmp_path)


# -- the real tables and the registration ----------------------------------------------------------
def test_real_tables_match_the_design_notes():
    assert [f.size for f in remote.MNIST_FILES.all()] == [9_912_422, 28_881, 1_648_877, 4_542]
    assert [f.size for f in remote.FASHION_MNIST_FILES.all()] == [26_421_880, 29_515, 4_422_102, 5_148]
    assert remote.CIFAR10_FILES.archive.size == 170_052_171
    for f in (*remote.MNIST_FILES.all(), *remote.FASHION_MNIST_FILES.all(), remote.CIFAR10_FILES.archive):
        assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and len(f.md5) == 32
    assert remote.MNIST_MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert all("lecun" not in m for m in remote.MNIST_MIRRORS)


def test_builtin_registers_the_downloaded_datasets():
    registry = Registry()
    builtin.fwbench_register_datasets(register=registry)
    shapes = {name: (d.input_shape, d.num_classes, d.offline) for name, d in registry.datasets.items()}
    assert shapes["mnist"] == ((1, 28, 28), 10, False)
    assert shapes["fashion_mnist"] == ((1, 28, 28), 10, False)
    assert shapes["cifar10"] == ((3, 32, 32), 10, False)
    assert {"mnist_5k", "digits", "synthetic"} <= set(shapes)
    assert all(isinstance(d, Dataset) and d.description for d in registry.datasets.values())
