"""Large vocabularies: the sparse inverted file and approximate word assignment."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

from cvretrieval.errors import BundleError
from cvretrieval.features import bovw
from cvretrieval.features.assign import ApproximateAssigner
from cvretrieval.sparse import SparseIndex, power_normalize


def random_bovw(n_images, n_words, words_per_image, seed):
    """TF-IDF rows of random word histograms (Zipf-like word frequencies, as in real BoVW)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_words + 1)
    word_lists = [rng.choice(n_words, size=words_per_image, p=p / p.sum()) for _ in range(n_images)]
    tf = bovw.term_frequencies(word_lists, n_words)
    return tf


# --------------------------------------------------------------------------- SparseIndex


def test_sparse_ranking_equals_dense_flat_ip():
    n_words = 60
    tf = random_bovw(300, n_words, 25, seed=0)
    idf = bovw.idf_weights(bovw.document_frequencies(tf), tf.shape[0])
    xb = bovw.tfidf(tf, idf)
    xq = bovw.tfidf(random_bovw(20, n_words, 25, seed=1), idf)
    k = 50
    index = SparseIndex(n_words).build(xb)
    D, I = index.search(xq, k)  # noqa: E741

    flat = faiss.IndexFlatIP(n_words)
    flat.add(bovw.to_dense(xb))
    Df, If = flat.search(bovw.to_dense(xq), k)
    np.testing.assert_allclose(D, Df, atol=1e-5)  # the same scores, rank by rank
    for q in range(len(I)):
        # same ids wherever the score is not tied (within rounding) with a neighbour
        gaps = np.abs(np.diff(Df[q]))
        untied = np.ones(k, bool)
        untied[:-1] &= gaps > 1e-5
        untied[1:] &= gaps > 1e-5
        np.testing.assert_array_equal(I[q, untied], If[q, untied])
        # and every returned score is the true cosine of that image
        exact = (xb[I[q]] @ xq[q].T).toarray().ravel()
        np.testing.assert_allclose(D[q], exact, atol=1e-5)


def test_missing_results_are_padded_and_ties_break_by_id():
    xb = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], np.float32))
    index = SparseIndex(3)
    index.add(xb)
    D, I = index.search(np.array([[1.0, 0, 0]], np.float32), k=4)  # noqa: E741
    assert I.tolist() == [[1, 2, -1, -1]]
    assert D[0, :2].tolist() == [1.0, 1.0] and np.isneginf(D[0, 2:]).all()


