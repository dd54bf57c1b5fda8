"""The web demo's logic, without Streamlit: arguments, uploads, boxes, searching.

Everything here is a small function on plain values so it can be tested without a
browser or a Streamlit runtime; :mod:`cvretrieval.web.page` only lays widgets out
around these functions.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ImageReadError
from ..io import IMAGE_EXTENSIONS, read_image

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20
"""Largest upload the demo accepts, in megabytes (``--max-upload-mb`` changes it)."""

DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000
"""Largest upload in pixels (width x height, read from the header before decoding)."""

BBox = tuple[float, float, float, float]

RERANK_LABELS = {
    "sv": "Spatial verification",
    "qe": "Query expansion",
}
"""Names of the re-ranking steps a retriever may offer, and how the page labels them."""

UPLOAD_TYPES = sorted({ext.lstrip(".") for ext in IMAGE_EXTENSIONS})
"""File suffixes the upload widget offers (the decoder still checks the content)."""


@dataclass(frozen=True)
class AppSettings:
    """What the Streamlit script is started with (``streamlit run app.py -- ...``).

    Attributes
    ----------
    bundles : list of Path
        Bundle folders to search, one result column each.
    report : Path or None
        A folder holding ``index.html`` written by ``cvret eval --report``.
    max_upload_mb : int
        Uploads larger than this many megabytes are refused with a message.
    """

    bundles: list[Path] = field(default_factory=list)
    report: Path | None = None
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def parse_app_args(argv: Sequence[str]) -> AppSettings:
    """Read the script arguments given after ``--`` to ``streamlit run``.

    Parameters
    ----------
    argv : sequence of str
        E.g. ``["--bundle", "a.cvret", "--bundle", "b.cvret", "--report", "rep"]``.

    Returns
    -------
    AppSettings

    Examples
    --------
    >>> s = parse_app_args(["--bundle", "a", "--bundle", "b", "--max-upload-mb", "5"])
    >>> [p.name for p in s.bundles], s.report, s.max_upload_mb
    (['a', 'b'], None, 5)
    """
    parser = argparse.ArgumentParser(prog="cvretrieval-web", add_help=False)
    parser.add_argument("--bundle", action="append", default=[], type=Path)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--max-upload-mb", type=_positive_int, default=DEFAULT_MAX_UPLOAD_MB)
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        logger.warning("ignoring unknown web demo arguments: %s", " ".join(unknown))
    return AppSettings(
        bundles=list(args.bundle), report=args.report, max_upload_mb=args.max_upload_mb
    )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of a bundle folder, checked just enough to start the demo.

    Cheap (no index or catalog is opened): the app loads each bundle fully, and says
    what is wrong with it, when the page first needs it.

    Raises
    ------
    BundleError
        ``path`` is not a folder, has no readable manifest, or the manifest is not a
        cvretrieval bundle manifest of a format this version reads.
    """
    from ..retriever import read_bundle_manifest

    return read_bundle_manifest(Path(path))


def decode_upload(
    data: bytes, name: str, max_mb: float, max_pixels: int | None = DEFAULT_MAX_UPLOAD_PIXELS
) -> NDArray[np.uint8]:
    """Decode an uploaded file in memory into a full-resolution RGB image.

    The content decides, not the name: a PNG named ``photo.jpg`` (or with no suffix)
    decodes; a text file named ``photo.jpg`` is refused.

    Parameters
    ----------
    data : bytes
        The file's content (never written to disk).
    name : str
        The file name the browser sent, used in messages only (on one line).
    max_mb : float
        Size limit in megabytes (10**6 bytes, as Streamlit counts them).
    max_pixels : int or None, optional
        Images whose header declares more pixels are refused before decoding.

    Returns
    -------
    image : (H, W, 3) ndarray of uint8
        Orientation-corrected, not downscaled, so boxes are in the file's pixel frame.

    Raises
    ------
    ImageReadError
        Too large (bytes or pixels), empty, not an image, truncated, a decompression
        bomb, or anything else that stops decoding; one line that names the file and
        says what to do.
    """
    name = " ".join(str(name).split()) or "the upload"
    size_mb = len(data) / 1e6
    if size_mb > max_mb:
        raise ImageReadError(
            f"{name} is {size_mb:.1f} MB; uploads are limited to {max_mb:g} MB: "
            "send a smaller image (or start the demo with a larger --max-upload-mb)"
        )
    try:
        return read_image(data, max_side=None, max_pixels=max_pixels)
    except ImageReadError as exc:
        raise ImageReadError(str(exc).replace("<bytes>", name, 1)) from None
    except Exception as exc:  # the page shows a message, never a traceback
        logger.warning("cannot decode upload %s", name, exc_info=True)
        text = " ".join(str(exc).split())[:200]
        raise ImageReadError(
            f"cannot read image {name}: {type(exc).__name__}: {text}; upload another image"
        ) from None


def display_copy(image: NDArray[np.uint8], max_side: int) -> tuple[NDArray[np.uint8], float]:
    """A copy of ``image`` whose long side is at most ``max_side``, and the scale used.

    Returns
    -------
    small : (h, w, 3) ndarray of uint8
    scale : float
        ``original / small`` (>= 1): multiply display coordinates by it to get the
        original image's pixel coordinates.

    Examples
    --------
    >>> small, scale = display_copy(np.zeros((100, 400, 3), np.uint8), 200)
    >>> small.shape, scale
    ((50, 200, 3), 2.0)
    """
    h, w = image.shape[:2]
    small = read_image(image, max_side=max_side)
    return small, w / small.shape[1] if small.shape[1] else 1.0


