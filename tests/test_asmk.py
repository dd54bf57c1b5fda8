"""ASMK: Hamming embedding and kernel by hand, the inverted file protocol, and retrieval."""

from __future__ import annotations

import numpy as np
import pytest

from cvretrieval.asmk_index import AsmkCodes, AsmkIndex
from cvretrieval.features.asmk import (
    HammingEmbedding,
    aggregate_residuals,
    as_float_descriptors,
    hamming,
    random_orthogonal,
    selective_kernel,
)


def test_selective_kernel_by_hand():
    u = np.array([1.0, 0.5, 0.25, 0.0, -0.5])
    np.testing.assert_allclose(selective_kernel(u, 3, 0), [1, 0.125, 1 / 64, 0, 0])
    np.testing.assert_allclose(selective_kernel(u, 1, 0.3), [1, 0.5, 0, 0, 0])
    # tau below zero lets negative similarities through, with their sign
    np.testing.assert_allclose(selective_kernel(u, 3, -1), [1, 0.125, 1 / 64, 0, -0.125])
    # a non-integer exponent: sign(u) |u| ** alpha, with 0.5 ** 2.5 = 0.1767767
    np.testing.assert_allclose(selective_kernel(u, 2.5, -1),
                               [1, 0.1767767, 0.03125, 0, -0.1767767], rtol=1e-6)


@pytest.mark.parametrize("n_bytes", [16, 5])
def test_index_hamming_of_rows_counts_bits(n_bytes):
    from cvretrieval.asmk_index import _hamming_rows

    rng = np.random.default_rng(n_bytes)
    a = rng.integers(0, 256, (50, n_bytes), dtype=np.uint8)
    b = rng.integers(0, 256, (50, n_bytes), dtype=np.uint8)
    bits_differ = np.unpackbits(a, axis=1) != np.unpackbits(b, axis=1)
    assert _hamming_rows(a, b).tolist() == bits_differ.sum(axis=1).tolist()


def test_hamming_by_hand():
    a = np.array([[0b11110000, 0b00000001]], np.uint8)
    b = np.array([[0b11000000, 0b10000000], [0b11110000, 0b00000001]], np.uint8)
    assert hamming(a, b).tolist() == [4, 0]


def test_random_orthogonal_rows():
    p = random_orthogonal(16, 32, random_state=3)
    np.testing.assert_allclose(p @ p.T, np.eye(16), atol=1e-5)
    with pytest.raises(ValueError, match="n_bits"):
        random_orthogonal(40, 32)


def test_hamming_embedding_medians_by_hand():
    # one word at the origin, identity projection: the residuals are the descriptors, the
    # medians per dimension are the medians of the unit residuals
    x = np.array([[3, 4, 0, 0, 0, 0, 0, 0]] * 5 + [[0, 0, 0, 0, 0, 0, 0, 1]] * 4, np.float32)
    he = HammingEmbedding(n_bits=8)
    he.fit(x, np.zeros(9, int), np.zeros((1, 8), np.float32))
    he.projection_ = np.eye(8, dtype=np.float32)  # replace the rotation by the identity
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    he.medians_ = np.median(unit, axis=0)[None, :].astype(np.float32)
    np.testing.assert_allclose(he.medians_[0], [0.6, 0.8, 0, 0, 0, 0, 0, 0])
    # (0.7, 0.9, 0, ..., 0.1) is above the medians in dims 0, 1 and 7 -> bits 11000001
    code = he.encode(np.array([[0.7, 0.9, 0, 0, 0, 0, 0, 0.1]], np.float32), np.array([0]))
    assert code.tolist() == [[0b11000001]]