def test_incremental_add_and_save_load_round_trip(tmp_path):
    tf = random_bovw(120, 40, 15, seed=2)
    xb = bovw.tfidf(tf, np.ones(40, np.float32))
    whole = SparseIndex(40).build(xb)
    parts = SparseIndex(40)
    parts.add(xb[:50])
    parts.add(xb[50:].toarray())  # dense input is accepted too
    xq = xb[:7]
    D1, I1 = whole.search(xq, 10)
    D2, I2 = parts.search(xq, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    assert I1[:, 0].tolist() == list(range(7))  # each image is its own best match

    parts.save(tmp_path)
    loaded = SparseIndex.load(tmp_path)
    assert loaded.ntotal == 120 and loaded.n_words == 40
    D3, I3 = loaded.search(xq, 10)
    np.testing.assert_array_equal(I1, I3)
    np.testing.assert_array_equal(D1, D3)
    # memory: data + indices + indptr of the vectors and of the inverted file
    nnz = xb.nnz
    assert loaded.nbytes == 2 * nnz * (4 + 4) + 4 * (121 + 41)


def test_sparse_index_errors(tmp_path):
    index = SparseIndex(10)
    D, I = index.search(np.zeros((1, 10)), 3)  # noqa: E741 - empty: all padding
    assert I.tolist() == [[-1, -1, -1]] and np.isneginf(D).all()
    with pytest.raises(ValueError, match="k must"):
        index.search(np.zeros((1, 10)), 0)
    with pytest.raises(ValueError, match="11 columns but the index has 10 words"):
        index.add(np.zeros((2, 11)))
    with pytest.raises(BundleError, match="missing"):
        SparseIndex.load(tmp_path)


def test_power_normalize_known_values():
    x = sp.csr_matrix(np.array([[1.0, 4.0, 0.0], [0.0, 0.0, 0.0], [9.0, 0.0, 16.0]]))
    out = power_normalize(x, alpha=0.5).toarray()
    np.testing.assert_allclose(out[0], np.array([1, 2, 0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_allclose(out[2], np.array([3, 0, 4]) / 5.0, rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        power_normalize(x, alpha=0)


# --------------------------------------------------------------------------- assignment


def clustered(n_words, dim, n, noise, seed):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_words, dim)).astype(np.float32)
    x = centers[rng.integers(0, n_words, n)] + noise * rng.standard_normal((n, dim))
    return centers, x.astype(np.float32)


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_assignment_agrees_with_exact(method):
    centers, x = clustered(3000, 32, 2000, noise=1.0, seed=0)
    exact = faiss.IndexFlatL2(32)
    exact.add(centers)
    _, truth = exact.search(x, 1)
    got = ApproximateAssigner(centers, method).assign(x)
    assert got.dtype == np.int64 and got.shape == (2000,)
    assert (got == truth[:, 0]).mean() >= 0.9


def test_binary_hnsw_assignment_and_multi_assignment(tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    picked = rng.integers(0, 2000, 1000)
    bits = np.unpackbits(centers[picked], axis=1)
    bits ^= (rng.random(bits.shape) < 0.1).astype(np.uint8)  # ~26 of 256 bits flipped
    x = np.packbits(bits, axis=1)
    exact = faiss.IndexBinaryFlat(256)
    exact.add(centers)
    _, truth = exact.search(x, 1)
    a = ApproximateAssigner(centers, "hnsw")
    assert (a.assign(x) == truth[:, 0]).mean() >= 0.9
    ids, dist = a.assign_multi(x[:5], 3)
    assert ids.shape == dist.shape == (5, 3)
    assert np.all(np.diff(dist, axis=1) >= 0)  # nearest first
    manual = np.unpackbits(x[:5, None, :] ^ centers[ids], axis=2).sum(axis=2)
    np.testing.assert_array_equal(dist, manual)  # Hamming distances in bits

    a.save(tmp_path)
    b = ApproximateAssigner.load(tmp_path, centers)
    np.testing.assert_array_equal(b.assign(x[:50]), a.assign(x[:50]))
    with pytest.raises(BundleError, match="built for"):
        ApproximateAssigner.load(tmp_path, centers[:100])


def test_flat_assigner_is_exact_and_checks_inputs():
    centers, x = clustered(200, 8, 300, noise=1.0, seed=3)
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
    ids, dist = ApproximateAssigner(centers, "flat").assign_multi(x, 2)
    np.testing.assert_array_equal(ids[:, 0], d2.argmin(1))
    np.testing.assert_allclose(dist[:, 0], d2.min(1), rtol=1e-4)
    with pytest.raises(ValueError, match="unknown method"):
        ApproximateAssigner(centers, "kdtree").fit()
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        ApproximateAssigner(centers).assign(np.zeros((3, 9), np.float32))


# --------------------------------------------------------------------------- protocol


def _tfidf(n, n_words=50, seed=0):
    return bovw.tfidf(random_bovw(n, n_words, 12, seed), np.ones(n_words, np.float32))


def test_sparse_add_with_ids_remove_and_rows():
    xb = _tfidf(200)
    ids = np.random.default_rng(0).choice(10**9, 200, replace=False)
    index = SparseIndex(50).train()
    assert index.is_trained and not index.needs_retrain(10**9)
    index.add_with_ids(xb[:120], ids[:120])
    index.add_with_ids(xb[120:], ids[120:])
    _, I = index.search(xb[:30], 5)  # noqa: E741
    assert I[:, 0].tolist() == ids[:30].tolist()  # each row is its own best match
    gone = ids[:200:2]
    assert index.remove_ids(np.concatenate([gone, [3, 4]])) == 100
    assert index.remove_ids(gone) == 0 and index.ntotal == 100
    _, I = index.search(xb[:200:2], 10)  # noqa: E741 - the removed rows as queries
    assert not np.isin(I, gone).any() and (I >= 0).any()
    # rows: public access to the stored vectors, in the asked order
    got = index.rows(ids[[5, 3, 199]])
    np.testing.assert_array_equal(got.toarray(), xb[[5, 3, 199]].toarray())
    with pytest.raises(KeyError, match=str(ids[0])):
        index.rows([ids[0]])
    assert index.rows([]).shape == (0, 50)
    with pytest.raises(ValueError, match="repeated"):
        index.add_with_ids(xb[:2], [7, 7])


def test_sparse_shards_merge_to_the_same_results(tmp_path):
    xb, xq = _tfidf(300, seed=1), _tfidf(20, seed=2)
    ids = np.arange(300) * 3 + 1
    whole = SparseIndex(50)
    whole.add_with_ids(xb, ids)
    merged = whole.empty_copy()
    shards = []
    for part in np.array_split(np.arange(300), 3):
        shard = merged.empty_copy()
        shard.add_with_ids(xb[part], ids[part])
        shards.append(shard)
    for shard in shards:
        merged.merge_from(shard)
    assert merged.ntotal == 300 and shards[0].ntotal == 100
    D1, I1 = whole.search(xq, 10)  # noqa: E741
    D2, I2 = merged.search(xq, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    with pytest.raises(ValueError, match="same n_words"):
        merged.merge_from(SparseIndex(51))
    # one-file round trip keeps ids and removals
    merged.remove_ids(ids[:10])
    merged.save(tmp_path / "s.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]
    loaded = SparseIndex.load(tmp_path / "s.npz")
    D3, I3 = loaded.search(xq, 10)
    np.testing.assert_array_equal(merged.search(xq, 10)[1], I3)
    np.testing.assert_array_equal(merged.search(xq, 10)[0], D3)
    assert loaded.memory_bytes() == merged.memory_bytes() > 0
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(BundleError, match="bad.npz"):
        SparseIndex.load(tmp_path / "bad.npz")
    # the folder format keeps non-sequential ids too
    merged.save(tmp_path / "folder")
    np.testing.assert_array_equal(SparseIndex.load(tmp_path / "folder").search(xq, 10)[1], I3)


def test_sparse_huge_k_is_capped():
    index = SparseIndex(50).build(_tfidf(40))
    D, I = index.search(_tfidf(2, seed=5), 10**10)  # noqa: E741
    assert I.shape == (2, 1024) and (I[:, 40:] == -1).all()
