"""The Streamlit pages of the web demo: search, and a saved evaluation report.

Run through :func:`cvretrieval.web.serve` (``cvret serve``); the logic lives in
:mod:`cvretrieval.web.core`, this module only lays out widgets. Uploaded files stay
in memory (Streamlit keeps them there; they are decoded from bytes), nothing is
written to disk.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import streamlit as st
from numpy.typing import NDArray

from ..errors import CVRetrievalError, ImageReadError
from ..io import read_image
from .core import (
    RERANK_LABELS,
    UPLOAD_TYPES,
    AppSettings,
    BBox,
    box_from_rect,
    card_width,
    check_box,
    decode_upload,
    describe_embedder,
    display_copy,
    format_seconds,
    parse_app_args,
    rerank_options,
    run_search,
)

logger = logging.getLogger(__name__)

PREVIEW_SIDE = 480  # long side of the query preview / cropper canvas, in pixels
THUMB_SIDE = 256  # long side of result thumbnails, in pixels
MAX_PICK_OPTIONS = 1000  # indexed images listed at once in the picker
SOURCES = ("Upload an image", "Pick an indexed image")
REGIONS = ("Whole image", "Drag a box", "Type a box")


@dataclass
class Query:
    """The query the page searches with."""

    source: Any  # a path (str) for an indexed image, the decoded array for an upload
    image: NDArray[np.uint8]  # full resolution RGB, for previews and box limits
    name: str
    key: str  # changes when the query changes (resets the box widgets)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


def current_settings() -> AppSettings:
    """The arguments the script was started with (after ``--``)."""
    return parse_app_args(sys.argv[1:])


# --- cached resources -------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading bundle…")
def load_retriever(path: str) -> Any:
    """Open a bundle once per server process (searches run in this process: n_jobs=1)."""
    from ..retriever import Retriever

    return Retriever.load(path, n_jobs=1)


@st.cache_resource
def _search_lock(path: str) -> threading.Lock:
    """One search at a time per bundle: sessions share the retriever."""
    return threading.Lock()


@st.cache_data(max_entries=16, show_spinner=False)
def _read_full(path: str, mtime: float) -> NDArray[np.uint8]:
    return read_image(path, max_side=None)


@st.cache_data(max_entries=4, ttl=900, show_spinner=False)
def _decode_upload(data: bytes, name: str, max_mb: float) -> NDArray[np.uint8]:
    """Decoded once per upload, not on every rerun (few entries: full-size images are big)."""
    return decode_upload(data, name, max_mb)


@st.cache_data(max_entries=1024, show_spinner=False)
def _thumbnail(path: str, mtime: float) -> NDArray[np.uint8]:
    return read_image(path, max_side=THUMB_SIDE)


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


# --- pages ------------------------------------------------------------------------------
def search_page(settings: AppSettings) -> None:
    """Choose a query and a region, search every bundle, show the top K side by side."""
    st.title("Image search")
    bundles = _load_bundles(settings)
    if not bundles:
        st.error("No bundle could be opened: start the demo with `cvret serve BUNDLE` "
                 "where BUNDLE was written by `cvret index -o BUNDLE`.")
        return
    k, rerank = _sidebar(bundles, settings)
    left, right = st.columns([2, 3], gap="large")
    with left:
        query = _choose_query(bundles, settings)
    if query is None:
        return
    with right:
        valid, bbox = _choose_region(query)
    if not valid:
        return
    _show_results(bundles, query, k, bbox, rerank)


def report_page(settings: AppSettings) -> None:
    """Embed ``index.html`` written by ``cvret eval --report DIR``."""
    st.title("Evaluation report")
    if settings.report is None:
        st.info("No report was given. Write one with `cvret eval DATASET --report DIR` and start "
                "the demo with `cvret serve BUNDLE --report DIR`.")
        return
    index = settings.report / "index.html"
    if not index.is_file():
        st.warning(f"No report found: {index} does not exist. Write it with "
                   f"`cvret eval DATASET --report {settings.report}`.")
        return
    st.caption(str(index))
    try:
        html = index.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        st.error(f"cannot read {index}: {exc}")
        return
    # The report is a self-contained page written by cvret itself (trusted, local).
    if hasattr(st, "iframe"):
        st.iframe(html, height="content")
    else:  # Streamlit before st.iframe
        import streamlit.components.v1 as components

        components.html(html, height=1400, scrolling=True)


# --- pieces -----------------------------------------------------------------------------
def _load_bundles(settings: AppSettings) -> list[tuple[str, Any]]:
    loaded = []
    for path in settings.bundles:
        try:
            loaded.append((str(path), load_retriever(str(path))))
        except (CVRetrievalError, OSError, ValueError) as exc:
            st.error(f"cannot open bundle {path}: {exc}")
    return loaded


def _bundle_label(path: str, retriever: Any) -> str:
    return f"{Path(path).name} ({describe_embedder(retriever.config()['embedder'])})"


def _sidebar(bundles: list[tuple[str, Any]], settings: AppSettings) -> tuple[int, tuple[str, ...]]:
    with st.sidebar:
        st.header("Bundles")
        for path, ret in bundles:
            cfg = ret.config()
            st.markdown(f"**{Path(path).name}**  \n{describe_embedder(cfg['embedder'])} · "
                        f"{len(ret)} images · index `{cfg['index'].get('spec', '?')}`")
        largest = max(len(ret) for _, ret in bundles)
        top = max(1, min(50, largest))
        k = st.slider("Results per bundle (K)", 1, top, min(10, top), key="k")
        offered = sorted({o for _, ret in bundles for o in rerank_options(ret)},
                         key=list(RERANK_LABELS).index)
        rerank: list[str] = []
        if offered:
            st.header("Re-ranking")
            defaults = {d for _, ret in bundles for d in getattr(ret, "rerank", ())}
            for name in offered:
                if st.toggle(RERANK_LABELS[name], value=name in defaults, key=f"rerank-{name}"):
                    rerank.append(name)
        st.caption(f"Uploads up to {settings.max_upload_mb} MB, decoded in memory; "
                   "nothing is stored.")
    return k, tuple(rerank)


def _choose_query(bundles: list[tuple[str, Any]], settings: AppSettings) -> Query | None:
    source = st.radio("Query", SOURCES, horizontal=True, key="source")
    if source == SOURCES[0]:
        upload = st.file_uploader(
            f"An image file (up to {settings.max_upload_mb} MB)", type=UPLOAD_TYPES,
            key="upload", max_upload_size=settings.max_upload_mb,
        )
        if upload is None:
            st.info("Upload an image, or pick one of the indexed images.")
            return None
        data = upload.getvalue()
        try:
            image = _decode_upload(data, upload.name, float(settings.max_upload_mb))
        except ImageReadError as exc:
            st.error(str(exc))
            return None
        digest = hashlib.sha1(data).hexdigest()[:12]
        return Query(source=image, image=image, name=upload.name, key=f"up-{digest}")
    if len(bundles) > 1:
        b = int(st.selectbox("From bundle", range(len(bundles)), key="pick_bundle",
                             format_func=lambda i: _bundle_label(*bundles[i])) or 0)
    else:
        b = 0
    ret = bundles[b][1]
    ids = [e.id for e in ret.catalog if e.status == "ok"]
    if len(ids) > MAX_PICK_OPTIONS:
        pattern = st.text_input("Filter file names", key="pick_filter").strip().lower()
        ids = [i for i in ids if pattern in Path(ret.catalog[i].path).name.lower()]
        if len(ids) > MAX_PICK_OPTIONS:
            st.caption(f"{len(ids)} images match; the first {MAX_PICK_OPTIONS} are listed.")
            ids = ids[:MAX_PICK_OPTIONS]
    if not ids:
        st.info("No indexed image matches.")
        return None
    cid = st.selectbox("Indexed image", ids, key=f"pick_image-{b}",
                       format_func=lambda i: Path(ret.catalog[i].path).name)
    path = ret.catalog[cid].path
    try:
        image = _read_full(path, _mtime(path))
    except ImageReadError as exc:
        st.error(f"{exc} (the bundle's images may have moved)")
        return None
    return Query(source=path, image=image, name=Path(path).name, key=f"pick-{b}-{cid}")


def _choose_region(query: Query) -> tuple[bool, BBox | None]:
    """``(valid, box)``: the search box in the query's pixels, None for the whole image."""
    w, h = query.size
    region = st.radio("Region", REGIONS, horizontal=True, key="region")
    small, scale = display_copy(query.image, PREVIEW_SIDE)
    if region == REGIONS[1]:
        try:
            from streamlit_cropper import st_cropper
        except ImportError:
            st.warning("Dragging a box needs streamlit-cropper: pip install 'cvretrieval[web]'. "
                       "Type the box instead.")
            return True, None
        from PIL import Image

        rect = st_cropper(Image.fromarray(small), realtime_update=True, box_color="#ff4b4b",
                          return_type="box", should_resize_image=False, key=f"crop-{query.key}")
        bbox = box_from_rect(rect, scale, (w, h))
        st.caption(f"{query.name}: {w}×{h} px · box ({bbox[0]:.0f}, {bbox[1]:.0f}, "
                   f"{bbox[2]:.0f}, {bbox[3]:.0f})")
        return True, bbox
    if region == REGIONS[2]:
        cols = st.columns(4)
        fields = (("x0", w, 0), ("y0", h, 0), ("x1", w, w), ("y1", h, h))  # name, max, default
        values = [
            col.number_input(name, min_value=0, max_value=int(limit), value=int(default), step=1,
                             key=f"{name}-{query.key}")
            for col, (name, limit, default) in zip(cols, fields, strict=True)
        ]
        try:
            bbox = check_box(values, (w, h))
        except ValueError as exc:
            st.error(str(exc))
            st.image(small, caption=query.name)
            return False, None
        st.image(_draw_box(small, bbox, scale),
                 caption=f"{query.name}: {w}×{h} px · box ({bbox[0]:.0f}, {bbox[1]:.0f}, "
                         f"{bbox[2]:.0f}, {bbox[3]:.0f})")
        return True, bbox
    st.image(small, caption=f"{query.name}: {w}×{h} px")
    return True, None


