"""`cvret datasets fetch revisitop1m`: the shipped registry entry against a local server."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("pooch", reason="fetch needs pooch (a core dependency)")

from conftest import cli_run  # noqa: E402

from cvretrieval.errors import DatasetError  # noqa: E402
from cvretrieval.fetch import dataset_info, fetch_dataset, list_datasets  # noqa: E402

# revisitop's python/download.py: 100 archives and an image list on ptak.felk.cvut.cz
EXPECTED = [f"/revisitop/revisitop1m/jpg/revisitop1m.{i}.tar.gz" for i in range(1, 101)] + [
    "/revisitop/revisitop1m/revisitop1m.txt"
]


def _shard(i: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        data = f"fake jpeg {i}".encode()
        info = tarfile.TarInfo(f"{i:03d}/img_{i}.jpg")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).log.append(self.path)
        body = type(self).files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror():
    _Handler.files = {p: _shard(i + 1) for i, p in enumerate(EXPECTED[:-1])}
    _Handler.files[EXPECTED[-1]] = b"".join(
        f"{i:03d}/img_{i}.jpg\n".encode() for i in range(1, 101)
    )
    _Handler.log = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_revisitop1m_is_listed_unverified():
    rows = {r["name"]: r for r in list_datasets()}
    assert rows["revisitop1m"]["verified"] is False
    assert rows["revisitop1m"]["format"] == "distractors"
    urls = [f["url"] for f in dataset_info("revisitop1m")["files"]]
    assert urls[0].startswith("http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/")


def test_revisitop1m_refused_without_allow_unverified(mirror, tmp_path):
    handler, base = mirror
    with pytest.raises(DatasetError, match="no published checksum.*allow_unverified"):
        fetch_dataset("revisitop1m", tmp_path / "to", base_url=base, progress=False)
    assert handler.log == []  # refused before any byte was downloaded


def test_revisitop1m_fetch_follows_revisitops_download_script(mirror, tmp_path):
    handler, base = mirror
    to = tmp_path / "to"
    res = cli_run("datasets", "fetch", "revisitop1m", "--to", to, "--base-url", base,
                  "--allow-unverified", "-q")
    assert res.exit_code == 0
    assert sorted(handler.log) == sorted(EXPECTED)
    out = to / "revisitop1m" / "jpg"
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert found == [f"{i:03d}/img_{i}.jpg" for i in range(1, 101)]  # archive folders kept
    assert (to / "revisitop1m" / "revisitop1m.txt").read_text().count("\n") == 100
    record = json.loads((to / ".cvret-fetch" / "revisitop1m.json").read_text())
    assert len(record["files"]) == 101
    assert all(len(f["sha256"]) == 64 and f["verified"] is False for f in record["files"])
    assert not list((to / ".cvret-fetch" / "downloads").glob("*.tar.gz"))  # archives removed
    # a second fetch finds it complete and downloads nothing
    handler.log.clear()
    fetch_dataset("revisitop1m", to, base_url=base, progress=False, allow_unverified=True)
    assert handler.log == []


def test_sharded_registry_entries_are_validated(tmp_path):
    reg = {"x": {"path": "x", "files": [{"url": "http://h/a", "fname": "a", "shards": [3, 1],
                                         "sha256": None, "dest": "x/a"}]}}
    with pytest.raises(DatasetError, match="shards must be"):
        fetch_dataset("x", tmp_path, registry=reg)
    reg["x"]["files"][0]["shards"] = [1, 2]
    with pytest.raises(DatasetError, match="needs '\\{i\\}'"):
        fetch_dataset("x", tmp_path, registry=reg)