def box_from_rect(rect: dict[str, float], scale: float, size: tuple[int, int]) -> BBox:
    """Turn a ``streamlit-cropper`` rectangle on a display copy into an image box.

    Parameters
    ----------
    rect : dict
        ``{"left", "top", "width", "height"}`` in display pixels.
    scale : float
        Original pixels per display pixel (from :func:`display_copy`).
    size : (width, height)
        Of the original image; the box is clipped to it.

    Returns
    -------
    (x0, y0, x1, y1) : tuple of float
        In the original image's pixel coordinates, as ``Retriever.search(bbox=...)`` takes.

    Examples
    --------
    >>> box_from_rect({"left": 10, "top": 5, "width": 20, "height": 30}, 2.0, (100, 100))
    (20.0, 10.0, 60.0, 70.0)
    """
    w, h = size
    x0 = min(max(float(rect["left"]) * scale, 0.0), float(w))
    y0 = min(max(float(rect["top"]) * scale, 0.0), float(h))
    x1 = min(max(float(rect["left"] + rect["width"]) * scale, 0.0), float(w))
    y1 = min(max(float(rect["top"] + rect["height"]) * scale, 0.0), float(h))
    return (round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2))


def check_box(box: Sequence[float], size: tuple[int, int]) -> BBox:
    """Validate a typed box ``(x0, y0, x1, y1)`` against an image of ``size = (w, h)``.

    Raises
    ------
    ValueError
        When the box is empty or lies outside the image; the message says how to fix it.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = size
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty: x1 must exceed x0 "
                         "and y1 must exceed y0")
    if x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0:
        raise ValueError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image")
    return (x0, y0, x1, y1)


def rerank_options(retriever: Any) -> tuple[str, ...]:
    """The re-ranking steps a retriever offers, read defensively.

    Looks for a ``supports_rerank`` attribute (a collection of names, or ``True`` for
    every step in :data:`RERANK_LABELS`), else a ``"rerank"`` entry of
    ``retriever.config()``; and requires ``retriever.search`` to take ``rerank``.
    Anything else means none (the page then hides the toggles).
    """
    try:
        params = inspect.signature(retriever.search).parameters
    except (AttributeError, TypeError, ValueError):
        return ()
    if "rerank" not in params:
        return ()
    offered: Any = getattr(retriever, "supports_rerank", None)
    if offered is None:
        try:
            offered = retriever.config().get("rerank")
        except Exception:  # a config() that fails must not take the page down
            offered = None
    if offered is True:
        return tuple(RERANK_LABELS)
    if isinstance(offered, str):
        offered = [offered]
    if isinstance(offered, dict):
        offered = [name for name, on in offered.items() if on]
    if not offered or not isinstance(offered, (list, tuple, set, frozenset)):
        return ()
    return tuple(name for name in RERANK_LABELS if name in set(map(str, offered)))


def run_search(
    retriever: Any,
    query: str | Path | NDArray[np.uint8],
    k: int,
    bbox: BBox | None = None,
    rerank: Sequence[str] = (),
) -> tuple[list[Any], float]:
    """Search one retriever exactly as ``cvret search`` does and time it.

    ``rerank`` is passed on whenever the retriever offers re-ranking (even empty, so a
    bundle's default re-ranking is switched off with the toggles), and only then, so
    retrievers without re-ranking work.

    Returns
    -------
    hits : list of Hit
    seconds : float
        Wall time of the search (embedding the query included).
    """
    kwargs: dict[str, Any] = {"k": int(k), "bbox": bbox}
    if rerank or rerank_options(retriever):
        kwargs["rerank"] = tuple(rerank)
    t0 = time.perf_counter()
    hits = retriever.search(query, **kwargs)
    return list(hits), time.perf_counter() - t0


def card_width(n_bundles: int) -> int:
    """Width in CSS pixels of a result card: narrower when bundles share the page."""
    return {1: 170, 2: 128}.get(n_bundles, 112)


def describe_embedder(spec: dict[str, Any]) -> str:
    """A short name for an embedder spec (``Embedder.spec()``), e.g. ``'bovw-orb, 64 words'``.

    Examples
    --------
    >>> describe_embedder({"name": "bovw", "params": {"detector": "orb", "n_words": 64}})
    'bovw-orb, 64 words'
    >>> describe_embedder({"name": "hog", "params": {"size": 128}})
    'hog'
    """
    name = str(spec.get("name", "?"))
    params = spec.get("params") or {}
    detector = params.get("detector")
    if detector and not name.endswith(str(detector)):
        name = f"{name}-{detector}"
    if params.get("n_words"):
        name += f", {params['n_words']} words"
    return name


def format_seconds(seconds: float) -> str:
    """``'12.3 ms'`` below a second, ``'1.23 s'`` above.

    >>> format_seconds(0.0123), format_seconds(1.234)
    ('12.3 ms', '1.23 s')
    """
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
