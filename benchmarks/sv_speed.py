"""Spatial re-ranking speed and quality, and the sparse inverted file at scale.

Usage (from the checkout; the defaults are the full run, slow on 2 cores)::

    python benchmarks/sv_speed.py
    python benchmarks/sv_speed.py --queries 8 --distractors 40 --words 2000 \\
        --sparse-images 20000 --sparse-words 20000            # a quick check
    python benchmarks/sv_speed.py --skip-sparse                # part (a) only

Part (a), spatial verification on strongly degraded copies. ``--queries`` photos of
``--photos`` (default ``../shared/datasets/ukbench-56`` and ``caltech101-dev``) whose
long side is at least ``--min-query-side`` (400; most Caltech photos are 300 pixels,
thumbnails once downscaled), read at ``--max-side``, are the queries; the gallery holds 4
harsh copies of each (built with
:mod:`cvretrieval.copies`' attack functions with explicit parameters, see
:func:`harsh_copy`: crop to 55-75% of the area / rotation 6-30 degrees / perspective /
crop + rotation, then a photometric change, a 0.45-0.65 downscale and JPEG quality
12-25) and ``--distractors`` other photos. SIFT key points (``--detector``) of the
gallery are quantised on a ``--words`` k-means vocabulary (1000: coarse), indexed as
TF-IDF in a :class:`~cvretrieval.sparse.SparseIndex`, and kept in a
:class:`~cvretrieval.featurestore.FeatureStore` (words + uint8 descriptors). Every
query retrieves its top ``--top-n`` (100), re-ranked by

* ``words (default)``: :class:`~cvretrieval.rerank.spatial.SpatialVerifier` with
  tentative matches by shared word (bursty words dropped), a similarity RANSAC
  prefilter, then a MAGSAC homography;
* ``words+desc``: the same with the word pairs resolved by the stored descriptors
  (``matcher="words+desc"``);
* ``query MA 3``: each query key point carries its 3 nearest words (multiple
  assignment), recovering pairs that quantisation split;
* ``+ QE``: then verified query expansion (Chum et al. 2007): the query's TF-IDF vector
  plus those of its ``--qe-k`` verified results is searched again, the new short list is
  verified too, and verified images come first by inliers;
* ``ratio + MAGSAC`` (``--with-ratio``): brute-force descriptor ratio matching;
* ``(rank order)``: verified images first in the first stage's order (verification as a
  filter) instead of by inliers;
* ``(coverage...)``: copy detection, a verified candidate's inliers must also span
  ``--min-coverage`` (0.5) of its key points' convex hull (other photos of the same scene
  or object match on a part only); ``(coverage order)``: verified ones by coverage.

``--first-stage asmk`` takes the short lists from ASMK* (``--asmk-words`` 4096 words,
query multiple assignment 5) instead of BoVW; verification then matches on ASMK's words
and QE searches with the query's and the verified images' codes together
(:func:`cvretrieval.asmk_index.expand_codes`). ``--feature-cache FILE`` keeps the harsh
set's SIFT features between runs; ``--dump FILE.npz`` saves every row's ranking.

Reported: milliseconds of re-ranking per query (one process; query feature extraction,
assignment and the first search are reported apart, the same for all rows), mAP, P@1
and P@5 (a copy outside the final list counts as not found, for every row alike).

Part (b), the sparse inverted file: ``--sparse-images`` synthetic L2-normalised vectors
over ``--sparse-words`` words with ``--nnz`` non-zeros each (word ids uniform, or Zipf
with ``--zipf s``), queries made from database rows (half their words kept, half
replaced by random words). Reported: build seconds, memory of the vectors + inverted
file (against a dense float32 matrix, computed, not allocated), milliseconds per query
one at a time and in a batch of ``--sparse-queries``.

Timings are wall-clock, one run, on this machine; run it when the machine is quiet.
Results: a markdown table on standard output and JSON in ``benchmarks/out/sv_speed.json``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np
import scipy.sparse as sp
from _common import OUT, SHARED, machine, markdown_table, write_json

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from cvretrieval.copies import (  # noqa: E402
    attack_crop,
    attack_jpeg,
    attack_perspective,
    attack_photometric,
    attack_rotate,
)
from cvretrieval.evaluation import compute_map  # noqa: E402
from cvretrieval.features import bovw  # noqa: E402
from cvretrieval.features.local import LocalFeatureExtractor  # noqa: E402
from cvretrieval.features.vocabulary import KMeansVocabulary, sample_descriptors  # noqa: E402
from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter  # noqa: E402
from cvretrieval.io import list_images, read_image  # noqa: E402
from cvretrieval.rerank.spatial import SpatialVerifier  # noqa: E402
from cvretrieval.sparse import SparseIndex  # noqa: E402

logger = logging.getLogger("sv_speed")

SV_COLUMNS = ["rerank", "ms_per_query", "ransac_per_query", "mAP", "P@1", "P@5"]
SPARSE_COLUMNS = [
    "images",
    "words",
    "nnz_per_image",
    "build_s",
    "index_MB",
    "dense_MB",
    "ms_per_query",
    "ms_per_query_batched",
]


# --------------------------------------------------------------------------- part (a)


def harsh_copy(image: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """One strongly degraded copy, built from :mod:`cvretrieval.copies`' attacks with
    explicit parameters: a geometric attack (``kind`` 0: crop to 55-75% of the area,
    1: rotation by 6-30 degrees, 2: perspective, 3: crop and rotation), a photometric
    change, a 0.45-0.65 downscale and a JPEG re-encoding at quality 12-25."""
    if kind in (0, 3):
        image = attack_crop(image, rng, keep=(0.55, 0.75))
    if kind in (1, 3):
        image = attack_rotate(image, rng, max_angle=30.0)  # |angle| in [6, 30] degrees
    if kind == 2:
        image = attack_perspective(image, rng, strength=0.12)
    image = attack_photometric(image, rng)
    f = rng.uniform(0.45, 0.65)
    h, w = image.shape[:2]
    image = cv2.resize(image, (max(16, round(w * f)), max(16, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    return attack_jpeg(image, rng, quality=(12, 25))


def _long_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return max(im.size)


def make_harsh_set(photos: list[Path], n_queries: int, n_distractors: int, max_side: int,
                   seed: int, min_query_side: int = 400
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """Queries (originals whose long side is at least ``min_query_side``: smaller photos
    give thumbnails with a handful of key points once downscaled), gallery (4 harsh
    copies of each query, then distractors), gnd."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    big = [i for i in order if _long_side(photos[i]) >= min_query_side][:n_queries]
    rest = [i for i in order if i not in set(big)][:n_distractors]
    queries, gallery, gnd = [], [], []
    for qi, i in enumerate(big):
        img = read_image(photos[i], max_side=max_side)
        queries.append(img)
        gnd.append({"ok": list(range(4 * qi, 4 * qi + 4)), "junk": []})
        gallery += [harsh_copy(img, k, rng) for k in range(4)]
    gallery += [read_image(photos[i], max_side=max_side) for i in rest]
    return queries, gallery, gnd


