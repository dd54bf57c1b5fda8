"""PCA-whitening: known answers from hand-computed covariances and from linear algebra."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from cvretrieval.errors import BundleError, NotFittedError
from cvretrieval.whitening import PCAWhitening

# a cross: mean 0, covariance (n - 1 = 3 denominator) diag(18/3, 2/3) = diag(6, 2/3)
CROSS = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
POINT = np.array([[3.0, 1.0]])


def test_eigen_decomposition_of_the_cross():
    w = PCAWhitening().fit(CROSS)
    np.testing.assert_allclose(w.mean_, [0, 0], atol=1e-7)
    np.testing.assert_allclose(w.explained_variance_, [6.0, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(np.abs(w.components_), np.eye(2), atol=1e-6)
    assert w.n_components_ == 2 and w.n_features_in_ == 2


def test_whitened_point_by_hand():
    # (3, 1) -> (3 / sqrt 6, 1 / sqrt(2/3)) = (1.2247, 1.2247) -> L2 -> (1/sqrt2, 1/sqrt2)
    y = PCAWhitening().fit(CROSS).transform(POINT)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(np.abs(y), [[1 / math.sqrt(2)] * 2], rtol=1e-6)


def test_pca_only_and_power_by_hand():
    y = PCAWhitening(whiten=False).fit(CROSS).transform(POINT)
    np.testing.assert_allclose(np.abs(y), [[3 / math.sqrt(10), 1 / math.sqrt(10)]], rtol=1e-6)
    # signed square root of (3, 1) is (sqrt3, 1), of norm 2
    y = PCAWhitening(whiten=False, power=0.5).fit(CROSS).transform(POINT)
    np.testing.assert_allclose(np.abs(y), [[math.sqrt(3) / 2, 0.5]], rtol=1e-6)


def test_shrinkage_by_hand():
    # mean eigenvalue (6 + 2/3) / 2 = 10/3; s = 0.5 -> (3 + 5/3, 1/3 + 5/3) = (14/3, 2)
    y = PCAWhitening(shrinkage=0.5).fit(CROSS).transform(POINT)
    v = np.array([3 / math.sqrt(14 / 3), 1 / math.sqrt(2)])
    np.testing.assert_allclose(np.abs(y), [v / np.linalg.norm(v)], rtol=1e-6)
    # s = 1 is a plain PCA projection
    np.testing.assert_allclose(
        PCAWhitening(shrinkage=1.0).fit(CROSS).transform(POINT),
        PCAWhitening(whiten=False).fit(CROSS).transform(POINT),
        atol=1e-6,
    )


def test_matches_numpy_eigh_and_whitens_to_identity():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 5.0
    w = PCAWhitening(n_components=4).fit(X)
    evals, evecs = np.linalg.eigh(np.cov(X, rowvar=False))
    order = np.argsort(evals)[::-1][:4]
    np.testing.assert_allclose(w.explained_variance_, evals[order], rtol=1e-4)
    np.testing.assert_allclose(np.abs(w.components_ @ evecs[:, order]), np.eye(4), atol=1e-4)
    # before the final L2 normalisation, whitened training data has identity covariance
    Z = (X - w.mean_) @ w.components_.T * w.scales()
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(4), atol=1e-4)
    Y = w.transform(X)
    assert Y.shape == (300, 4)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-5)


def test_more_dimensions_than_vectors_gives_a_regular_simplex(caplog):
    # n points fully whitened in their (n - 1)-d span: every pair has cosine -1 / (n - 1),
    # which is why whitening must be fitted on more vectors than it keeps dimensions
    rng = np.random.default_rng(3)
    n = 12
    X = np.abs(rng.normal(size=(n, 200)))  # non-negative, like BoVW / histogram vectors
    with caplog.at_level(logging.WARNING, logger="cvretrieval.whitening"):
        w = PCAWhitening(n_components=64).fit(X)
    assert w.n_components_ == n - 1
    assert "keeping 11" in caplog.text
    Y = w.transform(X).astype(np.float64)
    G = Y @ Y.T
    off = G[~np.eye(n, dtype=bool)]
    np.testing.assert_allclose(off, -1 / (n - 1), atol=1e-4)


def test_rank_deficient_data_drops_zero_variance_directions(caplog):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 2)) @ rng.normal(size=(2, 5))  # lies in a 2-D subspace
    with caplog.at_level(logging.WARNING, logger="cvretrieval.whitening"):
        w = PCAWhitening().fit(X)
    assert w.n_components_ == 2
    assert "non-zero variance" in caplog.text
    assert np.isfinite(w.transform(X)).all()


@pytest.mark.parametrize(
    "params, X, match",
    [
        ({"n_components": 0}, CROSS, "n_components"),
        ({"shrinkage": 1.5}, CROSS, "shrinkage"),
        ({"power": 0}, CROSS, "power"),
        ({}, CROSS[:1], "at least 2"),
        ({}, np.ones((5, 3)), "identical"),
        ({}, np.array([1.0, 2.0]), "2-D"),
        ({}, np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    ],
)
def test_fit_errors(params, X, match):
    with pytest.raises(ValueError, match=match):
        PCAWhitening(**params).fit(X)


def test_transform_errors_and_empty_input():
    with pytest.raises(NotFittedError, match="fit"):
        PCAWhitening().transform(POINT)
    w = PCAWhitening().fit(CROSS)
    with pytest.raises(ValueError, match="fitted on 2-d"):
        w.transform(np.ones((1, 3)))
    assert w.transform(np.zeros((0, 2))).shape == (0, 2)
    assert w.transform(np.zeros(0)).shape == (0, 2)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 16)).astype(np.float32)
    w = PCAWhitening(n_components=8, shrinkage=0.1, power=0.5).fit(X)
    w.save(tmp_path / "w")
    meta = json.loads((tmp_path / "w" / "whitening.json").read_text())
    assert meta["params"]["n_components"] == 8 and meta["n_components_"] == 8
    w2 = PCAWhitening.load(tmp_path / "w")
    assert w2.get_params() == w.get_params()
    np.testing.assert_array_equal(w2.transform(X), w.transform(X))

    np.save(tmp_path / "w" / "mean.npy", np.zeros(15, np.float32))
    with pytest.raises(BundleError, match="mean.npy"):
        PCAWhitening.load(tmp_path / "w")
    (tmp_path / "w" / "components.npy").unlink()
    with pytest.raises(BundleError, match="missing"):
        PCAWhitening.load(tmp_path / "w")
    with pytest.raises(BundleError, match="no saved whitening"):
        PCAWhitening.load(tmp_path / "nothing")


def test_fit_whitening_on_a_separate_training_set(tmp_path, make_textured, caplog):
    import cv2

    from cvretrieval.embedders import HOGEmbedder
    from cvretrieval.whitening import fit_whitening_on

    paths = []
    for i in range(6):
        p = tmp_path / f"t{i}.png"
        cv2.imwrite(str(p), make_textured(100 + i))
        paths.append(p)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    emb = HOGEmbedder(size=32)
    with caplog.at_level(logging.WARNING):
        white = fit_whitening_on(emb, [*paths, tmp_path / "broken.jpg"], batch_size=4)
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    # 6 training vectors support 5 components; the whitening is learned on them only
    assert white.n_components_ == 5 and white.n_features_in_ == emb.dim
    from cvretrieval.io import read_image

    x = emb.embed([read_image(p) for p in paths])
    np.testing.assert_allclose(white.mean_, x.mean(axis=0), rtol=1e-4, atol=1e-6)
    y = white.transform(emb.embed([make_textured(0)]))
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2 readable"):
        fit_whitening_on(emb, [tmp_path / "broken.jpg"])
