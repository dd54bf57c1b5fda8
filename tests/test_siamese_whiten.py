"""Learned whitening for the Siamese head: the shrinkage (ridge) and its choice by held-out
classes (cvretrieval.siamese.whiten), and the closed-form recipe through fit_head and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvretrieval.siamese.whiten import SHRINKAGE_GRID, choose_shrinkage, lw_init, pca_init


def _nuisance_data(seed=0, n_classes=10, per=12):
    """Classes separated on 3 quiet axes; one loud axis of pure within-class noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    X = np.zeros((len(y), 4))
    X[:, 0] = rng.normal(0, 10, len(y))
    X[:, 1:] = rng.normal(0, 1, (n_classes, 3))[y] + rng.normal(0, 0.1, (len(y), 3))
    return X, y


def test_a_huge_ridge_turns_learned_whitening_into_pca():
    # (Sw + r I)^(-1/2) -> I / sqrt(r) as r grows: the second stage is then PCA of X
    X, y = _nuisance_data()
    W, mean = lw_init(X, y, 2, shrinkage=1e9)
    W_pca, mean_pca = pca_init(X, 2)
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(Wn @ W_pca.T), np.eye(2), atol=1e-4)
    np.testing.assert_allclose(mean, mean_pca, atol=1e-6)


def test_a_small_ridge_projects_the_loud_nuisance_axis_away():
    X, y = _nuisance_data()
    W, _ = lw_init(X, y, 3, shrinkage=1e-6)
    # within-class std 10 on x0 against 0.1 on the class axes: x0's weight is ~100x smaller
    assert np.abs(W[:, 0]).max() < 0.02 * np.abs(W[:, 1:]).max()


def test_choose_shrinkage_whitens_when_the_nuisance_is_loud():
    X, y = _nuisance_data()
    best, scores = choose_shrinkage(X, y, 4, grid=(1e-3, 1e3))
    assert best == 1e-3 and set(scores) == {1e-3, 1e3}
    assert scores[1e-3] > 0.95 > scores[1e3]  # with x0 kept, cosine ranks by noise


def test_choose_shrinkage_regularises_when_classes_are_few_images_in_many_dims():
    # isotropic within-class noise: the best linear map is the identity (any ridge -> PCA
    # on the full rank keeps it); 2 images a class estimate Sw from 12 of 60 directions,
    # and a small ridge blows the other 48 up by 1/sqrt(ridge) relative to them
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(12), 2)
    X = rng.normal(0, 1, (12, 60))[y] + rng.normal(0, 1.0, (24, 60))
    best, scores = choose_shrinkage(X, y, 60, grid=(1e-6, 1e6))
    assert best == 1e6 and scores[1e6] > scores[1e-6]


def test_choose_shrinkage_ties_go_to_the_larger_ridge_and_bad_input_is_refused():
    X, y = _nuisance_data()
    best, scores = choose_shrinkage(X, y, 4, grid=(1e6, 1e7))  # both are PCA: same scores
    assert scores[1e6] == pytest.approx(scores[1e7], abs=1e-9) and best == 1e7
    with pytest.raises(ValueError, match="4 or more classes"):
        choose_shrinkage(X[y < 3], y[y < 3], 4)
    with pytest.raises(ValueError, match="empty"):
        choose_shrinkage(X, y, 4, grid=())
    assert SHRINKAGE_GRID == tuple(sorted(SHRINKAGE_GRID))


torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None,
    reason="fit_head needs PyTorch (extra 'siamese')",
)