def _extract(images: list[np.ndarray], detector: str, n_features: int, n_jobs: int):
    from joblib import Parallel, delayed

    def one(img: np.ndarray):
        cv2.setNumThreads(1)
        return LocalFeatureExtractor(detector, n_features).extract(img)

    return Parallel(n_jobs=n_jobs, batch_size=16)(delayed(one)(im) for im in images)


def _ranks_and_scores(ranked: np.ndarray, gnd: list[dict]) -> dict[str, float]:
    m, _, pr, _ = compute_map(ranked.T, gnd, kappas=[1, 5])
    return {"mAP": round(float(m), 4), "P@1": round(float(pr[0]), 4),
            "P@5": round(float(pr[1]), 4)}


def _verified_qe(sv, q_feat, q_words, requery, store, order, inliers, top_n, qe_k):
    """Chum et al. 2007: the query expanded with its top ``qe_k`` verified results is
    searched again (``requery(good)`` -> ids, best first); the new short list is verified
    too; verified images first (by inliers, or with ``order="rank"`` those of the first
    search then the new ones, each in search order), then the unverified ones in the order of the
    expanded search, then those of the first search."""
    good = order[inliers >= sv.min_inliers][:qe_k]
    if len(good) == 0:
        return order
    again = requery(good)
    seen = set(order[inliers >= sv.min_inliers].tolist())
    fresh = np.array([c for c in again if c >= 0 and c not in seen], np.int64)
    o2, i2 = sv.rerank(q_feat, fresh, store, query_words=q_words)
    ids = np.concatenate([order[inliers >= sv.min_inliers], o2[i2 >= sv.min_inliers]])
    cnt = np.concatenate([inliers[inliers >= sv.min_inliers], i2[i2 >= sv.min_inliers]])
    if sv.order == "inliers":
        ids = ids[np.argsort(-cnt, kind="stable")]
    rest = [c for c in again if c >= 0 and c not in set(ids.tolist())]
    rest += [c for c in order if c not in set(ids.tolist()) and c not in set(rest)]
    return np.array([*ids.tolist(), *rest], np.int64)[: len(order)]


