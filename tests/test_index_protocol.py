"""The Index protocol (ids, removal, shards, one-file save, auto, sizes) for every preset."""

# ruff: noqa: E741  (D, I are Faiss's names for distances and ids)

from __future__ import annotations

import tracemalloc

import faiss
import numpy as np
import pytest

from cvretrieval.errors import BundleError, NotFittedError
from cvretrieval.index import Index, choose_index, estimate_memory, parse_size

ALL = ["flat", "ivf", "pq", "hnsw", "lsh", "auto", "OPQ8,IVF16,PQ8np"]


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def data(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)) * 3
    x = centers[rng.integers(0, 20, n)] + rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalog_ids(n, seed=1):
    """Distinct, non-contiguous, unordered ids as a catalog would hand out."""
    rng = np.random.default_rng(seed)
    return rng.choice(10**12, n, replace=False).astype(np.int64)


def trained(spec, xb, **kw):
    return Index(spec, "ip", nprobe=10_000 if spec != "hnsw" else None, **kw).train(xb)


@pytest.mark.parametrize("spec", ALL)
def test_add_with_ids_returns_those_ids(spec):
    xb = data(1500)
    ids = catalog_ids(1500)
    index = trained(spec, xb)
    assert index.is_trained and index.ntotal == 0
    index.add_with_ids(xb, ids)
    assert index.ntotal == 1500
    _, I = index.search(xb[:50], 5)
    assert np.isin(I[I >= 0], ids).all()
    # each vector finds itself (LSH/PQ: among the first 5)
    floor = 0.7 if spec in ("pq", "lsh") else 0.9
    assert np.mean([ids[q] in row for q, row in enumerate(I)]) >= floor
    assert set(index.ids().tolist()) == set(ids.tolist())


@pytest.mark.parametrize("spec", ALL)
def test_removed_ids_are_never_returned(spec):
    xb = data(1500)
    ids = catalog_ids(1500)
    index = trained(spec, xb)
    index.add_with_ids(xb, ids)
    gone = ids[::3]
    assert index.remove_ids(np.concatenate([gone, [5, 7]])) == gone.size  # unknown ids ignored
    assert index.remove_ids(gone[:10]) == 0  # already removed
    assert index.ntotal == 1500 - gone.size
    _, I = index.search(xb[::3][:200], 20)  # the removed vectors themselves as queries
    assert not np.isin(I, gone).any()
    assert (I >= 0).sum() > 0
    assert not np.isin(index.ids(), gone).any()


def test_hnsw_removal_is_a_mask_that_survives_save(tmp_path):
    xb = data(800)
    index = Index("hnsw", "l2").train(xb)
    index.add_with_ids(xb, np.arange(800) * 2)
    index.remove_ids(np.arange(0, 400, 2))
    assert index.removed_.size == 200 and index.index_.ntotal == 800
    index.save(tmp_path / "h.faiss")
    loaded = Index.load(tmp_path / "h.faiss")
    assert loaded.ntotal == 600
    _, I = loaded.search(xb[:100], 10)
    assert not np.isin(I, np.arange(0, 400, 2)).any()
    with pytest.raises(ValueError, match="removed"):
        loaded.add_with_ids(xb[:1], [0])


@pytest.mark.parametrize("spec", ALL)
def test_shards_merged_equal_one_index(spec):
    xb, xq = data(1200), data(30, seed=5)
    ids = catalog_ids(1200)
    whole = trained(spec, xb)
    base = whole.empty_copy()
    whole.add_with_ids(xb, ids)
    shards = []
    for part in np.array_split(np.arange(1200), 3):
        shard = base.empty_copy()
        shard.add_with_ids(xb[part], ids[part])
        shards.append(shard)
    for shard in shards:
        base.merge_from(shard)
    assert base.ntotal == 1200 and all(s.ntotal == 400 for s in shards)  # shards untouched
    D1, I1 = whole.search(xq, 10)
    D2, I2 = base.search(xq, 10)
    if spec == "hnsw":  # a graph built in another order: same neighbours, mostly
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I1, I2, strict=True)]) > 0.95
    else:
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_allclose(D1, D2, rtol=1e-5, atol=1e-5)