def _draw_box(small: NDArray[np.uint8], bbox: BBox, scale: float) -> NDArray[np.uint8]:
    out = small.copy()
    p0 = (int(bbox[0] / scale), int(bbox[1] / scale))
    p1 = (int(bbox[2] / scale) - 1, int(bbox[3] / scale) - 1)
    cv2.rectangle(out, p0, p1, (255, 75, 75), max(2, round(max(out.shape[:2]) / 200)))
    return out


def _show_results(bundles: list[tuple[str, Any]], query: Query, k: int, bbox: BBox | None,
                  rerank: tuple[str, ...]) -> None:
    st.divider()
    results: dict[str, list[dict[str, Any]]] = {}
    columns = st.columns(len(bundles), gap="large")
    for b, ((path, ret), col) in enumerate(zip(bundles, columns, strict=True)):
        with col:
            st.subheader(Path(path).name)
            steps = tuple(s for s in rerank if s in rerank_options(ret))
            try:
                with _search_lock(path):
                    hits, seconds = run_search(ret, query.source, k, bbox, steps)
            except (CVRetrievalError, ValueError) as exc:
                st.error(str(exc))
                continue
            except Exception as exc:  # the page must show a message, never a traceback
                logger.exception("search failed in %s", path)
                st.error(f"search failed: {type(exc).__name__}: {exc}")
                continue
            extra = f" · re-ranked: {', '.join(steps)}" if steps else ""
            st.caption(f"{describe_embedder(ret.config()['embedder'])} · top {len(hits)} of "
                       f"{len(ret)} · query time {format_seconds(seconds)}{extra}")
            results[path] = [h.to_dict() for h in hits]
            with st.container(horizontal=True, key=f"results-{b}", gap="small"):
                for hit in hits:
                    _result_card(b, hit, ret.config().get("metric", "ip"), card_width(len(bundles)))
    st.session_state["results"] = results


def _result_card(b: int, hit: Any, metric: str, width: int) -> None:
    name = Path(hit.path).name
    with st.container(width=width, key=f"hit-{b}-{hit.rank}"):
        try:
            st.image(_thumbnail(hit.path, _mtime(hit.path)), output_format="JPEG",
                     caption=f"#{hit.rank} · {hit.score:.3f} · {name}")
        except ImageReadError:
            st.warning(f"#{hit.rank} · {hit.score:.3f} · {name}: image missing")
            return
        if st.button("View", key=f"view-{b}-{hit.rank}", icon=":material/zoom_in:",
                     type="tertiary", help="Show the full image"):
            _full_image(hit.path, f"#{hit.rank} · score {hit.score:.4f} ({metric})")


@st.dialog("Full image", width="large")
def _full_image(path: str, title: str) -> None:
    st.markdown(f"**{Path(path).name}** {title}")
    st.caption(path)
    try:
        st.image(_read_full(path, _mtime(path)), output_format="JPEG")
    except ImageReadError as exc:
        st.error(str(exc))
