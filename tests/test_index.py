"""Tests of the Faiss wrapper against brute-force numpy and known answers."""

# ruff: noqa: E741  (D, I are Faiss's names for distances and ids)

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvretrieval.errors import BundleError, IndexTrainingError, NotFittedError
from cvretrieval.index import (
    METRICS,
    PRESETS,
    Index,
    default_nprobe,
    preset_nlist,
    resolve_factory,
)

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """Run Faiss single-threaded here: test machines are often shared, and OpenMP's
    spin-waiting makes oversubscribed runs of many small indexes 10-50x slower.
    Results do not depend on the number of threads (except HNSW construction order)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_data(n: int, d: int, metric: str, seed: int = 0) -> np.ndarray:
    """Distinct Gaussian vectors, L2-normalised for the inner-product metric."""
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return normalise(x) if metric == "ip" else x


def clustered_data(
    n: int, d: int, metric: str, n_clusters: int = 40, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture (database, queries drawn from the same mixture)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32) * 4.0

    def sample(m: int) -> np.ndarray:
        x = centers[rng.integers(0, n_clusters, m)] + rng.standard_normal((m, d))
        x = x.astype(np.float32)
        return normalise(x) if metric == "ip" else x

    return sample(n), sample(100)


def brute_scores(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """Inner products, or squared L2 distances, computed in float64 numpy."""
    xq64, xb64 = xq.astype(np.float64), xb.astype(np.float64)
    if metric == "ip":
        return xq64 @ xb64.T
    return (xq64**2).sum(1)[:, None] - 2 * xq64 @ xb64.T + (xb64**2).sum(1)[None, :]


def brute_knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str):
    S = brute_scores(xq, xb, metric)
    order = np.argsort(-S if metric == "ip" else S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, axis=1), order


def recall_at_k(I: np.ndarray, I_true: np.ndarray) -> float:
    """Fraction of the true k nearest found in the returned k."""
    hits = sum(len(set(a) & set(b)) for a, b in zip(I.tolist(), I_true.tolist(), strict=True))
    return hits / I_true.size


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("spec", "n", "d", "expected"),
    [
        ("flat", 50, 32, "Flat"),
        ("FLAT", 7, 3, "Flat"),
        # nlist = round(4 sqrt n) capped at n // 39
        ("ivf", 1, 8, "IVF1,Flat"),
        ("ivf", 50, 32, "IVF1,Flat"),
        ("ivf", 500, 32, "IVF12,Flat"),  # 4*sqrt(500)=89 > 500//39=12
        ("ivf", 5000, 32, "IVF128,Flat"),  # 4*sqrt(5000)=283 > 128
        ("ivf", 1_000_000, 32, "IVF4000,Flat"),  # 4*sqrt(1e6)=4000 < 25641
        # m = largest divisor of d <= d//4 (<= 64), nbits = floor(log2 n) <= 8
        ("pq", 50, 32, "PQ8x5np"),
        ("pq", 500, 128, "PQ32x8np"),
        ("pq", 300, 100, "PQ25x8np"),
        ("pq", 300, 30, "PQ6x8np"),  # 7 does not divide 30
        ("pq", 300, 3, "PQ1x8np"),
        ("pq", 2, 512, "PQ64x1np"),
        ("pq", 200_000, 128, "IVF1789,PQ32np"),
        ("lsh", 50, 32, "LSH64rt"),
        ("lsh", 50, 4096, "LSH4096rt"),
        ("hnsw", 50, 32, "HNSW32"),
        ("IVF64,PQ16", 10_000, 128, "IVF64,PQ16"),
        ("OPQ16,IVF256,PQ16", 10_000, 128, "OPQ16,IVF256,PQ16"),
        ("HNSW16,Flat", 10, 8, "HNSW16,Flat"),
    ],
)
def test_resolve_factory_known_answers(spec, n, d, expected):
    assert resolve_factory(spec, n, d) == expected


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 10**7), d=st.integers(1, 2048))
def test_preset_rules_hold_for_any_size(n, d):
    nlist = preset_nlist(n)
    assert 1 <= nlist <= min(n, 65536)
    assert nlist == 1 or n // nlist >= 39
    assert 1 <= default_nprobe(nlist) <= min(nlist, 64)
    pq = resolve_factory("pq", n, d)
    assert pq.endswith("np")  # no polysemous training
    pq = pq[:-2]
    if pq.startswith("PQ"):
        m, nbits = map(int, pq[2:].split("x"))
        assert 2**nbits <= max(n, 2) and 1 <= nbits <= 8
    else:
        m = int(pq.split("PQ")[1])
        assert n >= 100_000
    assert d % m == 0 and 1 <= m <= max(1, min(64, d // 4))
    # the largest such divisor
    assert not any(d % j == 0 for j in range(m + 1, max(1, min(64, d // 4)) + 1))


def test_bad_factory_string_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"IVF12,Bogus.*flat, ivf, lsh, pq, hnsw"):
        Index("IVF12,Bogus").build(random_data(50, 8, "ip"))
    with pytest.raises(ValueError, match="Nope"):
        resolve_factory("Nope", 10, 8)


def test_bad_metric_lists_metrics():
    with pytest.raises(ValueError, match=r"'cosine'.*ip, l2"):
        Index("flat", metric="cosine")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_nprobe_and_k(bad):
    with pytest.raises(ValueError, match="nprobe"):
        Index("ivf", nprobe=bad)
    index = Index("flat").build(random_data(10, 4, "ip"))
    with pytest.raises(ValueError, match="k must"):
        index.search(random_data(1, 4, "ip"), bad)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n", [50, 500, 5000])
@pytest.mark.parametrize("d", [32, 128])
def test_flat_is_brute_force(metric, n, d):
    rng = np.random.default_rng(n + d)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((20, d)).astype(np.float32)
    k = 10
    index = Index("flat", metric).build(xb)
    D, I = index.search(xq, k)
    D_true, _ = brute_knn(xq, xb, k, metric)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (20, k)
    np.testing.assert_allclose(D, D_true, rtol=1e-4, atol=1e-3)
    # the returned ids really have those scores (tie-robust check of I)
    S = brute_scores(xq, xb, metric)
    np.testing.assert_allclose(np.take_along_axis(S, I, axis=1), D_true, rtol=1e-4, atol=1e-3)
    assert index.higher_is_better is (metric == "ip")


@pytest.mark.parametrize("metric", METRICS)
def test_ivf_with_all_lists_probed_is_exact(metric):
    xb, xq = clustered_data(2000, 16, metric)
    index = Index("ivf", metric, nprobe=10_000).build(xb)
    assert index.nlist == 51  # 2000 // 39
    _, I_true = brute_knn(xq, xb, 10, metric)
    _, I = index.search(xq, 10)
    assert recall_at_k(I, I_true) > 0.999


# ----------------------------------------------------------------------------- approximate


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", [32, 128])
@pytest.mark.parametrize(("spec", "floor"), [("ivf", 0.9), ("hnsw", 0.9)])
def test_recall_ivf_hnsw(spec, floor, metric, d):
    xb, xq = clustered_data(5000, d, metric, seed=d)
    _, I_true = brute_knn(xq, xb, 10, metric)
    index = Index(spec, metric).build(xb)
    _, I = index.search(xq, 10)
    assert recall_at_k(I, I_true) >= floor


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("n", "d"), [(2000, 32), (500, 128)])
@pytest.mark.parametrize("spec", ["pq", "lsh"])
def test_true_nearest_in_top10_pq_lsh(spec, metric, n, d):
    # queries are slightly perturbed database vectors, so the true nearest is clear-cut
    rng = np.random.default_rng(d)
    xb, _ = clustered_data(n, d, metric, seed=d)
    noise = (0.02 if metric == "ip" else 0.3) * rng.standard_normal((100, d))
    xq = (xb[rng.choice(n, 100, replace=False)] + noise).astype(np.float32)
    if metric == "ip":
        xq = normalise(xq)
    _, I_true = brute_knn(xq, xb, 1, metric)
    index = Index(spec, metric).build(xb)
    _, I = index.search(xq, 10)
    found = np.mean([t in row for t, row in zip(I_true[:, 0], I, strict=True)])
    assert found >= 0.7


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("spec", "floor"), [("flat", 1.0), ("ivf", 1.0), ("hnsw", 0.99), ("pq", 0.95)]
)
def test_indexed_vector_finds_itself_first(spec, floor, metric):
    xb = random_data(1000, 32, metric, seed=3)
    index = Index(spec, metric).build(xb)
    _, I = index.search(xb[:200], 5)
    assert np.mean(I[:, 0] == np.arange(200)) >= floor


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("spec", PRESETS)
def test_fifty_vectors_work_for_every_preset(spec, metric):
    xb = random_data(50, 32, metric, seed=5)
    index = Index(spec, metric).build(xb)
    assert index.ntotal == len(index) == 50 and index.d == 32
    D, I = index.search(xb[:7], 10)
    assert D.shape == I.shape == (7, 10)
    assert ((I >= 0) & (I < 50)).all()
    assert all(len(set(row)) == 10 for row in I.tolist())
    # best first
    diffs = np.diff(D, axis=1)
    assert (diffs <= 1e-5).all() if index.higher_is_better else (diffs >= -1e-5).all()


def test_lsh_reports_hamming_distances():
    xb = random_data(200, 16, "ip")
    index = Index("lsh", "ip").build(xb)
    assert index.factory == "LSH32rt" and index.higher_is_better is False
    D, I = index.search(xb[:10], 5)
    assert np.array_equal(D, np.round(D)) and (D >= 0).all() and (D <= 32).all()
    assert (D[:, 0] == 0).all()  # a vector has Hamming distance 0 to its own code
    assert (np.diff(D, axis=1) >= 0).all()


# ----------------------------------------------------------------------------- training errors


def test_too_few_vectors_for_explicit_ivf():
    with pytest.raises(IndexTrainingError, match=r"IVF1024,Flat.*1024.*got 50.*IVF1,Flat"):
        Index("IVF1024,Flat").build(random_data(50, 16, "ip"))


def test_too_few_vectors_for_custom_pq_string():
    # 256 PQ centroids cannot be trained on 100 vectors
    with pytest.raises(IndexTrainingError, match="100"):
        Index("OPQ4,IVF2,PQ4", "l2").build(random_data(100, 16, "l2"))


# ----------------------------------------------------------------------------- k, add, dims


@pytest.mark.parametrize("metric", METRICS)
def test_k_larger_than_ntotal_is_padded(metric):
    xb = random_data(5, 8, metric)
    index = Index("flat", metric).build(xb)
    D, I = index.search(xb[:2], 8)
    assert D.shape == I.shape == (2, 8)
    assert (I[:, 5:] == -1).all()
    assert sorted(I[0, :5].tolist()) == list(range(5))
    assert np.isinf(D[:, 5:]).all()
    assert (D[:, 5:] < 0).all() if metric == "ip" else (D[:, 5:] > 0).all()
    assert np.isfinite(D[:, :5]).all()


def test_add_appends_and_new_ids_continue():
    xb = random_data(100, 16, "l2", seed=1)
    extra = random_data(30, 16, "l2", seed=2)
    index = Index("flat", "l2").build(xb)
    index.add(extra)
    assert index.ntotal == 130
    D, I = index.search(extra, 1)
    assert np.array_equal(I[:, 0], np.arange(100, 130))
    np.testing.assert_allclose(D[:, 0], 0, atol=1e-4)


def test_add_before_build_builds():
    index = Index("ivf", "ip")
    index.add(random_data(100, 8, "ip"))
    assert index.ntotal == 100 and index.factory == "IVF2,Flat"


def test_dimension_mismatch_names_both_dims():
    index = Index("flat").build(random_data(20, 16, "ip"))
    with pytest.raises(ValueError, match=r"dimension 8.*dimension 16"):
        index.add(random_data(3, 8, "ip"))
    with pytest.raises(ValueError, match=r"dimension 12.*dimension 16"):
        index.search(random_data(3, 12, "ip"), 2)


def test_non_finite_and_empty_input():
    xb = random_data(20, 4, "l2")
    xb[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        Index("flat", "l2").build(xb)
    with pytest.raises(ValueError, match="empty"):
        Index("flat").build(np.zeros((0, 4), np.float32))


def test_single_vector_query_and_float64_input():
    xb = np.random.default_rng(0).standard_normal((30, 6))  # float64 is converted
    index = Index("flat", "l2").build(xb)
    D, I = index.search(xb[4], 1)
    assert I.shape == (1, 1) and I[0, 0] == 4


def test_unbuilt_index_raises_not_fitted():
    index = Index("hnsw")
    with pytest.raises(NotFittedError, match="build"):
        index.search(random_data(2, 4, "ip"), 3)
    with pytest.raises(NotFittedError):
        index.save("unused")
    assert index.ntotal == 0 and index.config()["factory"] is None


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("spec", [*PRESETS, "OPQ4,IVF8,PQ4x4np", "HNSW16,Flat"])
def test_save_load_round_trip_is_identical(spec, metric, tmp_path):
    xb, xq = clustered_data(600, 32, metric)
    index = Index(spec, metric, nprobe=3, ef_search=50, random_state=7).build(xb)
    D, I = index.search(xq, 10)
    index.save(tmp_path / "idx")
    on_disk = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert on_disk["format_version"] == 1 and on_disk["factory"] == index.factory
    loaded = Index.load(tmp_path / "idx")
    assert loaded.config() == index.config()
    assert loaded.higher_is_better == index.higher_is_better
    D2, I2 = loaded.search(xq, 10)
    assert np.array_equal(I, I2) and np.array_equal(D, D2)


def test_add_after_load_appends(tmp_path):
    xb = random_data(300, 16, "ip", seed=1)
    Index("ivf", "ip").build(xb).save(tmp_path)
    loaded = Index.load(tmp_path)
    extra = random_data(10, 16, "ip", seed=9)
    loaded.add(extra)
    assert loaded.ntotal == 310
    _, I = loaded.search(extra, 1)
    assert np.array_equal(I[:, 0], np.arange(300, 310))


def test_search_params_settable_after_load(tmp_path):
    xb, xq = clustered_data(3000, 16, "l2")
    Index("ivf", "l2").build(xb).save(tmp_path)
    loaded = Index.load(tmp_path)
    assert loaded.nprobe is None
    loaded.nprobe = loaded.nlist  # every list: exact
    _, I = loaded.search(xq, 10)
    _, I_true = brute_knn(xq, xb, 10, "l2")
    assert recall_at_k(I, I_true) > 0.999
    loaded.save(tmp_path)
    assert Index.load(tmp_path).nprobe == loaded.nlist


def test_hnsw_ef_search_is_used():
    xb = random_data(2000, 32, "l2", seed=4)
    xq = random_data(100, 32, "l2", seed=5)
    _, I_true = brute_knn(xq, xb, 10, "l2")
    index = Index("hnsw", "l2").build(xb)
    index.ef_search = 1  # Faiss still explores max(efSearch, k), a weak search
    low = recall_at_k(index.search(xq, 10)[1], I_true)
    index.ef_search = 400
    high = recall_at_k(index.search(xq, 10)[1], I_true)
    assert high > low and high > 0.95


@pytest.fixture
def saved(tmp_path):
    Index("flat", "l2").build(random_data(20, 4, "l2")).save(tmp_path / "b")
    return tmp_path / "b"


def _edit_json(folder, **changes):
    path = folder / "index.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: (f / "index.json").unlink(), "index.json is missing"),
        (lambda f: (f / "index.faiss").unlink(), "index.faiss is missing"),
        (lambda f: (f / "index.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "index.json").write_text("[1, 2]"), "JSON object"),
        (lambda f: _edit_json(f, format_version=2), "format_version 2"),
        (lambda f: _edit_json(f, ntotal=21), "20 vectors.*21"),
        (lambda f: _edit_json(f, d=5), "dimension 4.*dimension 5"),
        (lambda f: _edit_json(f, metric="ip"), "metric"),
        (lambda f: _edit_json(f, metric="cosine"), "cosine"),
        (lambda f: (f / "index.faiss").write_bytes(b"garbage" * 10), "not a readable"),
    ],
)
def test_load_errors_are_bundle_errors(saved, damage, match):
    damage(saved)
    with pytest.raises(BundleError, match=match) as info:
        Index.load(saved)
    assert "\n" not in str(info.value)


def test_load_missing_folder(tmp_path):
    with pytest.raises(BundleError, match="missing"):
        Index.load(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("spec", ["flat", "ivf", "pq", "lsh", "IVF16,PQ8np"])
def test_builds_are_reproducible(spec):
    xb, xq = clustered_data(3000, 32, "l2")
    a = Index(spec, "l2", random_state=3).build(xb).search(xq, 10)
    b = Index(spec, "l2", random_state=3).build(xb).search(xq, 10)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])


def test_random_state_reaches_faiss_kmeans():
    xb, _ = clustered_data(3000, 16, "l2")
    centroids = []
    for seed in (0, 0, 1):
        index = Index("ivf", "l2", random_state=seed).build(xb)
        quantizer = faiss.extract_index_ivf(index.index_).quantizer
        centroids.append(quantizer.reconstruct_n(0, quantizer.ntotal))
    assert np.array_equal(centroids[0], centroids[1])
    assert not np.array_equal(centroids[0], centroids[2])


def test_default_nprobe_values():
    assert default_nprobe(1) == 1
    assert default_nprobe(5) == 5
    assert default_nprobe(128) == 16
    assert default_nprobe(4000) == 64
    assert math.isclose(preset_nlist(5000), 128)


def test_auto_caps_nlist_by_the_training_sample():
    """``auto`` sized nlist from the planned count alone: a bundle of 8,100-d HOG vectors
    trained 1,265 lists on 8,285 vectors (6.5 a list), and one list held 4,815 of 100k."""
    from cvretrieval.index import Index, choose_index

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((11_700, 32)).astype(np.float32)
    assert choose_index(1_000_000, 32, max_memory="50M")[0] == "IVF4000,SQ8"
    index = Index("auto", max_memory="50M").train(xb, n_total=1_000_000)
    assert index.factory_ == "IVF300,SQ8"  # 11,700 // 39 lists, each trained on 39


# ----------------------------------------------------------------------------- refine


@pytest.mark.parametrize("metric", METRICS)
def test_refine_scores_the_candidates_by_their_exact_vectors(metric):
    """PQ codes rank approximately; with ``vectors=`` the top ``refine`` candidates are
    scored again exactly. Every vector a candidate (all lists probed, refine >= n): the
    result is the brute-force one, ids and scores."""
    xb, xq = clustered_data(2000, 32, metric)
    index = Index("IVF8,PQ4np", metric, nprobe=8, refine=2000).build(xb)
    D0, I0 = index.search(xq, 10)
    D_true, I_true = brute_knn(xq, xb, 10, metric)
    assert recall_at_k(I0, I_true) < 0.9  # 4-byte codes alone are far from exact
    asked: list[np.ndarray] = []

    def vectors(ids):
        asked.append(ids.copy())
        return xb[ids]

    D, I = index.search(xq, 10, vectors=vectors)  # noqa: E741
    np.testing.assert_array_equal(I, I_true)
    np.testing.assert_allclose(D, D_true, rtol=1e-4, atol=1e-4)
    assert len(asked) == 1 and np.all(np.diff(asked[0]) > 0)  # each candidate read once


def test_refine_reads_only_the_candidates_and_skips_removed_ids():
    xb, xq = clustered_data(3000, 16, "ip")
    index = Index("IVF16,PQ4np", "ip", nprobe=4, refine=50).build(xb)
    index.remove_ids(np.arange(0, 3000, 2))
    asked: list[np.ndarray] = []
    D, I = index.search(xq[:3], 5, vectors=lambda ids: asked.append(ids) or xb[ids])  # noqa: E741
    assert len(asked[0]) <= 3 * 50
    assert (I % 2 == 1).all()
    # the re-ranked list is sorted by the exact scores of the ids it returns
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", xq[:3], xb[I]), rtol=1e-5, atol=1e-5)
    assert (np.diff(D, axis=1) <= 1e-6).all()


def test_refine_defaults_to_auto_pq_and_survives_save(tmp_path):
    from cvretrieval.index import AUTO_REFINE

    xb, _ = clustered_data(20_000, 32, "ip")
    auto = Index("auto", max_memory="300K").train(xb)
    assert "PQ" in auto.factory_ and auto.refine is None and auto.refine_ == AUTO_REFINE
    assert Index("auto").train(xb[:1000]).refine_ == 0  # Flat is exact already
    assert Index("IVF16,PQ4np").train(xb).refine_ == 0  # a factory string: only if asked
    off = Index("auto", max_memory="300K", refine=0).train(xb)
    off.save(tmp_path / "off.bin")
    auto.save(tmp_path / "auto.bin")
    assert Index.load(tmp_path / "off.bin").refine_ == 0
    assert Index.load(tmp_path / "auto.bin").refine_ == AUTO_REFINE
    assert auto.empty_copy().refine_ == AUTO_REFINE
    with pytest.raises(ValueError, match="refine must be"):
        Index("flat", refine=-1)


def test_auto_sends_high_dimensional_vectors_to_pq_codes_and_refine():
    """100k HOG vectors of 8,100 dims under 2G: ``auto`` chose IVF212,SQ8, whose queries
    scanned ~80 MB of codes (430 ms on one core). It now skips inverted files that scan
    more than AUTO_MAX_SCAN_BYTES a query, and OPQ's 8,100 x 8,100 rotation."""
    from cvretrieval.index import AUTO_MAX_SCAN_BYTES, choose_index, scan_bytes

    assert scan_bytes("IVF212,SQ8", 100_000, 8100) > AUTO_MAX_SCAN_BYTES
    factory, reason = choose_index(100_000, 8100, max_memory="2G", n_train=8285)
    m = int(factory.split(",PQ")[1].removesuffix("np").split("x")[0])
    assert factory.startswith("IVF212,PQ") and 8100 % m == 0 and m <= 8100 // 64
    assert "scan" in reason and "re-ranked" in reason
    assert scan_bytes(factory, 100_000, 8100) <= AUTO_MAX_SCAN_BYTES
    # low-dimensional vectors keep the inverted files they had
    assert choose_index(1_000_000, 128, max_memory="600M")[0] == "IVF4000,Flat"
    # 1M BoVW-1000 vectors: PQ codes without OPQ, whose rotation took 487 s to train
    # on 67k vectors of 1,000 dims (OPQ50,IVF1720,PQ50np was chosen)
    factory = choose_index(1_000_000, 1000, max_memory="2G", n_train=67_108)[0]
    assert factory.startswith("IVF1720,PQ") and "OPQ" not in factory
    assert choose_index(1_000_000, 128, max_memory="60M")[0].startswith("OPQ32,")