def test_fitted_medians_are_per_word_medians():
    rng = np.random.default_rng(0)
    c = np.array([[0, 0, 0, 0], [10, 10, 10, 10]], np.float32)
    words = np.repeat([0, 1], 40)
    x = c[words] + rng.normal(size=(80, 4)).astype(np.float32)
    he = HammingEmbedding(n_bits=8)
    with pytest.raises(ValueError):  # 8 bits of 4-d descriptors: more bits than dimensions
        he.fit(x, words, c)
    he = HammingEmbedding(n_bits=8)
    x8 = np.hstack([x, x])
    c8 = np.hstack([c, c])
    he.fit(x8, words, c8)
    r = x8 - c8[words]
    z = (r / np.linalg.norm(r, axis=1, keepdims=True)) @ he.projection_.T
    np.testing.assert_allclose(he.medians_[1], np.median(z[words == 1], axis=0), rtol=1e-5)
    codes = he.encode(r / np.linalg.norm(r, axis=1, keepdims=True), words)
    # a median threshold sets each bit on half of its word's training residuals
    bits = np.unpackbits(codes, axis=1)
    np.testing.assert_allclose(bits[words == 0].mean(axis=0), 0.5)


def test_aggregate_residuals_by_hand():
    c = np.array([[0, 0], [10, 10]], np.float32)
    x = np.array([[1, 0], [0, 1], [10, 13]], np.float32)
    w, v = aggregate_residuals(x, np.array([0, 0, 1]), c)
    assert w.tolist() == [0, 1]
    np.testing.assert_allclose(v, [[2**-0.5, 2**-0.5], [0, 1]], rtol=1e-6)
    # multiple assignment: descriptor 2 also counts for word 0 (-1 = no further word)
    w, v = aggregate_residuals(x, np.array([[0, -1], [0, -1], [1, 0]]), c)
    np.testing.assert_allclose(v[0], np.array([11, 14]) / np.hypot(11, 14), rtol=1e-6)


def test_binary_descriptors_become_unit_sign_vectors():
    v = as_float_descriptors(np.array([[0b10100000]], np.uint8))
    np.testing.assert_allclose(v * np.sqrt(8), [[1, -1, 1, -1, -1, -1, -1, -1]])


def _codes(words, codes):
    return AsmkCodes(np.array(words, np.uint32), np.array(codes, np.uint8).reshape(-1, 1))


def test_index_scores_by_hand():
    # 8-bit codes, alpha = 1, tau = 0; three images over 3 words
    idx = AsmkIndex(n_words=3, n_bits=8, alpha=1.0, tau=0.0)
    a = _codes([0, 1], [0b00000000, 0b11111111])
    b = _codes([0, 2], [0b00000011, 0b00000000])
    c = _codes([2], [0b11111111])
    idx.add_with_ids([a, b, c], [7, 8, 9])
    # df = (2, 1, 2), N = 3: w = ln(4/2), ln(4/1), ln(4/2)
    w0, w1, w2 = np.log(2), np.log(4), np.log(2)
    d, i = idx.search([a], 3)
    # a vs b: word 0, h = 2 -> u = 1 - 4/8 = 0.5; gamma(a) = (w0+w1)^-1/2, gamma(b) = (w0+w2)^-1/2
    expected_ab = w0 * 0.5 / np.sqrt((w0 + w1) * (w0 + w2))
    assert i[0].tolist() == [7, 8, 9]
    np.testing.assert_allclose(d[0], [1.0, expected_ab, 0.0], rtol=1e-5)
    # b vs c: word 2 codes differ in all bits: u = -1 -> kernel 0
    d, i = idx.search([c], 1)
    assert i[0, 0] == 9 and d[0, 0] == pytest.approx(1.0)


def test_index_protocol_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    items = [AsmkCodes(np.sort(rng.choice(50, 10, replace=False)).astype(np.uint32),
                       rng.integers(0, 256, (10, 2), dtype=np.uint8)) for _ in range(6)]
    idx = AsmkIndex(50, 16).train(items[:2], 6)
    idx.add_with_ids(items[:4], [1, 2, 3, 4])
    other = idx.empty_copy()
    assert other.ntotal == 0 and other.config() == idx.config()
    other.add_with_ids(items[4:], [5, 6])
    idx.merge_from(other)
    assert idx.ntotal == 6
    d, i = idx.search(items, 1)
    assert i[:, 0].tolist() == [1, 2, 3, 4, 5, 6]  # each image is its own best match
    np.testing.assert_allclose(d[:, 0], 1, rtol=1e-5)
    assert idx.remove_ids([2, 99]) == 1 and idx.ntotal == 5
    d, i = idx.search(items[1:2], 6)
    assert 2 not in i[0] and i[0, -1] == -1 and d[0, -1] == -np.inf
    idx.save(tmp_path / "a.npz")
    back = AsmkIndex.load(tmp_path / "a.npz")
    d2, i2 = back.search(items, 4)
    d1, i1 = idx.search(items, 4)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    assert back.memory_bytes() > 5 * 10 * 2
    with pytest.raises(ValueError, match="already in the index"):
        idx.add_with_ids(items[:1], [1])
    with pytest.raises(TypeError, match="AsmkCodes"):
        idx.add_with_ids([np.zeros(3)], [100])