class FirstStage:
    """A first stage's short lists, the visual words the verification matches on, and
    the expanded search of query expansion (``requery(qi, good_ids)``)."""

    def __init__(self, name: str, n_words: int) -> None:
        self.name, self.n_words = name, n_words
        self.shortlist: np.ndarray = np.zeros((0, 0), np.int64)
        self.g_words: list[np.ndarray] = []
        self.q_words: list[np.ndarray] = []
        self.q_words3: list[np.ndarray] = []
        self.ms: dict[str, float] = {}
        self._requery: Any = None

    def requery(self, qi: int, good: np.ndarray) -> np.ndarray:
        return self._requery(qi, good)


def bovw_first_stage(args, g_feats, q_feats, top_n: int) -> FirstStage:
    """TF-IDF BoVW on a ``--words`` k-means vocabulary in a sparse inverted file; QE adds
    the verified images' TF-IDF vectors to the query's."""
    t0 = time.perf_counter()
    sample = sample_descriptors([f.descriptors for f in g_feats], args.max_descriptors, args.seed)
    n_words = min(args.words, len(sample))
    vocab = KMeansVocabulary(n_words, niter=args.niter, random_state=args.seed).fit(sample)
    fs = FirstStage(f"BoVW {n_words} words", n_words)
    fs.ms["vocabulary_s"] = round(time.perf_counter() - t0, 1)
    fs.g_words = [vocab.assign(f.descriptors) for f in g_feats]
    t0 = time.perf_counter()
    fs.q_words = [vocab.assign(f.descriptors) for f in q_feats]
    fs.ms["assign"] = 1000 * (time.perf_counter() - t0) / len(q_feats)
    # multiple assignment of the query's key points (their 3 nearest words)
    fs.q_words3 = [faiss.knn(np.ascontiguousarray(f.descriptors, np.float32), vocab.centers_,
                             min(3, n_words))[1] for f in q_feats]
    tf = bovw.term_frequencies(fs.g_words, n_words)
    idf = bovw.idf_weights(bovw.document_frequencies(tf), tf.shape[0])
    xb = bovw.tfidf(tf, idf).tocsr()
    index = SparseIndex(n_words).build(xb)
    xq = bovw.tfidf(bovw.term_frequencies(fs.q_words, n_words), idf).tocsr()
    t0 = time.perf_counter()
    _, fs.shortlist = index.search(xq, top_n)
    fs.ms["search"] = 1000 * (time.perf_counter() - t0) / len(q_feats)

    def requery(qi: int, good: np.ndarray) -> np.ndarray:
        xe = xq[qi] + xb[good].sum(axis=0)
        xe = sp.csr_matrix(xe / max(np.linalg.norm(np.asarray(xe)), 1e-12))
        return index.search(xe, top_n)[1][0]

    fs._requery = requery
    return fs


def asmk_first_stage(args, g_feats, q_feats, top_n: int) -> FirstStage:
    """ASMK* (:class:`~cvretrieval.embedders.asmk.ASMKEmbedder`, ``--asmk-words`` words,
    query multiple assignment 5); the verification matches on its words (single
    assignment); QE searches with the query's and the verified images' codes together
    (:func:`~cvretrieval.asmk_index.expand_codes`, as ``cvret search`` does)."""
    from cvretrieval.asmk_index import expand_codes
    from cvretrieval.embedders.asmk import ASMKEmbedder
    from cvretrieval.features.asmk import as_float_descriptors

    t0 = time.perf_counter()
    emb = ASMKEmbedder(detector=args.detector, n_features=args.n_features,
                       n_words=args.asmk_words, max_descriptors=args.max_descriptors,
                       niter=args.niter, random_state=args.seed).fit(g_feats)
    n_words = int(emb.n_words)
    fs = FirstStage(f"ASMK {n_words} words", n_words)
    g_codes = [emb.reduce(f) for f in g_feats]
    index = emb.make_index()
    index.add_with_ids(g_codes, np.arange(len(g_codes)))
    fs.ms["vocabulary_s"] = round(time.perf_counter() - t0, 1)

    def words3(f) -> np.ndarray:  # query multiple assignment (3 words, within ma_ratio)
        w = emb._assign(as_float_descriptors(f.descriptors), 3)
        return np.where(w < 0, w[:, :1], w)

    fs.g_words = [emb.keypoint_words(f) for f in g_feats]
    fs.q_words = [emb.keypoint_words(f) for f in q_feats]
    fs.q_words3 = [words3(f) for f in q_feats]
    t0 = time.perf_counter()
    q_codes = [emb.reduce(f, query=True) for f in q_feats]
    fs.ms["assign"] = 1000 * (time.perf_counter() - t0) / len(q_feats)
    t0 = time.perf_counter()
    q_scores = [index.scores(c) for c in q_codes]
    fs.shortlist = np.stack([np.argsort(-s, kind="stable")[:top_n] for s in q_scores])
    fs.ms["search"] = 1000 * (time.perf_counter() - t0) / len(q_feats)

    def requery(qi: int, good: np.ndarray) -> np.ndarray:
        s = index.scores(expand_codes(q_codes[qi], [g_codes[int(j)] for j in good]))
        return np.argsort(-s, kind="stable")[:top_n]

    fs._requery = requery
    return fs


