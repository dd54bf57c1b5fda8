"""Near-duplicate groups of a collection: copies, crops, re-encodings, rotations.

Every image of a collection is searched against the others through the same
:class:`~cvretrieval.retriever.Retriever` (embedder and index) the rest of the
toolkit uses. Neighbour pairs whose similarity reaches a threshold are
*candidates*; with local features they are then confirmed by spatial
verification (a homography fitted with MAGSAC on ratio-test matches [1]_, with
enough inliers that are also a large enough share of the matches:
:mod:`cvretrieval.dedup_verify`), and the confirmed pairs are the edges of a sparse
graph whose connected components are the groups. Memory is bounded by ``k`` pairs
per image: there is never an all-pairs matrix.

References
----------
.. [1] J. Philbin, O. Chum, M. Isard, J. Sivic, A. Zisserman, "Object retrieval with
       large vocabularies and fast spatial matching", CVPR 2007.
.. [2] O. Chum, J. Philbin, A. Zisserman, "Near duplicate image detection: min-hash and
       tf-idf weighting", BMVC 2008.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .dedup_verify import PairVerifier, detector_of
from .errors import ImageReadError
from .io import list_images, read_image

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_MIN_INLIER_RATIO",
    "DuplicateResult",
    "find_duplicates",
    "group_pairs",
    "write_dedup_report",
]

logger = logging.getLogger(__name__)

#: The default embedder of :func:`find_duplicates` (chosen by benchmarks/dedup.py).
DEFAULT_FEATURES = "bovw-sift"

#: Embedder families built on local features: spatial verification is on by default.
LOCAL_FAMILIES = ("bovw", "vlad", "asmk")

#: Default candidate threshold (cosine similarity) per embedder family, without / with
#: verification; measured on harsh copy sets (docs/notes/dedup.md).
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "bovw": (0.3, 0.05),
    "vlad": (0.5, 0.2),
    "asmk": (0.3, 0.05),
    "hog": (0.9, 0.9),
}
FALLBACK_THRESHOLD = (0.85, 0.5)

#: Default fraction of a pair's tentative matches that the homography's inliers must
#: reach (see :func:`cvretrieval.dedup_verify.is_confirmed`; chosen in docs/notes/dedup.md).
DEFAULT_MIN_INLIER_RATIO = 0.6


@dataclass
class DuplicateResult:
    """What :func:`find_duplicates` found.

    Attributes
    ----------
    groups : list of dict
        ``{"paths": [...], "scores": [...]}``, largest group first; ``scores[i]`` is the
        best pair score linking ``paths[i]`` to another member of its group.
    pairs : list of (str, str, float)
        The confirmed pairs ``(path_a, path_b, score)`` (``path_a < path_b``), best first.
        ``score`` is the retrieval similarity of the pair.
    failed : list of dict
        ``{"path", "error"}`` for every image that could not be read (skipped).
    config : dict
        The parameters, the embedder and counts (images, candidates, verified, seconds).
    """

    groups: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[str, str, float]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``{"groups", "pairs", "failed", "config"}``."""
        return {
            "groups": [{"paths": list(g["paths"]), "scores": list(g["scores"])}
                       for g in self.groups],
            "pairs": [[a, b, float(s)] for a, b, s in self.pairs],
            "failed": list(self.failed),
            "config": dict(self.config),
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parent folders created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n",
                        encoding="utf-8")
        return path

    def pair_set(self) -> set[frozenset[str]]:
        """Every pair of paths that share a group (the transitive closure of ``pairs``)."""
        out: set[frozenset[str]] = set()
        for g in self.groups:
            p = g["paths"]
            out.update(frozenset((p[i], p[j])) for i in range(len(p)) for j in range(i + 1, len(p)))
        return out