def test_flat_shards_equal_brute_force():
    xb, xq = data(600), data(10, seed=3)
    ids = catalog_ids(600)
    base = Index("flat", "ip").train(xb)
    for part in np.array_split(np.arange(600), 4):
        shard = base.empty_copy()
        shard.add_with_ids(xb[part], ids[part])
        base.merge_from(shard, consume=True)
        assert shard.ntotal == 0
    S = xq.astype(np.float64) @ xb.T.astype(np.float64)
    _, I = base.search(xq, 5)
    np.testing.assert_array_equal(I, ids[np.argsort(-S, axis=1)[:, :5]])


def test_merging_a_separately_trained_shard_is_refused():
    xb = data(2000)
    a = Index("ivf", "ip", random_state=0).train(xb)
    b = Index("ivf", "ip", random_state=1).train(xb)
    with pytest.raises(ValueError, match="trained separately"):
        a.merge_from(b)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge_from(Index("flat").train(xb))


@pytest.mark.parametrize("spec", ALL)
def test_one_file_round_trip_is_identical(spec, tmp_path):
    xb, xq = data(1000), data(20, seed=9)
    index = Index(spec, "l2", nprobe=3, ef_search=40, random_state=4).train(xb)
    index.add_with_ids(xb, catalog_ids(1000))
    index.remove_ids(index.ids()[:7])
    D, I = index.search(xq, 10)
    path = tmp_path / "seg" / "index.faiss"
    index.save(path)
    assert path.is_file() and list(path.parent.iterdir()) == [path]
    loaded = Index.load(path)
    assert loaded.config() == index.config()
    D2, I2 = loaded.search(xq, 10)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_array_equal(D, D2)
    assert faiss.read_index(str(path)).ntotal == index.index_.ntotal  # plain Faiss reads it
    # a loaded index still makes compatible shards
    shard = loaded.empty_copy()
    shard.add_with_ids(xq, np.arange(20) + 10**13)
    loaded.merge_from(shard)
    assert loaded.ntotal == index.ntotal + 20


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.unlink(), "missing"),
        (lambda p: p.write_bytes(b"short"), "not an index file"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "not an index file"),
        (lambda p: p.write_bytes(b"x" * 10 + p.read_bytes()), "not a readable"),
    ],
)
def test_one_file_load_errors_name_the_file(damage, match, tmp_path):
    path = tmp_path / "a.faiss"
    Index("flat").build(data(30)).save(path)
    damage(path)
    with pytest.raises(BundleError, match=match) as info:
        Index.load(path)
    assert "a.faiss" in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- k


def test_k_must_be_positive():
    index = Index("flat").build(data(10))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="k must"):
            index.search(data(1), bad)


@pytest.mark.parametrize("spec", ["flat", "hnsw", "ivf"])
def test_absurd_k_is_capped_without_allocating(spec):
    index = Index(spec).build(data(300))
    tracemalloc.start()
    D, I = index.search(data(4, seed=2), 10**10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert I.shape == D.shape == (4, 1024)  # max(ntotal, 1024) columns
    assert (I[:, :300] >= 0).all() and (I[:, 300:] == -1).all()
    assert peak < 10**7
    assert index.search(data(1), 2000)[1].shape == (1, 1024)
    assert index.search(data(1), 20)[1].shape == (1, 20)


def test_untrained_and_empty():
    index = Index("ivf")
    assert not index.is_trained
    with pytest.raises(NotFittedError, match="train"):
        index.add_with_ids(data(3), [1, 2, 3])
    index.train(data(500))
    D, I = index.search(data(2), 5)  # trained but empty: all padding
    assert (I == -1).all() and np.isneginf(D).all()


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        ([1, 1, 2], "repeated"),
        ([1, 2], "3 vectors"),
        ([-4, 1, 2], ">= 0"),
        ([0.5, 1, 2], "integer"),
    ],
)
def test_bad_ids(ids, match):
    index = Index("flat").train(data(10))
    with pytest.raises(ValueError, match=match):
        index.add_with_ids(data(3), np.asarray(ids))


# ----------------------------------------------------------------------------- train / retrain


