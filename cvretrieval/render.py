"""Render an HTML file to a PNG with headless Chromium (for reports in READMEs and CI logs).

Two ways, chosen by :func:`render_html_to_png`:

* a fixed ``height``: Chromium's own ``--headless --screenshot --window-size``,
  run as a subprocess (nothing but a ``chromium`` executable is needed);
* ``height=None`` (the whole page): Playwright's full-page screenshot driving
  the same Chromium executable (extra ``browser``); without Playwright, a tall
  window is captured and the empty background below the content cut off.

Chromium is looked up as ``$CVRET_CHROMIUM``, then ``chromium``,
``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` and ``chrome``
on ``PATH`` (Debian/Ubuntu: ``apt-get install chromium``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from cvretrieval.errors import CVRetrievalError, MissingExtraError

logger = logging.getLogger(__name__)

__all__ = ["ENV_CHROMIUM", "find_chromium", "render_html_to_png"]

ENV_CHROMIUM = "CVRET_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_TALL = 12000  # window height when the page height is unknown and Playwright is missing
_TIMEOUT = 120


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$CVRET_CHROMIUM`` first), or None."""
    env = os.environ.get(ENV_CHROMIUM)
    if env:
        found = shutil.which(env)
        if found:
            return found
        logger.warning("%s=%r is not an executable; looking on PATH", ENV_CHROMIUM, env)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_chromium() -> str:
    exe = find_chromium()
    if exe is None:
        raise MissingExtraError(
            "rendering HTML to PNG needs headless Chromium, and none was found on PATH "
            f"(looked for {', '.join(_CANDIDATES)}); install it (Debian/Ubuntu: "
            f"apt-get install chromium) or set {ENV_CHROMIUM}=/path/to/chrome"
        )
    return exe


def _sandbox_args() -> list[str]:
    # Chromium refuses to start its sandbox as root (containers, CI); the page is a local file
    return ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def _screenshot_cli(exe: str, html: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cvret-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            *_sandbox_args(),
            html.as_uri(),
        ]
        logger.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CVRetrievalError(
                f"Chromium did not finish the screenshot of {html} within {_TIMEOUT} s"
            ) from exc
    if proc.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
        raise CVRetrievalError(
            f"Chromium ({exe}) could not screenshot {html} (exit {proc.returncode}): {tail}"
        )


def _trim_bottom(png: Path, margin: int = 24) -> bool:
    """Cut the uniform background below the content; True if the content reached the bottom."""
    from PIL import Image

    with Image.open(png) as im:
        arr = np.asarray(im.convert("RGB"))
    background = arr[0, 0]  # the page background (body padding at the top-left)
    differs = np.any(arr != background, axis=(1, 2))
    rows = np.flatnonzero(differs)
    last = int(rows[-1]) if rows.size else 0
    reached = last >= arr.shape[0] - 2
    keep = min(arr.shape[0], last + 1 + margin)
    if keep < arr.shape[0]:
        with Image.open(png) as im:
            im.crop((0, 0, arr.shape[1], keep)).save(png)
    return reached


def _screenshot_playwright(exe: str, html: Path, png: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=_sandbox_args())
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.goto(html.as_uri(), wait_until="load")
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def render_html_to_png(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int | None = None,
) -> Path:
    """Screenshot a local HTML file with headless Chromium.

    Parameters
    ----------
    html_path : path-like
        The page (a local file; a report from :func:`cvretrieval.report.write_report`).
    png_path : path-like
        Where to write the PNG (its folder is created).
    width : int
        Viewport width in CSS pixels (device scale factor 1).
    height : int, optional
        Viewport height; the PNG is exactly ``width`` x ``height``. ``None``
        captures the whole page (Playwright when installed, else a tall window
        trimmed to the content, at most 12000 pixels high).

    Returns
    -------
    Path
        ``png_path``.

    Raises
    ------
    FileNotFoundError
        ``html_path`` does not exist.
    MissingExtraError
        No Chromium executable was found.
    CVRetrievalError
        Chromium failed or timed out.
    ValueError
        ``width`` or ``height`` is not a positive integer.
    """
    html = Path(html_path).resolve()
    png = Path(png_path).absolute()
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}; write the report first")
    if int(width) < 1 or (height is not None and int(height) < 1):
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    exe = _require_chromium()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()
    if height is not None:
        _screenshot_cli(exe, html, png, int(width), int(height))
    else:
        try:
            _screenshot_playwright(exe, html, png, int(width))
        except ImportError:
            logger.debug("playwright not installed: tall window + trim")
            _full_page_cli(exe, html, png, int(width))
        except Exception as exc:  # playwright present but cannot drive this Chromium
            logger.warning("playwright failed (%s); falling back to a tall window", exc)
            _full_page_cli(exe, html, png, int(width))
    logger.info("rendered %s to %s", html, png)
    return png


def _full_page_cli(exe: str, html: Path, png: Path, width: int) -> None:
    _screenshot_cli(exe, html, png, width, _TALL)
    if _trim_bottom(png):
        logger.warning(
            "the page is taller than %d pixels; the PNG is cut at that height "
            "(install playwright for a full-page screenshot)",
            _TALL,
        )
