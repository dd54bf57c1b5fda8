"""Pictures: an HTML file rendered to a PNG with headless Chromium (for reports in READMEs
and CI logs), and the report's figures (matplotlib) and thumbnails (inlined data URIs).

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

import base64
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cvretrieval.errors import CVRetrievalError, MissingExtraError

logger = logging.getLogger(__name__)

__all__ = [
    "COLORS",
    "ENV_CHROMIUM",
    "Thumbs",
    "ap_figure",
    "find_chromium",
    "pr_figure",
    "render_html_to_png",
]

COLORS: dict[str, str] = {
    "ok": "#2e7d32",  # relevant: green
    "bad": "#c62828",  # not relevant: red
    "junk": "#9e9e9e",  # junk: grey
    "query": "#1565c0",  # the query: blue
}
"""Outline colours of the thumbnails (CSS colours)."""

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


# --------------------------------------------------------------------------- report figures
def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fig_to_item(fig: Any, alt: str) -> dict[str, Any]:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    w, h = (int(round(v)) for v in fig.get_size_inches() * 100)
    return {"src": _png_uri(buf.getvalue()), "width": w, "height": h, "alt": alt}


def _curves(
    result: Mapping[str, Any],
) -> list[tuple[str, NDArray[np.float64], NDArray[np.float64]]]:
    pr = result.get("pr_curve")
    if not isinstance(pr, Mapping):
        return []
    if "recall" in pr and "precision" in pr:
        pairs: list[tuple[str, Any]] = [("", pr)]
    else:
        pairs = [(str(k), v) for k, v in pr.items() if isinstance(v, Mapping)]
    out = []
    for label, c in pairs:
        r = np.asarray(c.get("recall", []), dtype=float)
        p = np.asarray(c.get("precision", []), dtype=float)
        if r.ndim == 1 and r.shape == p.shape and r.size:
            out.append((label, r, p))
    return out


def pr_figure(Figure: Any, result: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    fig = Figure(figsize=(4.8, 3.5))
    ax = fig.add_subplot()
    metrics = result.get("metrics") or {}
    note = ""
    curves = _curves(result)
    if curves:
        for label, r, p in curves:
            ax.plot(r, p, marker="o" if r.size <= 21 else None, ms=3, lw=1.8, label=label or None)
        ax.set_title("Precision-recall (interpolated, mean over queries)", fontsize=10)
        if any(label for label, _, _ in curves):
            ax.legend(fontsize=8)
    else:
        ks = sorted(
            int(k[2:])
            for k in metrics
            if k.startswith("P@") and k[2:].isdigit() and f"R@{k[2:]}" in metrics
        )
        recalls = [float(metrics[f"R@{k}"]) for k in ks]
        precisions = [float(metrics[f"P@{k}"]) for k in ks]
        ax.plot(recalls, precisions, "o--", color=COLORS["query"], lw=1)
        for k, x, y in zip(ks, recalls, precisions, strict=True):
            ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_title("Mean P@k against R@k", fontsize=10)
        note = (
            "The result holds no full precision-recall curve, so the curve panel shows the "
            "mean (R@k, P@k) points of the metrics."
        )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _fig_to_item(fig, "precision-recall curve"), note


def ap_figure(Figure: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    per_query = result.get("per_query") or []
    aps = [float(q["ap"]) for q in per_query if q.get("ap") is not None]
    skipped = len(per_query) - len(aps)
    fig = Figure(figsize=(4.8, 3.5))
    ax = fig.add_subplot()
    ax.hist(aps, bins=np.linspace(0, 1, 21), color="#5c7cba", edgecolor="white")
    if aps:
        m = float(np.mean(aps))
        ax.axvline(m, color="#1d2330", ls="--", lw=1)
        ax.annotate(
            f"mean {m:.3f}",
            (m, 0.95),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            va="top",
        )
    title = f"AP per query ({len(aps)} queries"
    title += f"; {skipped} without positives skipped)" if skipped else ")"
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.set_ylabel("queries")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _fig_to_item(fig, "histogram of per-query AP")


# --------------------------------------------------------------------------- thumbnails
def _encode(img: NDArray[np.uint8], *, jpeg: bool = True) -> str:
    import cv2

    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if jpeg:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 82])
        mime = "image/jpeg"
    else:
        ok, buf = cv2.imencode(".png", bgr)
        mime = "image/png"
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise RuntimeError("could not encode a thumbnail")
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _placeholder(size: int, text: str) -> NDArray[np.uint8]:
    """A light grey tile with a short centred text (one or two words per line)."""
    import cv2

    tile = np.full((size, size, 3), 236, np.uint8)
    cv2.line(tile, (0, 0), (size - 1, size - 1), (215, 215, 215), 1)
    cv2.line(tile, (0, size - 1), (size - 1, 0), (215, 215, 215), 1)
    lines = text.split("\n")
    scale = max(0.3, size / 300)
    y = size // 2 - (len(lines) - 1) * int(14 * scale * 2) // 2
    for line in lines:
        (w, h), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(
            tile,
            line,
            ((size - w) // 2, y + h // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (90, 90, 90),
            1,
            cv2.LINE_AA,
        )
        y += int(14 * scale * 2)
    return tile


class Thumbs:
    """Thumbnail data URIs, read once each (the same gallery image recurs across rows)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cache: dict[tuple[str, Any], tuple[str, int, int, str]] = {}

    def get(self, path: Path, bbox: Any = None) -> tuple[str, int, int, str]:
        """(data URI, width, height, problem or "") of ``path`` (cropped to ``bbox``)."""
        key = (str(path), None if bbox is None else tuple(bbox))
        if key not in self.cache:
            from cvretrieval.io import read_image

            try:
                img = read_image(path, max_side=self.size, bbox=bbox)
                self.cache[key] = (_encode(img), img.shape[1], img.shape[0], "")
            except Exception as exc:  # a broken image must never stop the report
                logger.warning("report: cannot read %s (%s); drawing a placeholder", path, exc)
                self.cache[key] = self.placeholder("unreadable\nimage") + (str(exc),)
        return self.cache[key]

    def placeholder(self, text: str) -> tuple[str, int, int]:
        key = ("<placeholder>", text)
        if key not in self.cache:
            uri = _encode(_placeholder(self.size, text), jpeg=False)
            self.cache[key] = (uri, self.size, self.size, "")
        uri, w, h, _ = self.cache[key]
        return uri, w, h
