"""Tests of cvretrieval.fetch: a local HTTP server on 127.0.0.1 serves tiny archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pooch", reason="fetch needs pooch (a core dependency)")
pytest.importorskip("requests", reason="fetch needs requests (installed with pooch)")

from cvretrieval.errors import DatasetError  # noqa: E402
from cvretrieval.fetch import (  # noqa: E402
    ENV_BASE_URL,
    _check_entry,
    extract_archive,
    fetch_dataset,
    list_datasets,
    load_registry,
    rebase_url,
)


# --------------------------------------------------------------------------- a tiny server
class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []
    sent: list[int] = []
    ignore_range = False
    cut_next_at: int | None = None  # send only this many bytes of the next reply, then hang up

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        body = type(self).files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng and not type(self).ignore_range:
            assert rng.startswith("bytes=") and rng.endswith("-"), rng
            start = int(rng[len("bytes=") : -1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        cut = type(self).cut_next_at
        if cut is not None:
            type(self).cut_next_at = None
            chunk = chunk[:cut]
            self.close_connection = True
        self.wfile.write(chunk)
        type(self).sent.append(len(chunk))

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def server():
    _Handler.files = {}
    _Handler.log = []
    _Handler.sent = []
    _Handler.ignore_range = False
    _Handler.cut_next_at = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --------------------------------------------------------------------------- archive builders
def _jpeg(seed: int) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _tar(members: dict[str, bytes], mode: str = "w:gz", links=()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target
            t.addfile(info)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- the shipped registry
def test_shipped_registry_names_and_entries_are_valid():
    reg = load_registry()
    assert set(reg) == {"roxford5k", "rparis6k", "revisitop1m", "holidays", "ukbench", "caltech101"}
    for name, entry in reg.items():
        files = _check_entry(name, entry)
        assert files and all(f["url"].startswith(("http://", "https://", "ftp://")) for f in files)
        assert entry["format"] and entry["path"]
    rows = {r["name"]: r for r in list_datasets()}
    # only Caltech-101 has a published checksum (CaltechDATA's md5 of caltech-101.zip)
    assert rows["caltech101"]["verified"] is True
    assert reg["caltech101"]["files"][0]["md5"] == "3138e1922a9193bfa496528edbbc45d0"
    assert not rows["roxford5k"]["verified"]


def test_rebase_url_keeps_path_and_query():
    assert (
        rebase_url("https://host.org/a/b.zip?download=1", "http://127.0.0.1:9/pre/")
        == "http://127.0.0.1:9/pre/a/b.zip?download=1"
    )
    assert rebase_url("https://host.org/a", None) == "https://host.org/a"
    with pytest.raises(DatasetError, match="scheme://host"):
        rebase_url("https://host.org/a", "127.0.0.1:9")


# --------------------------------------------------------------------------- fetching
def _revisitop_like(server_files: dict[str, bytes]) -> dict:
    imgs = {"oxford/all_souls/a_000.jpg": _jpeg(0), "oxford/radcliffe/b_001.jpg": _jpeg(1)}
    tgz = _tar(imgs)
    gnd = b"not really a pickle, just bytes"
    server_files["/data/images.tgz"] = tgz
    server_files["/gt/gnd_toy.pkl"] = gnd
    entry = {
        "format": "revisitop",
        "path": "toy",
        "files": [
            {
                "url": "https://example.invalid/data/images.tgz",
                "fname": "images.tgz",
                "sha256": _sha256(tgz),
                "kind": "tar",
                "dest": "toy/jpg",
                "include": ["*.jpg"],
                "flatten": True,
            },
            {
                "url": "https://example.invalid/gt/gnd_toy.pkl",
                "fname": "gnd_toy.pkl",
                "md5": hashlib.md5(gnd).hexdigest(),
                "kind": "file",
                "dest": "toy/gnd_toy.pkl",
            },
        ],
    }
    return {"toy": entry}, imgs, gnd


def test_fetch_downloads_verifies_and_extracts(server, tmp_path):
    handler, base = server
    registry, imgs, gnd = _revisitop_like(handler.files)
    to = tmp_path / "to"
    out = fetch_dataset("toy", to, base_url=base, progress=False, registry=registry)
    assert out == to / "toy"
    assert (to / "toy" / "jpg" / "a_000.jpg").read_bytes() == imgs["oxford/all_souls/a_000.jpg"]
    assert (to / "toy" / "jpg" / "b_001.jpg").read_bytes() == imgs["oxford/radcliffe/b_001.jpg"]
    assert (to / "toy" / "gnd_toy.pkl").read_bytes() == gnd
    # archives removed once extracted, a record of the fetch kept
    assert not list((to / ".cvret-fetch" / "downloads").iterdir())
    rec = json.loads((to / ".cvret-fetch" / "toy.json").read_text())
    assert rec["complete"] and [f["fname"] for f in rec["files"]] == ["images.tgz", "gnd_toy.pkl"]
    # nothing outside `to`
    assert [p.name for p in tmp_path.iterdir()] == ["to"]
    # a second call finds it done and sends no request
    n = len(handler.log)
    assert fetch_dataset("toy", to, base_url=base, progress=False, registry=registry) == out
    assert len(handler.log) == n


def test_base_url_from_environment(server, tmp_path, monkeypatch):
    handler, base = server
    registry, _, _ = _revisitop_like(handler.files)
    monkeypatch.setenv(ENV_BASE_URL, base)
    fetch_dataset("toy", tmp_path / "to", progress=False, registry=registry)
    assert {p for p, _ in handler.log} == {"/data/images.tgz", "/gt/gnd_toy.pkl"}


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    handler, base = server
    registry, _, _ = _revisitop_like(handler.files)
    registry["toy"]["files"][0]["sha256"] = "0" * 64
    to = tmp_path / "to"
    with pytest.raises(DatasetError, match="checksum mismatch for images.tgz"):
        fetch_dataset("toy", to, base_url=base, progress=False, registry=registry)
    downloads = to / ".cvret-fetch" / "downloads"
    assert not (downloads / "images.tgz").exists()
    assert not (downloads / "images.tgz.part").exists()
    assert not (to / "toy").exists()
    assert not (to / ".cvret-fetch" / "toy.json").exists()


def test_resume_sends_range_and_appends(server, tmp_path):
    handler, base = server
    registry, imgs, _ = _revisitop_like(handler.files)
    tgz = handler.files["/data/images.tgz"]
    cut = len(tgz) // 3
    downloads = tmp_path / "to" / ".cvret-fetch" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "images.tgz.part").write_bytes(tgz[:cut])
    fetch_dataset("toy", tmp_path / "to", base_url=base, progress=False, registry=registry)
    assert ("/data/images.tgz", f"bytes={cut}-") in handler.log
    # the server sent only the missing part of the archive, and the result is intact
    assert len(tgz) - cut in handler.sent and len(tgz) not in handler.sent
    got = (tmp_path / "to" / "toy" / "jpg" / "a_000.jpg").read_bytes()
    assert got == imgs["oxford/all_souls/a_000.jpg"]


def test_interrupted_download_is_resumed_by_the_next_call(server, tmp_path):
    handler, base = server
    registry, imgs, _ = _revisitop_like(handler.files)
    tgz = handler.files["/data/images.tgz"]
    handler.cut_next_at = 100  # the connection drops after 100 bytes
    to = tmp_path / "to"
    with pytest.raises(DatasetError, match="run .*again"):
        fetch_dataset("toy", to, base_url=base, progress=False, registry=registry)
    part = to / ".cvret-fetch" / "downloads" / "images.tgz.part"
    assert part.read_bytes() == tgz[:100]  # kept for the next call
    fetch_dataset("toy", to, base_url=base, progress=False, registry=registry)
    assert ("/data/images.tgz", "bytes=100-") in handler.log
    assert not part.exists()
    got = (to / "toy" / "jpg" / "a_000.jpg").read_bytes()
    assert got == imgs["oxford/all_souls/a_000.jpg"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    handler, base = server
    handler.ignore_range = True
    registry, imgs, _ = _revisitop_like(handler.files)
    downloads = tmp_path / "to" / ".cvret-fetch" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "images.tgz.part").write_bytes(b"garbage that is not a prefix")
    fetch_dataset("toy", tmp_path / "to", base_url=base, progress=False, registry=registry)
    got = (tmp_path / "to" / "toy" / "jpg" / "b_001.jpg").read_bytes()
    assert got == imgs["oxford/radcliffe/b_001.jpg"]


def test_unverified_refused_before_download_then_allowed(server, tmp_path):
    handler, base = server
    registry, _, gnd = _revisitop_like(handler.files)
    registry["toy"]["files"][1]["md5"] = None
    to = tmp_path / "to"
    with pytest.raises(DatasetError, match="no published checksum for gnd_toy.pkl"):
        fetch_dataset("toy", to, base_url=base, progress=False, registry=registry)
    assert handler.log == []
    fetch_dataset(
        "toy", to, base_url=base, progress=False, registry=registry, allow_unverified=True
    )
    rec = json.loads((to / ".cvret-fetch" / "toy.json").read_text())
    by_name = {f["fname"]: f for f in rec["files"]}
    assert by_name["gnd_toy.pkl"]["verified"] is False
    assert by_name["gnd_toy.pkl"]["sha256"] == _sha256(gnd)


def test_unknown_name_and_missing_file(server, tmp_path):
    handler, base = server
    registry, _, _ = _revisitop_like(handler.files)
    with pytest.raises(DatasetError, match="unknown data set 'nope'; known: toy"):
        fetch_dataset("nope", tmp_path, registry=registry)
    del handler.files["/gt/gnd_toy.pkl"]
    with pytest.raises(DatasetError, match="could not download .*gnd_toy.pkl"):
        fetch_dataset("toy", tmp_path / "to", base_url=base, progress=False, registry=registry)


def test_ukbench_zip_layout_is_readable_by_load_dataset(server, tmp_path):
    from cvretrieval.datasets import load_dataset

    handler, base = server
    members = {f"full/ukbench{i:05d}.jpg": _jpeg(i) for i in range(8)}
    members["thumbnails/ukbench00000.th.jpg"] = _jpeg(99)
    members["overview.html"] = b"<html></html>"
    data = _zip(members)
    handler.files["/download/ukbench/ukbench.zip"] = data
    registry = {
        "ukb": {
            "format": "ukbench",
            "path": "ukbench",
            "files": [
                {
                    "url": "https://archive.invalid/download/ukbench/ukbench.zip",
                    "fname": "ukbench.zip",
                    "sha256": _sha256(data),
                    "kind": "zip",
                    "dest": "ukbench",
                    "include": ["full/*.jpg"],
                    "strip_components": 1,
                }
            ],
        }
    }
    out = fetch_dataset("ukb", tmp_path / "to", base_url=base, progress=False, registry=registry)
    assert _files_under(out) == {f"ukbench{i:05d}.jpg" for i in range(8)}
    ds = load_dataset(out)
    assert ds.format == "ukbench" and len(ds.imlist) == 8
    assert ds.gnd[5]["ok"] == [4, 6, 7]  # group 1 = images 4..7


def test_nested_caltech_like_archive_is_class_folders(server, tmp_path):
    from cvretrieval.datasets import load_dataset

    handler, base = server
    inner = _tar(
        {
            "101_ObjectCategories/cup/image_0001.jpg": _jpeg(1),
            "101_ObjectCategories/cup/image_0002.jpg": _jpeg(2),
            "101_ObjectCategories/lamp/image_0001.jpg": _jpeg(3),
            "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg": _jpeg(4),
        }
    )
    outer = _zip({"caltech-101/101_ObjectCategories.tar.gz": inner, "caltech-101/x.m": b"%"})
    handler.files["/records/c.zip"] = outer
    registry = {
        "cal": {
            "format": "class-folders",
            "path": "cal/101_ObjectCategories",
            "files": [
                {
                    "url": "https://data.invalid/records/c.zip",
                    "fname": "c.zip",
                    "md5": hashlib.md5(outer).hexdigest(),
                    "kind": "zip",
                    "nested": [
                        {
                            "member": "caltech-101/101_ObjectCategories.tar.gz",
                            "kind": "tar",
                            "dest": "cal",
                            "exclude": ["101_ObjectCategories/BACKGROUND_Google/*"],
                        }
                    ],
                }
            ],
        }
    }
    to = tmp_path / "to"
    out = fetch_dataset("cal", to, base_url=base, progress=False, registry=registry)
    assert _files_under(out) == {"cup/image_0001.jpg", "cup/image_0002.jpg", "lamp/image_0001.jpg"}
    assert not (to / ".cvret-fetch" / "scratch-c.zip").exists()
    ds = load_dataset(out)
    assert ds.format == "class-folders" and len(ds.imlist) == 3


# --------------------------------------------------------------------------- unsafe archives
@pytest.mark.parametrize(
    "make, member",
    [
        (lambda root: _tar({"ok.txt": b"1", "../evil.txt": b"x"}), "../evil.txt"),
        (lambda root: _zip({"ok.txt": b"1", "../evil.txt": b"x"}), "../evil.txt"),
        (lambda root: _zip({"sub/../../evil.txt": b"x"}), "evil.txt"),
        (lambda root: _tar({"ok.txt": b"1"}, links=[("ln", "../../outside", "sym")]), "'ln'"),
        (lambda root: _tar({"ok.txt": b"1"}, links=[("hl", "/etc/passwd", "hard")]), "'hl'"),
    ],
    ids=[
        "tar-dotdot",
        "zip-dotdot",
        "zip-nested-dotdot",
        "tar-symlink",
        "hardlink",
    ],
)
def test_unsafe_archive_members_are_refused(tmp_path, make, member):
    root = tmp_path / "outside"
    root.mkdir()
    data = make(root)
    archive = tmp_path / ("a.zip" if data[:2] == b"PK" else "a.tgz")
    archive.write_bytes(data)
    dest = tmp_path / "box" / "dest"
    with pytest.raises(DatasetError, match="would be written outside") as err:
        extract_archive(archive, dest)
    assert member in str(err.value)
    # nothing was written at all: neither outside nor inside the target folder
    assert not (tmp_path / "box").exists()
    assert not (tmp_path / "evil.txt").exists() and not (root / "abs.txt").exists()
    assert _files_under(root) == set()


def test_absolute_tar_member_never_lands_outside(tmp_path):
    """tarfile's data filter makes an absolute name relative (as GNU tar does); without the
    filter (old Pythons) the archive is refused before anything is written."""
    import tarfile

    root = tmp_path / "outside"
    root.mkdir()
    archive = tmp_path / "a.tgz"
    archive.write_bytes(_tar({"ok.txt": b"1", str(root / "abs.txt"): b"x"}))
    dest = tmp_path / "box" / "dest"
    if hasattr(tarfile, "data_filter"):
        written = extract_archive(archive, dest)
        inside = dest / str(root / "abs.txt").lstrip("/")
        assert inside.read_bytes() == b"x" and inside in written
    else:  # pragma: no cover - Pythons without the data filter
        with pytest.raises(DatasetError, match="would be written outside"):
            extract_archive(archive, dest)
        assert not (tmp_path / "box").exists()
    assert _files_under(root) == set()


def test_data_filter_refuses_device_members_and_links_through_existing_links(tmp_path):
    import os
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        t.addfile(tarfile.TarInfo("ok.txt"))
        fifo = tarfile.TarInfo("pipe")
        fifo.type = tarfile.FIFOTYPE
        t.addfile(fifo)
    archive = tmp_path / "a.tar"
    archive.write_bytes(out.getvalue())
    assert [p.name for p in extract_archive(archive, tmp_path / "d")] == ["ok.txt"]
    assert not (tmp_path / "d" / "pipe").exists()  # special member skipped
    # a link already in the target folder must not carry a member outside
    (tmp_path / "out2").mkdir()
    (tmp_path / "d2").mkdir()
    os.symlink(tmp_path / "out2", tmp_path / "d2" / "sub")
    archive.write_bytes(_tar({"sub/evil.txt": b"x"}, mode="w"))
    with pytest.raises(DatasetError, match="would be written outside") as err:
        extract_archive(archive, tmp_path / "d2")
    assert "sub/evil.txt" in str(err.value)
    assert not (tmp_path / "out2" / "evil.txt").exists()


def test_unsafe_archive_through_fetch_names_member(server, tmp_path):
    handler, base = server
    data = _tar({"../evil.txt": b"x"})
    handler.files["/e.tgz"] = data
    registry = {
        "evil": {
            "path": "evil",
            "files": [
                {
                    "url": "https://x.invalid/e.tgz",
                    "fname": "e.tgz",
                    "sha256": _sha256(data),
                    "kind": "tar",
                    "dest": "evil",
                }
            ],
        }
    }
    to = tmp_path / "to"
    with pytest.raises(DatasetError, match="member '../evil.txt'"):
        fetch_dataset("evil", to, base_url=base, progress=False, registry=registry)
    assert not (to / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_links_inside_are_kept(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar({"d/f.txt": b"hello"}, mode="w", links=[("d/l.txt", "f.txt", "sym")]))
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "l.txt").read_bytes() == b"hello"


def test_registry_with_escaping_dest_is_refused(tmp_path):
    registry = {
        "bad": {
            "path": "bad",
            "files": [
                {"url": "https://x.invalid/f", "fname": "f", "sha256": "a" * 64, "dest": "../f"}
            ],
        }
    }
    with pytest.raises(DatasetError, match="without '..'"):
        fetch_dataset("bad", tmp_path, registry=registry)


def _need_format(fmt: str) -> None:
    from cvretrieval.datasets import DATASET_FORMATS

    if fmt not in DATASET_FORMATS:
        pytest.skip(f"load_dataset has no {fmt!r} reader in this checkout")


def test_holidays_two_archives_layout_is_readable(server, tmp_path):
    from cvretrieval.datasets import load_dataset

    _need_format("holidays")
    handler, base = server
    part1 = _tar({"jpg/100000.jpg": _jpeg(0), "jpg/100001.jpg": _jpeg(1)})
    part2 = _tar(
        {"jpg/100100.jpg": _jpeg(2), "jpg/100101.jpg": _jpeg(3), "jpg/100102.jpg": _jpeg(4)}
    )
    handler.files["/pub/jpg1.tar.gz"] = part1
    handler.files["/pub/jpg2.tar.gz"] = part2
    spec = {"kind": "tar", "dest": "holidays", "include": ["jpg/*.jpg"]}
    registry = {
        "hol": {
            "format": "holidays",
            "path": "holidays/jpg",
            "files": [
                dict(
                    spec,
                    url="ftp://ftp.invalid/pub/jpg1.tar.gz",
                    fname="jpg1.tar.gz",
                    sha256=_sha256(part1),
                ),
                dict(
                    spec,
                    url="ftp://ftp.invalid/pub/jpg2.tar.gz",
                    fname="jpg2.tar.gz",
                    sha256=_sha256(part2),
                ),
            ],
        }
    }
    out = fetch_dataset("hol", tmp_path / "to", base_url=base, progress=False, registry=registry)
    ds = load_dataset(out)
    assert ds.format == "holidays" and len(ds.imlist) == 5 and len(ds.qimlist) == 2


def test_revisitop_flattened_layout_is_readable(server, tmp_path):
    import pickle

    from cvretrieval.datasets import load_dataset

    _need_format("revisitop")
    handler, base = server
    names = ["paris_a_000", "paris_a_001", "paris_b_000"]
    tgz = _tar({f"paris/{n.split('_')[1]}/{n}.jpg": _jpeg(i) for i, n in enumerate(names)})
    gnd = pickle.dumps(
        {
            "imlist": names[1:],
            "qimlist": names[:1],
            "gnd": [{"easy": [0], "hard": [], "junk": [1], "bbx": [1.0, 1.0, 20.0, 20.0]}],
        }
    )
    handler.files["/p.tgz"] = tgz
    handler.files["/gnd_rtoy.pkl"] = gnd
    registry = {
        "rtoy": {
            "format": "revisitop",
            "path": "rtoy",
            "files": [
                {
                    "url": "https://x.invalid/p.tgz",
                    "fname": "p.tgz",
                    "sha256": _sha256(tgz),
                    "kind": "tar",
                    "dest": "rtoy/jpg",
                    "include": ["*.jpg"],
                    "flatten": True,
                },
                {
                    "url": "https://x.invalid/gnd_rtoy.pkl",
                    "fname": "gnd_rtoy.pkl",
                    "sha256": _sha256(gnd),
                    "kind": "file",
                    "dest": "rtoy/gnd_rtoy.pkl",
                },
            ],
        }
    }
    out = fetch_dataset("rtoy", tmp_path / "to", base_url=base, progress=False, registry=registry)
    assert _files_under(out / "jpg") == {f"{n}.jpg" for n in names}
    ds = load_dataset(out)
    assert ds.format == "revisitop"
    assert (len(ds.imlist), len(ds.qimlist)) == (2, 1)
    assert all(p.is_file() for p in ds.image_paths() + ds.query_paths())