def test_embedder_self_is_maximal_and_copy_outranks_others(make_textured, tmp_path):
    from cvretrieval.copies import attack_crop, attack_jpeg, attack_rotate
    from cvretrieval.embedders import load_embedder, make_embedder

    emb = make_embedder("asmk", n_words=256, n_features=300, random_state=0)
    images = [make_textured(i) for i in range(12)]
    feats = [emb.extract(im) for im in images]
    emb.fit(feats)
    gallery = [emb.reduce(f) for f in feats]
    idx = emb.make_index()
    idx.add_with_ids(gallery, np.arange(12) + 1000)
    d, i = idx.search(gallery, 12)
    assert (i[:, 0] == np.arange(12) + 1000).all()
    np.testing.assert_allclose(d[:, 0], 1.0, rtol=1e-5)
    assert (d[:, 1:] < d[:, :1]).all()
    rng = np.random.default_rng(0)
    copies = [attack_jpeg(attack_rotate(attack_crop(images[j], rng), rng), rng)
              for j in (2, 7)]
    _, i = idx.search(emb.embed(copies), 3)
    assert i[:, 0].tolist() == [1002, 1007]
    # an image without features is flagged and scores nothing
    empty = emb.reduce(emb.extract(np.zeros((3, 3, 3), np.uint8)))
    assert not emb.has_features(empty) and emb.has_features(gallery[0])
    d, _ = idx.search([empty], 2)
    assert (d == 0).all()
    emb.save(tmp_path / "emb")
    back = load_embedder(tmp_path / "emb")
    assert [len(r) for r in back.embed(copies)] == [len(r) for r in emb.embed(copies)]
    np.testing.assert_array_equal(back.reduce(feats[0]).codes, gallery[0].codes)


def test_hnsw_assignment_matches_exact_on_a_small_vocabulary(make_textured):
    from cvretrieval.embedders import make_embedder

    exact = make_embedder("asmk", n_words=128, n_features=200, assignment="exact")
    feats = [exact.extract(make_textured(i)) for i in range(6)]
    exact.fit(feats)
    hnsw = make_embedder("asmk", n_words=128, n_features=200, assignment="hnsw")
    hnsw.fit(feats)  # same sample and seed: same vocabulary and medians
    a, b = exact.reduce(feats[0], query=True), hnsw.reduce(feats[0], query=True)
    # HNSW over 128 centres with ef_search 64 is exact in practice
    np.testing.assert_array_equal(a.words, b.words)
    np.testing.assert_array_equal(a.codes, b.codes)


def test_external_vocabulary_still_learns_the_medians(make_textured, tmp_path):
    from cvretrieval.embedders import make_embedder
    from cvretrieval.features.vocabulary import save_vocabulary

    first = make_embedder("asmk", n_words=32, n_features=200)
    feats = [first.extract(make_textured(i)) for i in range(5)]
    first.fit(feats)
    save_vocabulary(first.vocabulary_, tmp_path / "v")
    emb = make_embedder("asmk", n_words=999, n_features=200, vocabulary=str(tmp_path / "v"))
    assert emb.needs_fit and emb.n_fit_images(10_000) > 1  # medians need a sample
    emb.fit(feats)
    assert emb.n_words == 32
    np.testing.assert_array_equal(emb.vocabulary_.centers_, first.vocabulary_.centers_)
    np.testing.assert_allclose(emb.he_.medians_, first.he_.medians_)