def test_train_sizes_from_n_total_but_fits_the_sample():
    sample = data(5000)
    index = Index("ivf").train(sample, n_total=1_000_000)
    assert index.nlist == 128  # 4000 wanted, but 5000 // 39 = 128 can be trained
    assert Index("ivf").train(data(200_000 // 10), n_total=20_000).nlist == 512
    assert Index("ivf").train(data(1000)).n_planned_ == 1000


def test_needs_retrain():
    ivf = Index("ivf").train(data(500))  # 12 lists
    assert ivf.nlist == 12
    assert not ivf.needs_retrain(500)
    assert ivf.needs_retrain(1_000_000)
    assert not Index("flat").train(data(50)).needs_retrain(10**7)
    assert not Index("hnsw").train(data(50)).needs_retrain(10**7)
    pq = Index("pq").train(data(50))  # 5-bit codes
    assert pq.needs_retrain(10**5) and not pq.needs_retrain(50)


# ----------------------------------------------------------------------------- auto, sizes


def test_auto_picks_flat_for_small_n_and_compresses_under_a_tiny_budget():
    factory, reason = choose_index(5000, 128, "ip")
    assert factory == "Flat" and "exact" in reason
    assert choose_index(2_000_000, 128)[0].startswith("HNSW")
    # 1M x 128 floats alone need 512 MB, 8-bit codes 136 MB: 100 MB forces PQ codes
    factory, reason = choose_index(1_000_000, 128, "ip", max_memory="100M")
    assert "PQ" in factory and "IVF" in factory
    assert estimate_memory(factory, 1_000_000, 128, "ip") <= parse_size("100M")
    assert choose_index(1_000_000, 128, max_memory="600M")[0].endswith(",Flat")
    assert choose_index(1_000_000, 128, max_memory="300M")[0].endswith(",SQ8")
    with pytest.raises(ValueError, match="too small"):
        choose_index(1_000_000, 128, max_memory="1M")


def test_auto_index_logs_and_records_why(caplog):
    with caplog.at_level("INFO", logger="cvretrieval"):
        index = Index("auto", max_memory="80K").train(data(2000), n_total=2000)
    assert "PQ" in index.factory and index.config()["reason"] == index.reason_
    assert "max_memory" in index.reason_ and any("auto" in r.message for r in caplog.records)
    small = Index("auto").build(data(300))
    assert small.factory == "Flat"


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize(
    "spec", ["flat", "hnsw", "ivf", "pq", "lsh", "OPQ8,IVF16,PQ8np", "IVF16,SQ8"]
)
def test_memory_estimate_matches_the_built_index(spec, metric):
    xb = data(5000, d=64)
    index = Index(spec, metric).build(xb)
    if metric == "l2":
        index.search(xb[:2], 1)  # IVF-PQ computes its L2 table when first used
    est = estimate_memory(index.factory, 5000, 64, metric)
    assert 0.85 <= est / index.memory_bytes() <= 1.15
    raw = int(faiss.serialize_index(index.index_).size)
    assert 0.5 <= raw / index.memory_bytes() <= 1.3  # serialised: no L2 table, no slack


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 << 30), ("500M", 500 << 20), ("1.5GB", 3 << 29), ("2GiB", 2 << 30),
     ("100k", 102400), ("123", 123), (2048, 2048), (" 8 MB ", 8 << 20), ("1t", 1 << 40)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "lots", "4X", "-1G", "G", 0, -5, True, "1.2.3M", "iB"])
def test_parse_size_rejects_garbage_in_one_line(bad):
    with pytest.raises(ValueError, match="memory size") as info:
        parse_size(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        Index("auto", max_memory=bad if bad != 0 else -1)


@pytest.mark.parametrize("spec", ["flat", "ivf", "hnsw", "OPQ8,IVF16,PQ8np"])
def test_reconstruct_all_follows_increasing_ids(spec):
    xb = data(700)
    ids = catalog_ids(700)
    index = Index(spec).train(xb)
    index.add_with_ids(xb, ids)
    index.remove_ids(ids[:5])
    order = np.argsort(ids[5:])
    expect = xb[5:][order]
    got = index.reconstruct_all()
    np.testing.assert_array_equal(index.ids(), np.sort(ids[5:]))
    if "PQ" in spec:  # decoded codes: close, not equal
        assert np.mean(np.sum(got * expect, axis=1)) > 0.9
    else:
        np.testing.assert_allclose(got, expect, atol=1e-6)


def test_hnsw_shard_with_removals_merges_only_live_vectors():
    xb = data(600)
    base = Index("hnsw").train(xb)
    shard = base.empty_copy()
    shard.add_with_ids(xb, np.arange(600) + 1000)
    shard.remove_ids(np.arange(1000, 1100))
    base.merge_from(shard)
    assert base.ntotal == 500 and base.removed_.size == 0
    _, I = base.search(xb[:100], 5)
    assert not np.isin(I, np.arange(1000, 1100)).any()