def group_pairs(
    n: int, pairs: Sequence[tuple[int, int, float]]
) -> list[tuple[list[int], list[float]]]:
    """Connected components of the graph whose edges are ``pairs`` (node ids ``0..n-1``).

    Parameters
    ----------
    n : int
        Number of nodes.
    pairs : sequence of (int, int, float)
        Edges ``(a, b, score)``.

    Returns
    -------
    groups : list of (ids, scores)
        Components of two or more nodes, largest first (ties: smallest id first); ids
        sorted, ``scores[i]`` the best edge score at ``ids[i]``.

    Examples
    --------
    >>> group_pairs(5, [(0, 1, 0.9), (3, 1, 0.5)])
    [([0, 1, 3], [0.9, 0.9, 0.5])]
    """
    if not pairs:
        return []
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    s = np.array([p[2] for p in pairs], np.float64)
    graph = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    best = np.full(n, -np.inf)
    np.maximum.at(best, a, s)
    np.maximum.at(best, b, s)
    members: dict[int, list[int]] = {}
    for node in np.unique(np.concatenate([a, b])).tolist():
        members.setdefault(int(labels[node]), []).append(int(node))
    comps = sorted((sorted(m) for m in members.values() if len(m) > 1),
                   key=lambda m: (-len(m), m[0]))
    return [(m, [round(float(best[i]), 6) for i in m]) for m in comps]


def _family(features: Any) -> str:
    if not isinstance(features, str):
        return str(getattr(features, "name", type(features).__name__)).lower()
    from .embedders import parse_spec

    name, _ = parse_spec(features)
    return name.lower()


