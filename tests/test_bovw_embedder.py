"""BoVW embedder regressions: issue 13 defect 3 (silently meaningless scores) and issue 12
(no I/O in ``__init__``)."""

from __future__ import annotations

import logging

import numpy as np

from cvretrieval.embedders.classical import BoVWEmbedder, HOGEmbedder
from cvretrieval.features.local import LocalFeatures


def _fitted_small_vocabulary(make_textured, n_images=30, n_words=32):
    emb = BoVWEmbedder(detector="orb", n_features=300, n_words=n_words, random_state=0)
    feats = [emb.extract(make_textured(i)) for i in range(n_images)]
    emb.fit(feats)
    reduced = [emb.reduce(f) for f in feats]
    return emb, reduced


def test_tiny_vocabulary_warns_and_vectors_stay_meaningful(make_textured, caplog):
    # issue 13: 32 ORB words on 30 images put every word in every image; with ln(N/df)
    # every vector was zero and every score 0 (arbitrary order), without a warning
    emb, reduced = _fitted_small_vocabulary(make_textured)
    with caplog.at_level(logging.WARNING):
        emb.fit_corpus(reduced)
    assert any("vocabulary is too small" in r.getMessage() for r in caplog.records)
    assert (emb.idf_ > 0).all()
    x = emb.encode(reduced)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    scores = x @ x.T
    # each image is its own best match, which all-zero vectors could never give
    assert (np.argmax(scores, axis=1) == np.arange(len(x))).all()


def test_adequate_vocabulary_does_not_warn(make_textured, caplog):
    emb, reduced = _fitted_small_vocabulary(make_textured, n_images=12, n_words=400)
    with caplog.at_level(logging.WARNING):
        emb.fit_corpus(reduced)
    assert not any("too small" in r.getMessage() for r in caplog.records)


def test_image_without_features_is_flagged(make_textured):
    emb, reduced = _fitted_small_vocabulary(make_textured, n_images=12, n_words=64)
    emb.fit_corpus(reduced)
    tiny = np.zeros((3, 3, 3), np.uint8)
    r = emb.reduce(emb.extract(tiny))
    assert r.size == 0 and not emb.has_features(r)
    assert emb.has_features(reduced[0])
    assert not emb.encode([r]).any()  # an all-zero row: scores 0 against everything
    # a word list of only word 0 still has features (not confused with "empty")
    assert emb.has_features(np.zeros(5, np.uint32))
    assert not emb.has_features(emb.reduce(LocalFeatures.empty(32, True)))


def test_hog_flat_image_has_no_features():
    hog = HOGEmbedder(size=32)
    assert not hog.has_features(hog.extract(np.full((3, 3, 3), 128, np.uint8)))
    rng = np.random.default_rng(0)
    assert hog.has_features(hog.extract(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))


def test_init_reads_no_vocabulary(tmp_path):
    # issue 12: a missing vocabulary folder fails in fit, not in __init__
    emb = BoVWEmbedder(detector="orb", vocabulary=str(tmp_path / "absent"))
    assert emb.needs_fit and emb.vocabulary_ is None
    assert emb.n_fit_images(1000) == 1


def test_defaults_match_the_straightforward_baseline():
    # issue 15.3, measured in benchmarks/bovw_baseline.py: RootSIFT, 20 k-means
    # iterations on a 200k-descriptor sample equal the Faiss baseline
    emb = BoVWEmbedder()
    assert emb.detector == "rootsift" and emb.max_descriptors == 200_000
    assert emb.default_kmeans_niter == 20 and emb.niter is None


def test_niter_reaches_the_vocabulary(make_textured):
    emb = BoVWEmbedder(detector="sift", n_features=200, n_words=16, niter=3)
    emb.fit([emb.extract(make_textured(i)) for i in range(3)])
    assert emb.vocabulary_.niter == 3
    default = BoVWEmbedder(detector="sift", n_features=200, n_words=16)
    default.fit([default.extract(make_textured(i)) for i in range(3)])
    assert default.vocabulary_.niter == 20
    orb = BoVWEmbedder(detector="orb", n_features=200, n_words=16)
    orb.fit([orb.extract(make_textured(i)) for i in range(3)])
    assert orb.vocabulary_.niter == 10  # k-majority keeps its own default
