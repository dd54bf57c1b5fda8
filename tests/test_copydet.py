"""Copy detection with ASMK as the first stage: query expansion of ASMK codes, the key
points' words for ``words+desc`` verification, and the bundle path (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import textured_image

from cvretrieval.asmk_index import AsmkCodes, AsmkIndex, expand_codes
from cvretrieval.rerank.matching import _descriptor_scale


def _random_codes(rng: np.random.Generator, n_words: int, n: int) -> AsmkCodes:
    words = np.sort(rng.choice(n_words, size=n, replace=False)).astype(np.uint32)
    return AsmkCodes(words, rng.integers(0, 256, (n, 4), dtype=np.uint8))


def test_expanded_query_scores_are_the_sum_of_the_parts():
    rng = np.random.default_rng(0)
    idx = AsmkIndex(n_words=40, n_bits=32, alpha=3.0, tau=0.0)
    gallery = [_random_codes(rng, 40, 15) for _ in range(8)]
    idx.add_with_ids(gallery, np.arange(8))
    q, o1, o2 = _random_codes(rng, 40, 12), gallery[3], gallery[5]
    idf, _ = idx._statistics()

    def raw(item: AsmkCodes) -> np.ndarray:  # scores without the query's normalisation
        return idx.scores(item).astype(np.float64) * np.sqrt(idf[item.words.astype(int)].sum())

    e = expand_codes(q, [o1, o2])
    assert len(e) == len(q) + len(o1) + len(o2)
    assert (np.diff(e.words.astype(np.int64)) >= 0).all()
    np.testing.assert_allclose(raw(e), raw(q) + raw(o1) + raw(o2), rtol=1e-4, atol=1e-6)
    # the verified images pull their own neighbourhood up: both rank above the rest
    assert set(np.argsort(-idx.scores(e))[:2].tolist()) == {3, 5}


def test_expand_codes_edge_cases():
    rng = np.random.default_rng(1)
    q = _random_codes(rng, 20, 5)
    assert expand_codes(q, []) is q
    empty = AsmkCodes(np.zeros(0, np.uint32), np.zeros((0, 4), np.uint8))
    e = expand_codes(empty, [q])
    np.testing.assert_array_equal(e.words, q.words)
    np.testing.assert_array_equal(e.codes, q.codes)
    other = AsmkCodes(np.array([3], np.uint32), np.zeros((1, 8), np.uint8))
    with pytest.raises(ValueError, match="different lengths"):
        expand_codes(q, [other])


@pytest.fixture(scope="module")
def fitted_asmk():
    from cvretrieval.embedders import make_embedder

    emb = make_embedder("asmk", detector="sift", n_words=64, n_features=200)
    feats = [emb.extract(textured_image(i)) for i in range(6)]
    return emb.fit(feats), feats


def test_keypoint_words_are_the_nearest_centres(fitted_asmk):
    emb, feats = fitted_asmk
    x = feats[0].descriptors.astype(np.float64)
    c = emb.vocabulary_.centers_.astype(np.float64)
    d2 = (x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None, :]
    words = emb.keypoint_words(feats[0])
    assert words.shape == (len(x),)
    best = d2[np.arange(len(x)), words]
    assert (best <= d2.min(axis=1) + 1e-3 * np.abs(d2).max()).all()
    # the gallery side of ASMK aggregates exactly these words
    assert set(words.tolist()) == set(emb.reduce(feats[0]).words.tolist())
    # after a query-side reduce (multiple assignment) its nearest words are reused: the same
    emb.reduce(feats[0], query=True)
    np.testing.assert_array_equal(emb.keypoint_words(feats[0]), words)
    assert emb.keypoint_words(feats[1]).shape == (len(feats[1].descriptors),)


def test_asmk_verifies_with_its_words_only_when_asked(fitted_asmk):
    from cvretrieval.pipeline import SVFeatures

    emb, feats = fitted_asmk
    assert SVFeatures.for_embedder(emb, None, "words+desc").mode == "words+desc"
    assert SVFeatures.for_embedder(emb, None, "words+desc").own
    # the default keeps the bundles built before: brute-force ratio matching
    assert SVFeatures.for_embedder(emb, None, "words").mode == "ratio"
    # another detector than the embedder's: its own extraction, ratio matching
    assert SVFeatures.for_embedder(emb, "orb", "words+desc").mode == "ratio"
    sv = SVFeatures.for_embedder(emb, None, "words+desc")
    np.testing.assert_array_equal(sv.words_of(emb, feats[1], None), emb.keypoint_words(feats[1]))


class _Part:
    def __init__(self, scale):
        self.info = {"descriptors": {"scale": scale}}


class _Segmented:
    def __init__(self, *scales):
        self.stores = [_Part(s) for s in scales]


def test_descriptor_scale_of_plain_and_segmented_stores():
    assert _descriptor_scale(_Part(512.0)) == 512.0
    assert _descriptor_scale(_Part(None)) == 1.0
    assert _descriptor_scale(_Segmented(512.0, 512.0)) == 512.0
    assert _descriptor_scale(_Segmented(512.0, 256.0)) is None  # compare floats instead
    assert _descriptor_scale(object()) is None


def _write(folder: Path, seeds) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in seeds:
        p = folder / f"img{s:03d}.png"
        cv2.imwrite(str(p), textured_image(int(s), (240, 320))[:, :, ::-1])
        out.append(p)
    return out


def test_asmk_bundle_with_words_desc_verification_and_expansion(tmp_path):
    import cv2

    from cvretrieval.embedders import make_embedder
    from cvretrieval.retriever import Retriever

    paths = _write(tmp_path / "imgs", range(10))
    img = cv2.imread(str(paths[6]))
    h, w = img.shape[:2]
    copy = tmp_path / "copy.jpg"
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 0.8), (w, h))
    cv2.imwrite(str(copy), cv2.resize(rot, (w * 3 // 5, h * 3 // 5)),
                [cv2.IMWRITE_JPEG_QUALITY, 30])
    emb = make_embedder("asmk", detector="sift", n_words=64, n_features=300)
    ret = Retriever(emb, n_jobs=1, rerank=["sv", "qe"], sv_matcher="words+desc", qe_k=2,
                    sv_min_inliers=8, sv_min_coverage=0.5, sv_order="rank").build(
        paths, output=tmp_path / "b")
    store = ret.feature_store()
    assert store.has_words and store.has_descriptors
    # the stored words are the key points' ASMK words, one per stored key point
    kp = store.get_keypoints(0)
    assert store.get_words(0).shape[0] == kp.shape[0]
    back = Retriever.load(tmp_path / "b")
    assert back.sv_features.mode == "words+desc"
    assert (back.sv_min_coverage, back.sv_order) == (0.5, "rank")
    for steps in ("sv", "sv,qe"):
        hits = back.search(copy, k=3, rerank=steps)
        assert hits[0].path == str(paths[6].resolve()), steps
    # expansion without verification (the top results, unchecked) runs on codes too
    hits = back.search(copy, k=3, rerank="qe")
    assert len({h.path for h in hits}) == 3


@pytest.fixture(scope="module")
def partial_scene(tmp_path_factory):
    """A query, a copy of it (crop), and an image that shares only a corner with it."""
    from cvretrieval.copies import attack_crop
    from cvretrieval.features.local import LocalFeatureExtractor
    from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter

    ext = LocalFeatureExtractor("sift", 600)
    src = textured_image(21, (300, 400))
    copy = attack_crop(src, np.random.default_rng(3), keep=(0.7, 0.8))
    partial = textured_image(22, (300, 400)).copy()
    partial[:200, :250] = src[:200, :250]  # same corner, the rest another scene
    gallery = [partial, textured_image(23, (300, 400)), copy]
    g_feats = [ext(im) for im in gallery]
    directory = tmp_path_factory.mktemp("cover")
    with FeatureStoreWriter(directory) as w:
        for f in g_feats:
            w.append(f)
    return ext(src), FeatureStore.open(directory)


def test_coverage_separates_a_copy_from_a_shared_corner(partial_scene):
    from cvretrieval.rerank.spatial import SpatialVerifier

    query, store = partial_scene
    plain = SpatialVerifier(matcher="ratio", min_inliers=12)
    order, inliers = plain.rerank(query, np.arange(3), store)
    got = dict(zip(order.tolist(), inliers.tolist(), strict=True))
    assert got[0] >= 12 and got[2] >= 12  # both verify on inliers alone
    strict = SpatialVerifier(matcher="ratio", min_inliers=12, min_coverage=0.5)
    order, inliers = strict.rerank(query, np.arange(3), store)
    got = dict(zip(order.tolist(), inliers.tolist(), strict=True))
    assert got[2] >= 12 and got[0] == 11  # the corner fails the coverage test
    assert order.tolist() == [2, 0, 1] and strict.stats_["verified"] == 1
    # verification as a filter keeps the first stage's order among verified results
    rank = SpatialVerifier(matcher="ratio", min_inliers=12, order="rank")
    assert rank.rerank(query, np.array([1, 2, 0]), store)[0].tolist() == [2, 0, 1]
    assert rank.rerank(query, np.array([0, 1, 2]), store)[0].tolist() == [0, 2, 1]
    by_cover = SpatialVerifier(matcher="ratio", min_inliers=12, order="coverage")
    assert by_cover.rerank(query, np.array([0, 1, 2]), store)[0].tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="order"):
        SpatialVerifier(order="best").rerank(query, np.arange(3), store)