@torch_needed
def test_fit_head_auto_shrinkage_is_chosen_on_training_classes_and_used():
    from cvretrieval.embedders.base import l2_normalize
    from cvretrieval.siamese.head import embed_numpy
    from cvretrieval.siamese.train import fit_head

    X, y = _nuisance_data(seed=1)
    X = X + np.array([30.0, 0, 0, 0])  # keep vectors away from the origin before normalising
    model, info = fit_head(X, y, head=(4,), init="lw", shrinkage="auto", epochs=0, mix=1.0,
                           center=False, progress=False)
    Xn = l2_normalize(X.astype(np.float32))
    want_s, want_scores = choose_shrinkage(Xn, y, 4)
    assert info["shrinkage"] == want_s and info["shrinkage_scores"] == want_scores
    W, m = lw_init(Xn, y, 4, shrinkage=want_s)
    want = l2_normalize(((Xn - m) @ W.T).astype(np.float32))
    np.testing.assert_allclose(embed_numpy(model, X.astype(np.float32)), want, atol=1e-4)
    _, info = fit_head(X, y, head=(4,), init="pca", epochs=0, progress=False)
    assert info["shrinkage"] is None and info["shrinkage_scores"] is None
    with pytest.raises(ValueError, match="shrinkage"):
        fit_head(X, y, init="lw", shrinkage=-1.0, progress=False)
    with pytest.raises(ValueError, match="shrinkage"):
        fit_head(X, y, init="lw", shrinkage="big", progress=False)


@torch_needed
def test_cli_trains_the_closed_form_whitening_head(tmp_path):
    pytest.importorskip("onnx", reason="exporting the head needs onnx (extra 'siamese')")
    from conftest import cli_run
    from test_siamese import _write_classes

    data = _write_classes(tmp_path / "data", n_classes=6, n_per=4)
    model = tmp_path / "model"
    cli_run("train", "siamese", data, "--base", "hog", "--init", "lw", "--shrinkage", 2,
            "--head", 16, "--epochs", 0, "--val-split", 0, "--n-jobs", 1, "-o", model, "-q",
            "--json", tmp_path / "train.json")
    info = json.loads((tmp_path / "train.json").read_text())
    meta = json.loads((model / "siamese.json").read_text())
    assert info["best_epoch"] == 0 and info["beta"] == 1.0
    assert meta["training"]["shrinkage"] == 2.0 and meta["training"]["epochs"] == 0
    res = cli_run("train", "siamese", data, "--base", "hog", "--init", "lw", "--shrinkage",
                  "lots", "-o", tmp_path / "m2", "-q", ok=False)
    assert res.exit_code != 0 and "--shrinkage" in res.output


@torch_needed
def test_cli_base_views_are_kept_in_the_model_and_used_when_embedding(tmp_path):
    pytest.importorskip("onnx", reason="exporting the head needs onnx (extra 'siamese')")
    pytest.importorskip("onnxruntime", reason="the ONNX base needs onnxruntime (extra 'deep')")
    from conftest import cli_run
    from test_deep import write_conv_onnx
    from test_siamese import _write_classes

    from cvretrieval.embedders import make_embedder
    from cvretrieval.io import read_image

    data = _write_classes(tmp_path / "data", n_classes=6, n_per=4)
    conv = write_conv_onnx(tmp_path / "conv.onnx", size=16)
    model = tmp_path / "model"
    cli_run("train", "siamese", data, "--base", f"onnx:{conv}", "--base-views", "full,crop0.5",
            "--init", "lw", "--shrinkage", 1, "--head", 4, "--epochs", 0, "--val-split", 0,
            "--n-jobs", 1, "-o", model, "-q")
    meta = json.loads((model / "siamese.json").read_text())
    assert meta["training"]["base_views"] == "full,crop0.5"
    siamese = make_embedder(f"siamese:{model}")
    images = [read_image(p, max_side=640) for p in sorted(data.glob("class*/0.png"))]
    X = siamese.embed(images)
    with_views = make_embedder(f"onnx:{conv}", views="full,crop0.5").embed(images)
    plain = make_embedder(f"onnx:{conv}").embed(images)
    np.testing.assert_allclose(X, siamese.apply_head(with_views), atol=1e-5)
    assert not np.allclose(X, siamese.apply_head(plain), atol=1e-3)
    res = cli_run("train", "siamese", data, "--base", "hog", "--base-views", "full,flip",
                  "-o", tmp_path / "m2", "-q", ok=False)
    assert res.exit_code != 0 and "views" in res.output
