"""The web demo in a real browser: ``serve`` on a free port, Debian's Chromium driven by Playwright.

Never downloads a browser: it uses ``/usr/bin/chromium`` (Debian package ``chromium``)
and skips when that or Playwright is missing. The server is stopped in every case.

Set ``CVRET_WEB_SCREENSHOT=docs/web.png`` to also write the screenshot there (the one
in the README); that run serves two bundles (HOG and BoVW-ORB) side by side. Only
images the test makes itself are used, so the screenshot holds no third-party image.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import cvretrieval

CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_TIMEOUT = 120  # seconds; the machine may be busy
PAGE_TIMEOUT_MS = 90_000
NO_PLAYWRIGHT = "playwright is not installed (pip install 'cvretrieval[browser]')"
NO_WEB = "the web extra is not installed (pip install 'cvretrieval[web]')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server did not answer within {SERVER_START_TIMEOUT} s:\n"
                f"{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server we started: its own process group (serve + its streamlit child)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    try:  # the streamlit child, should it have outlived serve
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def make_bundles(tmp_path: Path, two: bool) -> tuple[list[Path], Path, str]:
    """Bundles to serve (HOG, and BoVW-ORB when ``two``), a query image file, and the file
    name expected first."""
    from conftest import textured_image

    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i in range(12):
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(textured_image(500 + i)).save(paths[-1])
    bundles = [cvretrieval.Retriever("hog", n_jobs=1).build(paths).save(tmp_path / "hog.cvret")]
    if two:
        orb = cvretrieval.make_embedder("bovw", detector="orb", n_words=200, n_features=500)
        bundles.append(
            cvretrieval.Retriever(orb, n_jobs=1).build(paths).save(tmp_path / "bovw-orb.cvret")
        )
    query = tmp_path / "query.png"
    Image.fromarray(textured_image(507)[10:230, 15:305]).save(query)  # most of img07
    return bundles, query, "img07.png"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason=NO_PLAYWRIGHT)
    pytest.importorskip("streamlit", reason=NO_WEB)
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package "
                    "(the test never downloads a browser)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.slow
def test_upload_search_and_view_in_chromium(browser, tmp_path):
    target = os.environ.get("CVRET_WEB_SCREENSHOT")
    bundles, query, expected_first = make_bundles(tmp_path, two=bool(target))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    code = ("import sys; from cvretrieval.web import serve; "
            "sys.exit(serve(sys.argv[2:], port=int(sys.argv[1])))")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(port), *map(str, bundles)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(proc, url, log)
        page = browser.new_page(viewport={"width": 1400, "height": 1900})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(url)
        upload = page.locator('input[type="file"]')
        upload.wait_for(state="attached")

        # a file that is not an image: a message on the page, no results
        upload.set_input_files({"name": "notes.png", "mimeType": "image/png",
                                "buffer": b"plain text, not pixels"})
        page.get_by_text("not a recognised image format").wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0

        # a real query: K result thumbnails per bundle, every one decoded by the browser
        upload.set_input_files(str(query))  # replaces the bad file
        k = 10  # the default K; every bundle holds more images
        for b in range(len(bundles)):
            css = f".st-key-results-{b} [data-testid='stImage'] img"
            page.wait_for_function(f"document.querySelectorAll({css!r}).length === {k}")
            assert page.locator(css).count() == k
            page.wait_for_function(  # every thumbnail decoded by the browser
                f"[...document.querySelectorAll({css!r})]"
                ".every(i => i.complete && i.naturalWidth > 0)")
        first = page.locator(".st-key-hit-0-1")
        assert "#1 · " in first.inner_text() and expected_first in first.inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
        time.sleep(1)  # let the layout settle before the picture
        shot = tmp_path / "web.png"
        page.screenshot(path=str(shot), full_page=True)
        if target:
            save_small_png(shot, Path(target))

        # the full image opens in a dialog
        page.locator(".st-key-view-0-1 button:visible").first.click()
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        dialog.locator("img").first.wait_for()
        assert expected_first in dialog.inner_text()
    finally:
        stop(proc)
    assert proc.poll() is not None


def save_small_png(src: Path, dst: Path, max_bytes: int = 400_000) -> None:
    """Save a screenshot as a palette PNG (screenshots have few colours), halving until small."""
    im = Image.open(src).convert("RGB")
    dst.parent.mkdir(parents=True, exist_ok=True)
    while True:
        buf = io.BytesIO()
        im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or im.width < 600:
            break
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.LANCZOS)
    dst.write_bytes(buf.getvalue())
    shutil.copystat(src, dst)