def harsh_features(args: argparse.Namespace):
    """``(q_feats, g_feats, gnd, extract_s, q_extract_ms)`` of the harsh set, read from
    ``--feature-cache`` when it holds this set (same photos, sizes, seed and detector)."""
    photos = [p for folder in args.photos for p in list_images(folder)]
    if not photos:
        raise SystemExit(f"no photos under {args.photos}")
    key = [str(x) for x in (args.photos, args.queries, args.distractors, args.max_side,
                            args.seed, args.min_query_side, args.detector, args.n_features)]
    cache = args.feature_cache
    if cache is not None and cache.exists():
        with open(cache, "rb") as fh:
            got = pickle.load(fh)
        if got["key"] == key:
            logger.warning("features read from %s", cache)
            return got["data"]
    t0 = time.perf_counter()
    q_imgs, g_imgs, gnd = make_harsh_set(photos, args.queries, args.distractors,
                                         args.max_side, args.seed, args.min_query_side)
    logger.warning("harsh copies: %d queries, %d gallery images (%.1f s)", len(q_imgs),
                   len(g_imgs), time.perf_counter() - t0)
    t0 = time.perf_counter()
    g_feats = _extract(g_imgs, args.detector, args.n_features, args.n_jobs)
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q_feats = _extract(q_imgs, args.detector, args.n_features, 1)
    q_extract_ms = 1000 * (time.perf_counter() - t0) / len(q_imgs)
    del g_imgs
    data = (q_feats, g_feats, gnd, extract_s, q_extract_ms)
    if cache is not None:
        with open(cache, "wb") as fh:
            pickle.dump({"key": key, "data": data}, fh)
    return data