def _as_paths(
    paths_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> list[Path]:
    if isinstance(paths_or_dir, (str, os.PathLike)):
        root = Path(paths_or_dir)
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist: pass a folder of images or a list")
        return list_images(root) if root.is_dir() else [root]
    return [Path(p) for p in paths_or_dir]


def find_duplicates(
    paths_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    features: Any = DEFAULT_FEATURES,
    *,
    threshold: float | None = None,
    k: int = 10,
    verify: bool | None = None,
    min_inliers: int = 12,
    min_inlier_ratio: float = DEFAULT_MIN_INLIER_RATIO,
    index: str = "flat",
    max_side: int | None = 640,
    n_jobs: int = -1,
    batch_size: int = 256,
    random_state: int = 0,
    sv_features: int = 1000,
    progress: bool | None = None,
) -> DuplicateResult:
    """Groups of near-duplicate images (copies, crops, re-encodings, rotations).

    Parameters
    ----------
    paths_or_dir : folder, path or iterable of paths
        The collection (a folder is listed recursively).
    features : str or Embedder, default :data:`DEFAULT_FEATURES`
        Embedder spec (``"bovw-sift"``, ``"vlad"``, ``"hog"``, ``"onnx:model.onnx"``...).
    threshold : float, optional
        Pairs of neighbours whose similarity reaches this are candidates; default per
        embedder family (:data:`DEFAULT_THRESHOLDS`), lower when verifying.
    k : int, default 10
        Neighbours searched per image (bounds the pairs, hence memory: ``k`` per image).
    verify : bool, optional
        Confirm candidates by spatial verification; default on for local-feature
        embedders (bovw, vlad, asmk), off otherwise.
    min_inliers : int, default 12
        Inliers of the fitted homography that confirm a pair.
    min_inlier_ratio : float, default :data:`DEFAULT_MIN_INLIER_RATIO`
        ... and the fraction of the pair's ratio-test matches those inliers must reach:
        two different pictures that share a part (the same lettering or logo) have many
        matches of which one plane explains few. 0 turns the check off.
    index, max_side, n_jobs, random_state
        As for :class:`~cvretrieval.retriever.Retriever`.
    batch_size : int, default 256
        Images searched per batch.
    sv_features : int, default 1000
        Key points per image for the verification.
    progress : bool, optional
        Progress bars (default: when standard error is a terminal).

    Returns
    -------
    DuplicateResult

    Raises
    ------
    ValueError
        A bad parameter, or no image in ``paths_or_dir``.
    ImageReadError
        None of the images could be read.

    Examples
    --------
    >>> result = find_duplicates("photos/")                      # doctest: +SKIP
    >>> [len(g["paths"]) for g in result.groups]                 # doctest: +SKIP
    [5, 3, 2]
    """
    from .retriever import Retriever

    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if int(min_inliers) < 4:
        raise ValueError(
            f"min_inliers must be at least 4 (a homography's sample), got {min_inliers}"
        )
    if not 0.0 <= float(min_inlier_ratio) <= 1.0:
        raise ValueError(f"min_inlier_ratio must be in [0, 1], got {min_inlier_ratio}")
    t0 = time.perf_counter()
    paths = _as_paths(paths_or_dir)
    if not paths:
        raise ValueError(f"no images in {paths_or_dir!s}: the folder holds no image files")
    family = _family(features)
    if verify is None:
        verify = family in LOCAL_FAMILIES
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(family, FALLBACK_THRESHOLD)[1 if verify else 0]
    threshold = float(threshold)

    ret = Retriever(features, index=index, n_jobs=n_jobs, random_state=random_state,
                    max_side=max_side)
    ret.build(paths, progress=progress)
    catalog = [str(p) for p in ret.paths]
    failed = [dict(f) for f in getattr(ret, "last_run_", {}).get("failed", [])]
    bad = {f["path"] for f in failed}
    todo = [cid for cid, p in enumerate(catalog) if p not in bad]
    t_build = time.perf_counter() - t0

    best: dict[tuple[int, int], float] = {}
    kk = min(int(k) + 1, len(todo))
    bars_off = None if progress is None else not progress  # None: only on a terminal
    for start in tqdm(range(0, len(todo), int(batch_size)), desc="dedup search", unit="batch",
                      disable=bars_off, leave=False):
        ids = todo[start : start + int(batch_size)]
        X, rows, errors = ret.embed_queries([catalog[c] for c in ids])
        for j, err in enumerate(errors):
            if err:
                failed.append({"path": catalog[ids[j]], "error": err})
        if not rows:
            continue
        D, I = ret.search_vectors(X, kk)  # noqa: E741 - Faiss's name
        for r, row in enumerate(rows):
            a = ids[row]
            for d, b in zip(D[r].tolist(), I[r].tolist(), strict=True):
                if b < 0 or b == a or not np.isfinite(d) or d < threshold:
                    continue
                key = (a, b) if a < b else (b, a)
                if d > best.get(key, -np.inf):
                    best[key] = float(d)
    n_candidates = len(best)
    t_search = time.perf_counter() - t0 - t_build

    pairs = sorted(best.items())
    if verify and pairs:
        verifier = PairVerifier(detector_of(features), sv_features, max_side, min_inliers,
                                float(min_inlier_ratio))
        pairs = [((a, b), s) for (a, b), s in tqdm(pairs, desc="dedup verify", unit="pair",
                                                    disable=bars_off, leave=False)
                 if verifier.confirms(catalog[a], catalog[b])]
    t_verify = time.perf_counter() - t0 - t_build - t_search

    edges = [(a, b, s) for (a, b), s in pairs]
    groups = [
        {"paths": [catalog[i] for i in ids], "scores": scores}
        for ids, scores in group_pairs(len(catalog), edges)
    ]
    pair_list = sorted(((catalog[a], catalog[b], round(s, 6)) for a, b, s in edges),
                       key=lambda t: (-t[2], t[0], t[1]))
    embedder = ret.config().get("embedder")
    config = {
        "features": features if isinstance(features, str) else str(embedder),
        "embedder": embedder,
        "threshold": threshold,
        "k": int(k),
        "verify": bool(verify),
        "min_inliers": int(min_inliers),
        "min_inlier_ratio": float(min_inlier_ratio),
        "index": index,
        "max_side": max_side,
        "random_state": random_state,
        "images": len(paths),
        "skipped": len(failed),
        "candidates": n_candidates,
        "pairs": len(pair_list),
        "groups": len(groups),
        "seconds": {"build": round(t_build, 3), "search": round(t_search, 3),
                    "verify": round(t_verify, 3),
                    "total": round(time.perf_counter() - t0, 3)},
    }
    if failed:
        logger.warning("dedup: %d of %d images could not be read and were skipped",
                       len(failed), len(paths))
    logger.info("dedup: %d candidate pairs, %d kept, %d groups", n_candidates, len(pair_list),
                len(groups))
    return DuplicateResult(groups=groups, pairs=pair_list, failed=failed, config=config)


def write_dedup_report(
    result: DuplicateResult,
    out_dir: str | os.PathLike[str],
    *,
    thumb_size: int = 160,
    max_groups: int = 500,
) -> Path:
    """An HTML page of the groups with thumbnails: ``out_dir/index.html``.

    Thumbnails are JPEG files in ``out_dir/thumbs/`` (one per shown image, so the page
    stays small); each links to its full image. An unreadable image gets a grey tile.

    Parameters
    ----------
    result : DuplicateResult
    out_dir : str or os.PathLike
        Created if needed.
    thumb_size : int, default 160
        Long side of a thumbnail, in pixels.
    max_groups : int, default 500
        Groups shown (largest first); the page says how many more the JSON holds.

    Returns
    -------
    path : pathlib.Path
        ``out_dir / "index.html"``.

    Raises
    ------
    MissingExtraError
        Jinja2 is not installed (``pip install 'cvretrieval[report]'``).
    """
    import cv2

    from . import __version__
    from .errors import MissingExtraError

    try:
        import jinja2
    except ImportError as exc:
        raise MissingExtraError(
            "dedup reports need jinja2; install it with: pip install 'cvretrieval[report]'"
        ) from exc
    if int(thumb_size) < 16:
        raise ValueError(f"thumb_size must be at least 16 pixels, got {thumb_size}")
    out = Path(out_dir)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    numbered: dict[str, str] = {}

    def thumb(path: str) -> str:
        if path not in numbered:
            name = f"{len(numbered):06d}.jpg"
            try:
                img = read_image(path, max_side=int(thumb_size))
            except (ImageReadError, ValueError, OSError):
                img = np.full((int(thumb_size), int(thumb_size), 3), 230, np.uint8)
            cv2.imwrite(str(thumbs / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 85])
            numbered[path] = f"thumbs/{name}"
        return numbered[path]

    shown = result.groups[: int(max_groups)]
    groups = [
        {"images": [{"name": Path(p).name, "href": Path(p).resolve().as_uri(),
                    "thumb": thumb(p), "score": f"{s:.3f}"}
                   for p, s in zip(g["paths"], g["scores"], strict=True)]}
        for g in shown
    ]
    cfg = result.config
    n_dup = sum(len(g["paths"]) for g in result.groups)
    cards = [
        {"value": cfg.get("images", "?"), "label": "images"},
        {"value": len(result.groups), "label": "groups"},
        {"value": n_dup, "label": "images in groups"},
        {"value": len(result.pairs), "label": "pairs"},
        {"value": len(result.failed), "label": "unreadable (skipped)"},
    ]
    settings = [(k, v) for k, v in cfg.items() if k not in ("embedder",)]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("dedup.html.j2").render(
        version=__version__,
        title="Near-duplicate groups",
        subtitle=(f"features {cfg.get('features')}, threshold {cfg.get('threshold')}, "
                  f"verification {'on' if cfg.get('verify') else 'off'}"),
        cards=cards,
        groups=groups,
        hidden=max(0, len(result.groups) - len(shown)),
        failed=result.failed,
        size=int(thumb_size),
        settings=settings,
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    logger.info("wrote the dedup report %s (%d groups shown)", page, len(shown))
    return page