def test_an_index_at_its_sample_cap_is_not_ill_sized():
    """``auto`` caps nlist by the training sample (8,100-d vectors: 8,285 rows, 212
    lists at 100k); compact compared the index with the uncapped count (1,265 lists),
    so it retrained every time, only to get the same 212 lists again."""
    xb, _ = clustered_data(212 * 39, 16, "ip")
    index = Index("ivf").train(xb, n_total=100_000)
    assert index.nlist == 212
    assert index.needs_retrain(100_000)  # measured against 4 sqrt(n) = 1265
    assert not index.needs_retrain(100_000, n_train=len(xb))
    assert index.needs_retrain(100_000, n_train=200_000)  # a larger sample allows more


def test_refine_is_refused_for_lsh_whose_scores_are_hamming_distances():
    xb, _ = clustered_data(500, 16, "ip")
    with pytest.raises(ValueError, match="Hamming"):
        Index("lsh", refine=10).train(xb)
    assert Index("lsh").train(xb).refine_ == 0


def test_refine_reads_the_candidates_of_many_queries_in_bounded_blocks():
    """All queries' candidates were read in one call: 10,000 queries x 256 candidates of
    8,100-d vectors would have read 83 GB at once. Blocks of queries bound it."""
    from cvretrieval.index._ops import rescore

    rng = np.random.default_rng(0)
    xb = normalise(rng.standard_normal((500, 64)).astype(np.float32))
    xq = normalise(rng.standard_normal((300, 64)).astype(np.float32))
    cand = np.stack([rng.choice(500, 40, replace=False) for _ in range(300)])
    cand[::7, -5:] = -1
    sizes: list[int] = []
    budget = 40 * 64 * 4 * 10  # ten queries' candidates
    D, I = rescore(xq, cand, lambda ids: sizes.append(len(ids)) or xb[ids], "ip",  # noqa: E741
                   max_bytes=budget)
    assert len(sizes) == 30 and max(sizes) <= 400
    whole = rescore(xq, cand, lambda ids: xb[ids], "ip", max_bytes=1 << 40)
    np.testing.assert_array_equal(I, whole[1])
    np.testing.assert_allclose(D, whole[0])
    S = np.where(cand >= 0, np.einsum("qd,qkd->qk", xq, xb[np.maximum(cand, 0)]), -np.inf)
    np.testing.assert_allclose(np.sort(S, axis=1)[:, ::-1], D, rtol=1e-5, atol=1e-6)