def run_sv(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    q_feats, g_feats, gnd, extract_s, q_extract_ms = harsh_features(args)

    top_n = min(args.top_n, len(g_feats))
    make = asmk_first_stage if args.first_stage == "asmk" else bovw_first_stage
    fs = make(args, g_feats, q_feats, top_n)
    shortlist, g_words = fs.shortlist, fs.g_words
    q_words, q_words3 = fs.q_words, fs.q_words3
    in_list = [len(set(g["ok"]) & set(shortlist[i].tolist())) for i, g in enumerate(gnd)]
    recall = sum(in_list) / sum(len(g["ok"]) for g in gnd)
    logger.warning("copies in the %s top %d: %.3f", fs.name, top_n, recall)

    store_dir = work / "store"
    with FeatureStoreWriter(store_dir, words=True, max_keypoints=args.n_features,
                            meta={"detector": args.detector}) as writer:
        for f, w in zip(g_feats, g_words, strict=True):
            writer.append(f, words=w)
    store = FeatureStore.open(store_dir)
    del g_feats

    words = SpatialVerifier(top_n=top_n, min_inliers=args.min_inliers)
    desc = SpatialVerifier(top_n=top_n, min_inliers=args.min_inliers, matcher="words+desc")
    desc_rank = SpatialVerifier(top_n=top_n, min_inliers=args.min_inliers, matcher="words+desc",
                                order="rank")
    cov = {order: SpatialVerifier(top_n=top_n, min_inliers=args.min_inliers, matcher="words+desc",
                                  min_coverage=args.min_coverage, order=order)
           for order in ("inliers", "rank", "coverage")}
    configs: dict[str, tuple[Any, bool, list]] = {
        "none (first stage top-n)": (None, False, q_words),
        "words (default)": (words, False, q_words),
        "words+desc": (desc, False, q_words),
        "words+desc, query MA 3": (desc, False, q_words3),
        "words + QE": (words, True, q_words),
        "words+desc + QE": (desc, True, q_words),
        "words+desc, query MA 3 + QE": (desc, True, q_words3),
        "words+desc (rank order)": (desc_rank, False, q_words),
        "words+desc + QE (rank order)": (desc_rank, True, q_words),
        "words+desc (coverage)": (cov["inliers"], False, q_words),
        "words+desc + QE (coverage)": (cov["inliers"], True, q_words),
        "words+desc (coverage; rank order)": (cov["rank"], False, q_words),
        "words+desc + QE (coverage; rank order)": (cov["rank"], True, q_words),
        "words+desc (coverage order)": (cov["coverage"], False, q_words),
    }
    if args.with_ratio:
        configs["ratio + MAGSAC"] = (
            SpatialVerifier(top_n=top_n, min_inliers=args.min_inliers, matcher="ratio"), False,
            q_words)
    if args.only:
        keep = {n.strip() for n in args.only.split(",")}
        configs = {k: v for k, v in configs.items() if k in keep}
    rows, dump = [], {"shortlist": shortlist}
    for name, (sv, qe, qws) in configs.items():
        ranked = shortlist.copy()
        seconds, ransac = 0.0, 0
        if sv is not None:
            for qi in range(len(q_feats)):
                t = time.perf_counter()
                order, inl = sv.rerank(q_feats[qi], shortlist[qi], store, query_words=qws[qi])
                ransac += sv.stats_["ransac"]
                if qe:
                    order = _verified_qe(sv, q_feats[qi], qws[qi],
                                         lambda good, qi=qi: fs.requery(qi, good), store,
                                         order, inl, top_n, args.qe_k)
                seconds += time.perf_counter() - t
                ranked[qi] = order
        dump[name] = ranked
        row = {"rerank": name, **_ranks_and_scores(ranked, gnd)}
        row["ms_per_query"] = round(1000 * seconds / len(q_feats), 1) if sv else 0.0
        row["ransac_per_query"] = round(ransac / len(q_feats), 1)
        rows.append(row)
        logger.warning("%s: %s", name, row)
    if args.dump is not None:
        np.savez_compressed(args.dump, **dump)
    return {
        "params": {"queries": len(q_feats), "gallery": len(store), "top_n": top_n,
                   "detector": args.detector, "n_features": args.n_features,
                   "first_stage": fs.name, "words": fs.n_words,
                   "max_side": args.max_side, "seed": args.seed, "qe_k": args.qe_k,
                   "min_inliers": args.min_inliers, "min_coverage": args.min_coverage,
                   "shortlist_recall": round(recall, 4)},
        "seconds": {"extract_gallery": round(extract_s, 1),
                    "vocabulary": fs.ms["vocabulary_s"]},
        "ms_per_query": {"extract": round(q_extract_ms, 1), "assign": round(fs.ms["assign"], 1),
                         "search": round(fs.ms["search"], 2)},
        "store": store.stats(),
        "rows": rows,
        "table": markdown_table(rows, SV_COLUMNS),
    }


# --------------------------------------------------------------------------- part (b)


def synthetic_bovw(n: int, n_words: int, nnz: int, zipf: float, rng: np.random.Generator):
    """``(n, n_words)`` CSR with ``nnz`` distinct-ish words per row, L2-normalised rows."""
    if zipf > 0:
        p = 1.0 / np.arange(1, n_words + 1) ** zipf
        cols = rng.choice(n_words, size=n * nnz, p=p / p.sum())
    else:
        cols = rng.integers(0, n_words, size=n * nnz)
    rows = np.repeat(np.arange(n), nnz)
    data = rng.random(n * nnz).astype(np.float32) + 0.1
    x = sp.csr_matrix((data, (rows, cols)), shape=(n, n_words), dtype=np.float32)
    x.sum_duplicates()
    return bovw.tfidf(x, np.ones(n_words, np.float32))


def run_sparse(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n, v, nnz = args.sparse_images, args.sparse_words, args.nnz
    t0 = time.perf_counter()
    xb = synthetic_bovw(n, v, nnz, args.zipf, rng)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SparseIndex(v).build(xb)
    _ = index.inverted_
    build_s = time.perf_counter() - t0
    # queries: half the words of a database row, half random words
    nq = args.sparse_queries
    src = rng.integers(0, n, nq)
    noise = synthetic_bovw(nq, v, nnz // 2, args.zipf, rng)
    keep = xb[src].tocoo()
    half = rng.random(keep.nnz) < 0.5
    kept = sp.csr_matrix((keep.data[half], (keep.row[half], keep.col[half])), shape=(nq, v))
    xq = bovw.tfidf(kept + noise, np.ones(v, np.float32))
    k = 100
    t0 = time.perf_counter()
    for i in range(nq):
        index.search(xq[i], k)
    single_ms = 1000 * (time.perf_counter() - t0) / nq
    t0 = time.perf_counter()
    _, I = index.search(xq, k)  # noqa: E741
    batch_ms = 1000 * (time.perf_counter() - t0) / nq
    found = float(np.mean(I[:, 0] == src))
    row = {
        "images": n,
        "words": v,
        "nnz_per_image": round(xb.nnz / n, 1),
        "build_s": round(build_s, 2),
        "index_MB": round(index.nbytes / 2**20, 1),
        "dense_MB": round(n * v * 4 / 2**20, 1),
        "ms_per_query": round(single_ms, 2),
        "ms_per_query_batched": round(batch_ms, 2),
    }
    logger.warning("sparse: %s (source image ranked first for %.0f%% of queries)", row, 100 * found)
    return {
        "generate_s": round(gen_s, 1),
        "zipf": args.zipf,
        "queries": nq,
        "source_first": found,
        "rows": [row],
        "table": markdown_table([row], SPARSE_COLUMNS),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--photos", type=Path, nargs="+",
                    default=[SHARED / "datasets" / "ukbench-56",
                             SHARED / "datasets" / "caltech101-dev"])
    ap.add_argument("--min-query-side", type=int, default=400,
                    help="queries are photos whose long side is at least this")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--distractors", type=int, default=500)
    ap.add_argument("--detector", default="sift")
    ap.add_argument("--n-features", type=int, default=1000)
    ap.add_argument("--max-side", type=int, default=640)
    ap.add_argument("--first-stage", choices=("bovw", "asmk"), default="bovw",
                    help="short lists from TF-IDF BoVW (--words) or ASMK* (--asmk-words)")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--asmk-words", type=int, default=4096)
    ap.add_argument("--niter", type=int, default=10, help="k-means iterations")
    ap.add_argument("--max-descriptors", type=int, default=200_000)
    ap.add_argument("--top-n", type=int, default=100)
    ap.add_argument("--min-inliers", type=int, default=12)
    ap.add_argument("--min-coverage", type=float, default=0.5,
                    help="rows '(coverage...)': inliers' hull over the candidate's key points")
    ap.add_argument("--qe-k", type=int, default=3, help="verified results that expand a query")
    ap.add_argument("--with-ratio", action="store_true", help="also brute-force ratio matching")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--sparse-images", type=int, default=100_000)
    ap.add_argument("--sparse-words", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=100, help="non-zeros per synthetic image")
    ap.add_argument(
        "--zipf", type=float, default=0.0, help="Zipf exponent of word ids (0: uniform)"
    )
    ap.add_argument("--sparse-queries", type=int, default=200)
    ap.add_argument("--only", default=None,
                    help="comma-separated row names to run (default: all)")
    ap.add_argument("--skip-sv", action="store_true")
    ap.add_argument("--skip-sparse", action="store_true")
    ap.add_argument("--feature-cache", type=Path, default=None,
                    help="pickle of the harsh set's features, reused by later runs")
    ap.add_argument("--dump", type=Path, default=None,
                    help="npz of every row's final ranking (and the short lists)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT / "sv_speed.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    result: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="sv_speed-") as tmp:
        work = args.work or Path(tmp)
        if not args.skip_sv:
            result["spatial"] = run_sv(args, work)
            p = result["spatial"]["params"]
            print(
                f"\n(a) spatial re-ranking: {p['queries']} queries, {p['gallery']} gallery "
                f"images, top {p['top_n']}, {p['detector']} + {p['words']} words; store "
                f"{result['spatial']['store']['bytes_per_image'] / 1024:.1f} kB/image\n"
            )
            print(result["spatial"]["table"])
    if not args.skip_sparse:
        result["sparse"] = run_sparse(args)
        print(f"\n(b) sparse inverted file, k=100, {args.sparse_queries} queries\n")
        print(result["sparse"]["table"])
    print(f"\nwritten {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
