"""Spatial verification: tentative matches, robust model fitting, re-ranking with a FeatureStore."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvretrieval.copies import attack_crop, attack_rotate
from cvretrieval.features.local import LocalFeatureExtractor
from cvretrieval.features.vocabulary import KMeansVocabulary
from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter
from cvretrieval.rerank.matching import pair_distances, tentative_matches_words_desc_many
from cvretrieval.rerank.spatial import (
    SpatialVerifier,
    spatial_rerank,
    tentative_matches_ratio,
    tentative_matches_words,
    tentative_matches_words_desc,
    verify,
)

# --------------------------------------------------------------------------- word matches


def brute_force_word_matches(q, c, max_per_word):
    out = set()
    for i, wq in enumerate(q):
        for j, wc in enumerate(c):
            if wq == wc:
                a, b = int((q == wq).sum()), int((c == wc).sum())
                if max_per_word is None or (a <= max_per_word and b <= max_per_word):
                    out.add((i, j))
    return out


@pytest.mark.parametrize("max_per_word", [None, 1, 2, 4])
def test_word_matches_equal_the_brute_force_pairs(max_per_word):
    rng = np.random.default_rng(max_per_word or 0)
    for _ in range(60):
        q = rng.integers(0, 12, rng.integers(0, 25))
        c = rng.integers(0, 12, rng.integers(0, 25)).astype(np.uint32)
        if rng.random() < 0.5:
            c = np.sort(c)  # the sorted fast path of FeatureStore rows
        m = tentative_matches_words(q, c, max_per_word=max_per_word)
        assert m.dtype == np.int64 and m.shape[1] == 2
        got = set(map(tuple, m.tolist()))
        assert len(got) == len(m)  # no duplicate pair
        assert got == brute_force_word_matches(q, c, max_per_word)


def test_max_matches_keeps_the_least_ambiguous_words():
    q = np.array([1, 2, 2, 3])
    c = np.array([1, 2, 2, 3, 3])  # word 1: 1 pair, word 2: 4 pairs, word 3: 2 pairs
    m = tentative_matches_words(q, c, max_per_word=None, max_matches=3)
    assert set(map(tuple, m.tolist())) == {(0, 0), (3, 3), (3, 4)}
    with pytest.raises(ValueError, match="max_per_word"):
        tentative_matches_words(q, c, max_per_word=0)


# --------------------------------------------------------------------------- ratio matches


def test_ratio_matches_recover_a_permutation_float_and_binary():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    q[1] = q[0] + 1e-3  # two near-identical query rows: both ambiguous in c
    perm = rng.permutation(40)
    c = q[perm] + 0.01 * rng.standard_normal((40, 16)).astype(np.float32)
    where = np.argsort(perm)  # q[i] sits at c[where[i]]
    m = tentative_matches_ratio(q, c, ratio=0.8)
    assert set(map(tuple, m.tolist())) == {(i, int(where[i])) for i in range(2, 40)}

    qb = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    perm_b = rng.permutation(30)
    bits = np.unpackbits(qb[perm_b], axis=1)
    bits[:, :2] ^= 1  # 2 bits flipped: distance 2 vs ~128 to the others
    cb = np.packbits(bits, axis=1)
    mb = tentative_matches_ratio(qb, cb)
    where_b = np.argsort(perm_b)
    assert set(map(tuple, mb.tolist())) == {(i, int(where_b[i])) for i in range(30)}
    assert tentative_matches_ratio(q, c[:1]).shape == (0, 2)  # no second neighbour


# --------------------------------------------------------------------------- verify


def synthetic_correspondences(transform, n_in=60, n_out=40, seed=0):
    """``n_in`` points mapped exactly by ``transform`` and ``n_out`` moved 40-80 px off it."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(20, 600, (n_in + n_out, 2)).astype(np.float32)
    dst = transform(src)
    angle = rng.uniform(0, 2 * np.pi, n_out)
    dst[n_in:] += rng.uniform(40, 80, (n_out, 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
    return src, dst.astype(np.float32), np.stack([np.arange(n_in + n_out)] * 2, 1)


def homography(src):
    H = np.array([[0.9, 0.15, 30.0], [-0.1, 1.1, 12.0], [2e-4, 1e-4, 1.0]])
    return cv2.perspectiveTransform(src.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def similarity(src):
    a = np.deg2rad(20)
    R = 0.8 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return src @ R.T + np.array([40.0, -15.0])


@pytest.mark.parametrize(
    "model, transform",
    [("homography", homography), ("affine", similarity), ("similarity", similarity)],
)
def test_verify_counts_exactly_the_consistent_matches(model, transform):
    src, dst, matches = synthetic_correspondences(transform)
    n, M, mask = verify(src, dst, matches, model=model, threshold=3.0, return_model=True)
    assert n == 60
    assert mask[:60].all() and not mask[60:].any()
    assert M.shape == ((3, 3) if model == "homography" else (2, 3))
    # a burst of duplicate matches onto the same key points counts once
    assert verify(src, dst, np.concatenate([matches, matches[:30]]), model=model) == 60


def test_verify_degenerate_inputs_give_zero():
    pts = np.zeros((10, 2), np.float32)
    matches = np.stack([np.arange(10)] * 2, 1)
    assert verify(pts, pts, matches) == 0  # all points equal: no model
    assert verify(pts, pts, matches[:3]) == 0  # fewer than 4 matches for a homography
    with pytest.raises(ValueError, match="unknown model"):
        verify(pts, pts, matches, model="cubic")


# --------------------------------------------------------------------------- re-ranking


@pytest.fixture(scope="module")
def copy_scene(tmp_path_factory):
    """Two source images, their attacked copies and unrelated images, in a FeatureStore."""
    from conftest import textured_image

    ext = LocalFeatureExtractor("sift", 500)
    src = textured_image(11, (300, 400))
    other = textured_image(12, (300, 400))
    rot = attack_rotate(src, np.random.default_rng(1), max_angle=25)
    crop = attack_crop(src, np.random.default_rng(2), keep=(0.5, 0.6))
    unrelated = [textured_image(s, (300, 400)) for s in (13, 14, 15)]
    # gallery rows: 0 unrelated, 1 crop copy, 2 unrelated, 3 other, 4 rotated copy, 5 unrelated
    gallery = [unrelated[0], crop, unrelated[1], other, rot, unrelated[2]]
    g_feats = [ext(im) for im in gallery]
    q_feats = ext(src)
    vocab = KMeansVocabulary(n_words=400, random_state=0).fit(
        np.concatenate([f.descriptors for f in g_feats])
    )
    directory = tmp_path_factory.mktemp("store")
    with FeatureStoreWriter(directory, words=True) as w:
        for f in g_feats:
            w.append(f, words=vocab.assign(f.descriptors))
    return q_feats, vocab.assign(q_feats.descriptors), FeatureStore.open(directory)


@pytest.mark.parametrize("matcher", ["words", "ratio", "words+desc"])
def test_copies_are_verified_and_move_first(copy_scene, matcher):
    query, qwords, store = copy_scene
    sv = SpatialVerifier(matcher=matcher, min_inliers=12)
    order, inliers = sv.rerank(query, np.arange(6), store, query_words=qwords)
    assert set(order[:2].tolist()) == {1, 4}  # the crop and the rotated copy
    by_id = dict(zip(order.tolist(), inliers.tolist(), strict=True))
    assert min(by_id[1], by_id[4]) >= 25
    assert max(by_id[i] for i in (0, 2, 3, 5)) < 12
    assert order[2:].tolist() == [0, 2, 3, 5]  # the unverified keep their order
    assert np.all(np.diff(inliers[:2]) <= 0)
    assert sv.stats_["examined"] == 6 and sv.stats_["verified"] == 2


def test_top_n_early_exit_and_invalid_ids(copy_scene):
    query, qwords, store = copy_scene
    cands = np.array([5, 4, 3, 1, -1, 2])
    order, inliers = spatial_rerank(query, cands, store, query_words=qwords, top_n=3)
    # only 5, 4, 3 examined: 4 verified moves first; 1 (a copy) is beyond top_n and stays put
    assert order.tolist() == [4, 5, 3, 1, -1, 2]
    assert inliers[0] >= 12 and inliers[3:].tolist() == [-1, -1, -1]
    order, inliers = spatial_rerank(
        query, np.array([0, 4, 2, 1]), store, query_words=qwords, early_exit=1
    )
    assert order.tolist() == [4, 0, 2, 1] and inliers[-2:].tolist() == [-1, -1]
    order, inliers = spatial_rerank(query, np.array([-1, 4]), store, query_words=qwords)
    assert order.tolist() == [4, -1] and inliers[1] == -1


def test_rerank_checks_its_inputs(copy_scene, tmp_path):
    query, qwords, store = copy_scene
    with pytest.raises(ValueError, match="query_words"):
        spatial_rerank(query, np.arange(3), store)
    with pytest.raises(ValueError, match="query words for"):
        spatial_rerank(query, np.arange(3), store, query_words=qwords[:-1])
    with pytest.raises(ValueError, match="unknown matcher"):
        spatial_rerank(query, np.arange(3), store, query_words=qwords, matcher="flann")
    with FeatureStoreWriter(tmp_path, descriptors="none") as w:
        w.append(query)
    bare = FeatureStore.open(tmp_path)
    with pytest.raises(ValueError, match="words=True"):
        spatial_rerank(query, np.arange(1), bare, query_words=qwords)
    with pytest.raises(ValueError, match="descriptors"):
        spatial_rerank(query, np.arange(1), bare, matcher="ratio")


# --------------------------------------------------------------------------- words + descriptors


def brute_force_words_desc(qw, cw, qd, cd, ratio):
    """The definition: pairs sharing a word; each query point's nearest pair passes the
    ratio test against its second nearest pair; the pair is also its candidate's nearest."""
    pairs = [(i, j) for i in range(len(qw)) for j in range(len(cw)) if qw[i] == cw[j]]
    d = {(i, j): float(((qd[i] - cd[j]) ** 2).sum()) for i, j in pairs}
    out = set()
    for i, j in pairs:
        mine = sorted(d[p] for p in pairs if p[0] == i)
        theirs = min(d[p] for p in pairs if p[1] == j)
        second = mine[1] if len(mine) > 1 else np.inf
        if d[(i, j)] == mine[0] and d[(i, j)] < ratio**2 * second and d[(i, j)] == theirs:
            out.add((i, j))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_words_desc_matches_equal_the_definition(seed):
    rng = np.random.default_rng(seed)
    qw, cw = rng.integers(0, 6, 40), rng.integers(0, 6, 50)
    qd = rng.normal(size=(40, 8)).astype(np.float32)
    cd = rng.normal(size=(50, 8)).astype(np.float32)  # continuous: no distance ties
    got = tentative_matches_words_desc(qw, cw, qd, cd, ratio=0.9, max_per_word=None,
                                       max_pairs=None)
    assert set(map(tuple, got.tolist())) == brute_force_words_desc(qw, cw, qd, cd, 0.9)
    assert len(np.unique(got[:, 0])) == len(got) == len(np.unique(got[:, 1]))


@pytest.mark.parametrize("sorted_words", [False, True])  # a store's words are sorted
def test_words_desc_many_candidates_in_one_pass_equal_the_definition(sorted_words):
    rng = np.random.default_rng(5)
    qw, qd = rng.integers(0, 5, 30), rng.normal(size=(30, 8)).astype(np.float32)
    cands = [(rng.integers(0, 5, n), rng.normal(size=(n, 8)).astype(np.float32))
             for n in (25, 0, 40, 1)]
    if sorted_words:
        cands = [(np.sort(w), d) for w, d in cands]
    many = tentative_matches_words_desc_many(qw, [c[0] for c in cands], qd,
                                             [c[1] for c in cands], ratio=0.9,
                                             max_per_word=None, max_pairs=None)
    assert len(many) == 4 and len(many[1]) == 0
    for (cw, cd), got in zip(cands, many, strict=True):
        assert set(map(tuple, got.tolist())) == brute_force_words_desc(qw, cw, qd, cd, 0.9)


def test_words_desc_hamming_and_multiple_assignment():
    rng = np.random.default_rng(0)
    cd = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    qd = cd[::-1].copy()  # query point i is candidate point 29 - i
    cw = rng.integers(0, 3, 30)
    qw = cw[::-1].copy()
    got = tentative_matches_words_desc(qw, cw, qd, cd)
    assert sorted(map(tuple, got.tolist())) == [(i, 29 - i) for i in range(30)]
    # a wrong first word is recovered by the second one; -1 pads unused slots
    wrong = np.stack([(qw + 1) % 3, qw], 1)
    wrong[::2, 1] = -1
    got = tentative_matches_words_desc(wrong, cw, qd, cd)
    assert sorted(map(tuple, got.tolist())) == [(i, 29 - i) for i in range(1, 30, 2)]


@pytest.fixture(scope="module")
def coarse_scene(tmp_path_factory):
    """A copy and unrelated images quantised on a 6-word vocabulary: every word is a burst."""
    from conftest import textured_image

    ext = LocalFeatureExtractor("sift", 500)
    src = textured_image(21, (300, 400))
    copy = attack_rotate(attack_crop(src, np.random.default_rng(3), keep=(0.6, 0.7)),
                         np.random.default_rng(4), max_angle=20)
    gallery = [textured_image(22, (300, 400)), copy, textured_image(23, (300, 400))]
    g_feats = [ext(im) for im in gallery]
    q = ext(src)
    vocab = KMeansVocabulary(n_words=6, random_state=0).fit(
        np.concatenate([f.descriptors for f in g_feats]))
    directory = tmp_path_factory.mktemp("coarse")
    with FeatureStoreWriter(directory, words=True) as w:
        for f in g_feats:
            w.append(f, words=vocab.assign(f.descriptors))
    return q, vocab.assign(q.descriptors), FeatureStore.open(directory)


def test_coarse_vocabulary_loses_word_matches_but_not_descriptor_ones(coarse_scene):
    """Issue 15.2: with a coarse vocabulary every shared word is a burst, so word matching
    finds nothing to verify; resolving the word pairs by descriptors verifies the copy."""
    query, qwords, store = coarse_scene
    words = SpatialVerifier(matcher="words").rerank(query, np.arange(3), store,
                                                     query_words=qwords)
    assert (words[1] < 12).all()  # nothing verified
    order, inliers = SpatialVerifier(matcher="words+desc").rerank(
        query, np.arange(3), store, query_words=qwords)
    assert order[0] == 1 and inliers[0] >= 12 and (inliers[1:] < 12).all()


def test_max_keypoints_bounds_the_query(copy_scene):
    query, qwords, store = copy_scene
    full = SpatialVerifier(matcher="words+desc").rerank(query, np.arange(6), store,
                                                        query_words=qwords)
    n = len(query) // 3
    order, inliers = SpatialVerifier(matcher="words+desc", max_keypoints=n).rerank(
        query, np.arange(6), store, query_words=qwords)
    assert set(order[:2].tolist()) == {1, 4}  # still verified, on a third of the points
    assert inliers[0] <= n < full[1][0]


def test_words_desc_needs_descriptors_in_the_store(copy_scene, tmp_path):
    query, qwords, _ = copy_scene
    with FeatureStoreWriter(tmp_path / "w", words=True, descriptors="none") as w:
        w.append(query, words=qwords)
    store = FeatureStore.open(tmp_path / "w")
    with pytest.raises(ValueError, match="words\\+desc.*needs a feature store with descriptors"):
        SpatialVerifier(matcher="words+desc").rerank(query, np.arange(1), store,
                                                      query_words=qwords)


def test_words_desc_on_a_rootsift_store_brings_the_query_to_the_stored_scale(tmp_path):
    """RootSIFT values are at most 1 and are stored as uint8 times 255: the query must be
    compared at that scale, or its nearest stored descriptor is just the smallest one."""
    from conftest import textured_image

    ext = LocalFeatureExtractor("rootsift", 500)
    src = textured_image(31, (300, 400))
    copy = attack_crop(src, np.random.default_rng(5), keep=(0.6, 0.7))
    g_feats = [ext(textured_image(32, (300, 400))), ext(copy)]
    q = ext(src)
    vocab = KMeansVocabulary(n_words=8, random_state=0).fit(
        np.concatenate([f.descriptors for f in g_feats]))
    with FeatureStoreWriter(tmp_path / "r", words=True) as w:
        for f in g_feats:
            w.append(f, words=vocab.assign(f.descriptors))
    store = FeatureStore.open(tmp_path / "r")
    assert store.info["descriptors"]["scale"] == 255.0  # the case under test
    order, inliers = SpatialVerifier(matcher="words+desc").rerank(
        q, np.arange(2), store, query_words=vocab.assign(q.descriptors))
    assert order[0] == 1 and inliers[0] >= 25 and inliers[1] < 12


def test_pair_distances_of_quantised_float_and_binary_descriptors():
    rng = np.random.default_rng(7)
    q, c = rng.integers(0, 256, (20, 128), dtype=np.uint8), rng.integers(0, 256, (30, 128),
                                                                         dtype=np.uint8)
    pairs = np.stack([rng.integers(0, 20, 50), rng.integers(0, 30, 50)], 1)
    expected = ((q[pairs[:, 0]].astype(float) - c[pairs[:, 1]]) ** 2).sum(1)  # no overflow
    np.testing.assert_array_equal(pair_distances(q, c, pairs, False), expected)
    np.testing.assert_allclose(pair_distances(q.astype(np.float32), c, pairs, False), expected)
    bits = np.unpackbits(q[pairs[:, 0]], axis=1) != np.unpackbits(c[pairs[:, 1]], axis=1)
    np.testing.assert_array_equal(pair_distances(q, c, pairs, True), bits.sum(1))
