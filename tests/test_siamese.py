"""Siamese training (losses, mining, head, ONNX export, train_siamese) and SiameseEmbedder."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="Siamese training needs PyTorch (extra 'siamese')")

from cvretrieval.errors import BundleError, MissingExtraError  # noqa: E402
from cvretrieval.siamese.export import export_onnx  # noqa: E402
from cvretrieval.siamese.head import (  # noqa: E402
    ProjectionHead,
    SiameseModel,
    embed_numpy,
    parse_head,
    pca_init,
)
from cvretrieval.siamese.losses import batch_loss, contrastive_loss, triplet_loss  # noqa: E402
from cvretrieval.siamese.mining import (  # noqa: E402
    PKSampler,
    batch_hard,
    mine_triplets,
    pairwise_distances,
    random_triplets,
    semi_hard,
)
from cvretrieval.siamese.train import (  # noqa: E402
    class_retrieval_metrics,
    dataset_labels,
    embed_base,
    fit_head,
    resolve_base,
    split_classes,
    train_siamese,
)


def naive_map(X: np.ndarray, y: np.ndarray) -> float:
    """Class retrieval mAP with revisitop's trapezoidal AP, written out query by query.

    For the k-th hit (0-based) at 0-based rank r: AP += (k / r + (k + 1) / (r + 1)) / 2 / n_pos,
    with k / r taken as 1 when r = 0 (Radenović et al. 2018, ``compute_ap``).
    """
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    aps = []
    for i in range(len(X)):
        others = np.array([j for j in range(len(X)) if j != i])
        order = others[np.argsort(-(Xn[others] @ Xn[i]), kind="stable")]
        hits = np.flatnonzero(y[order] == y[i])
        if hits.size == 0:
            continue
        ap = 0.0
        for k, r in enumerate(hits):
            p0 = 1.0 if r == 0 else k / r
            ap += (p0 + (k + 1) / (r + 1)) / 2 / hits.size
        aps.append(ap)
    return float(np.mean(aps))


# --------------------------------------------------------------------------- losses
def test_pairwise_distances_match_numpy_and_have_finite_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    x[4] = x[3]  # identical rows: distance 0, gradient must stay finite
    expected = np.linalg.norm(x[:, None] - x[None], axis=2)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    d = pairwise_distances(xt)
    np.testing.assert_allclose(d.detach().numpy(), expected, atol=1e-6)
    d.sum().backward()
    assert torch.isfinite(xt.grad).all()
    np.testing.assert_allclose(pairwise_distances(xt, squared=True).detach().numpy(), expected**2,
                               atol=1e-9)


def test_triplet_loss_hand_computed():
    d_ap = torch.tensor([0.5, 1.0, 0.2])
    d_an = torch.tensor([0.4, 2.0, 0.3])
    # hinge(d_ap - d_an + 0.3): 0.4, 0 (1 - 2 + .3 < 0), 0.2  -> mean 0.2
    assert float(triplet_loss(d_ap, d_an, margin=0.3)) == pytest.approx(0.2, abs=1e-6)
    assert float(triplet_loss(torch.zeros(0), torch.zeros(0))) == 0.0


def test_contrastive_loss_hand_computed():
    d = torch.tensor([0.4, 0.2, 0.9])
    same = torch.tensor([1, 0, 0])
    # similar: 0.5 * 0.16 = 0.08; dissimilar: 0.5 * (0.5 - 0.2)^2 = 0.045; beyond margin: 0
    expected = (0.08 + 0.045) / 3
    assert float(contrastive_loss(d, same, margin=0.5)) == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- mining
def _line_batch():
    # points on a line; classes 0 0 0 1 1 1
    x = torch.tensor([[0.0], [1.0], [3.0], [2.0], [5.0], [9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    return x, labels


def test_batch_hard_picks_farthest_positive_and_closest_negative():
    x, labels = _line_batch()
    d = pairwise_distances(x)
    a, p, n = batch_hard(d, labels)
    assert a.tolist() == [0, 1, 2, 3, 4, 5]
    # anchor 0 (at 0): positives at 1, 3 -> farthest is index 2; negatives 2, 5, 9 -> index 3
    # anchor 1 (at 1): positives 0, 3 -> index 2; closest negative 2 -> index 3
    # anchor 2 (at 3): positives 0, 1 -> index 0; negatives at 2 (d1), 5 (d2) -> index 3
    # anchor 3 (at 2): positives 5, 9 -> index 5; negatives 0, 1, 3 -> 1 and 3 tie at d=1
    # anchor 4 (at 5): positives 2, 9 -> index 5 (d4); negatives 0,1,3 -> index 2 (d2)
    # anchor 5 (at 9): positives 2, 5 -> index 3 (d7); closest negative 3 -> index 2
    assert p.tolist() == [2, 2, 0, 5, 5, 3]
    assert n[[0, 1, 2, 4, 5]].tolist() == [3, 3, 3, 2, 2]
    assert int(n[3]) in (1, 2)


def test_batch_loss_triplet_batch_hard_hand_computed():
    x, labels = _line_batch()
    loss, stats = batch_loss(x, labels, "triplet", margin=1.0, mining="batch-hard")
    # per anchor: max(0, d_ap - d_an + 1)
    d_ap = np.array([3, 2, 3, 7, 4, 7], float)
    d_an = np.array([2, 1, 1, 1, 2, 6], float)
    expected = np.maximum(0, d_ap - d_an + 1).mean()
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert stats["triplets"] == 6 and stats["active"] == 1.0


def test_semi_hard_picks_closest_negative_beyond_the_positive():
    x = torch.tensor([[0.0], [1.0], [1.5], [3.0], [-0.5]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    a, p, n = semi_hard(pairwise_distances(x), labels)
    triplets = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n, strict=True)}
    # (0, 1): d_ap = 1; negatives at d 1.5, 3, 0.5 -> closest beyond 1 is index 2
    assert triplets[(0, 1)] == 2
    # (1, 0): d_ap = 1; negatives 2, 3, 4 at d 0.5, 2, 1.5 -> closest beyond 1 is index 4
    assert triplets[(1, 0)] == 4
    # (2, 4): d_ap = 2; negatives 0 (d 1.5), 1 (d 0.5): none beyond -> the farthest, index 0
    assert triplets[(2, 4)] == 0
    assert len(triplets) == 2 + 6  # ordered positive pairs: 2 in class 0, 6 in class 1


def test_random_triplets_are_valid_and_seeded():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    a, p, n = random_triplets(labels, rng=0)
    assert 6 not in a.tolist()  # class 3 has a single image: no positive
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
        assert i != j and labels[i] == labels[j] and labels[i] != labels[k]
    a2, p2, n2 = random_triplets(labels, rng=0)
    assert p.tolist() == p2.tolist() and n.tolist() == n2.tolist()


def test_mine_triplets_rejects_unknown_strategy():
    x, labels = _line_batch()
    with pytest.raises(ValueError, match="batch-hard"):
        mine_triplets(pairwise_distances(x), labels, "hardest")


def test_pk_sampler_batches():
    labels = np.repeat(np.arange(6), [8, 8, 4, 4, 3, 1])
    sampler = PKSampler(labels, batch_p=3, batch_k=2, random_state=0)
    batches = list(sampler)
    assert batches
    seen = set()
    for b in batches:
        classes, counts = np.unique(labels[b], return_counts=True)
        assert 2 <= len(classes) <= 3 and (counts == 2).all()
        seen.update(b.tolist())
    assert 27 not in seen  # the single-image class is never sampled
    assert len(seen) >= 20  # an epoch goes through (nearly) every image
    with pytest.raises(ValueError, match="at least 2"):
        PKSampler(labels, batch_p=1, batch_k=4)


# --------------------------------------------------------------------------- head
def test_parse_head():
    assert parse_head("512,256") == (512, 256)
    assert parse_head(128) == (128,)
    with pytest.raises(ValueError, match="layer sizes"):
        parse_head("512,abc")


def test_residual_head_starts_as_the_identity_when_it_keeps_the_dimension():
    x = np.random.default_rng(0).normal(size=(7, 8)).astype(np.float32)
    head = ProjectionHead(8, (16, 8), residual=True)
    out = embed_numpy(head, x)
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)


def test_pca_init_spans_the_principal_axes():
    rng = np.random.default_rng(1)
    # variance 9, 4, 1, 0.01 along a random rotation of the axes
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    X = (rng.normal(size=(500, 4)) * [3.0, 2.0, 1.0, 0.1]) @ Q.T + 5.0
    W, mean = pca_init(X, 2)
    np.testing.assert_allclose(W @ W.T, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(mean, X.mean(axis=0), atol=1e-5)
    # the rows span the same plane as the two largest axes of the rotation
    P_true = Q[:, :2] @ Q[:, :2].T
    np.testing.assert_allclose(W.T @ W, P_true, atol=0.05)


def test_mixed_model_similarity_is_the_weighted_sum():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    head = ProjectionHead(6, (4,), residual=False)
    beta = 0.3
    mixed = embed_numpy(SiameseModel(head, beta), x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    h = embed_numpy(head, xn)  # the model feeds the head unit vectors
    np.testing.assert_allclose(mixed @ mixed.T, (1 - beta) * xn @ xn.T + beta * h @ h.T, atol=1e-5)
    assert SiameseModel(head, 0.0).out_dim == 6 and SiameseModel(head, 1.0).out_dim == 4
    # centred base part: cosines of the normalised embeddings minus the mean
    mean = xn.mean(axis=0)
    centred = embed_numpy(SiameseModel(head, beta, mean=mean), x)
    c = (xn - mean) / np.linalg.norm(xn - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(centred @ centred.T, (1 - beta) * c @ c.T + beta * h @ h.T,
                               atol=1e-5)
    with pytest.raises(ValueError, match="beta"):
        SiameseModel(head, 1.5)


def test_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime (extra 'deep')")
    torch.manual_seed(0)
    head = ProjectionHead(32, (24, 16), residual=True)
    with torch.no_grad():  # make the MLP branch non-zero so the whole graph is exercised
        head.mlp[-1].weight.normal_(0, 0.1)
    x = np.random.default_rng(3).normal(size=(9, 32)).astype(np.float32)
    model = SiameseModel(head, 0.4, mean=x.mean(axis=0) / 4)
    path = export_onnx(model, tmp_path / "head.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):  # dynamic batch axis
        got = sess.run(None, {"embedding": batch})[0]
        np.testing.assert_allclose(got, embed_numpy(model, batch), atol=1e-5)


# --------------------------------------------------------------------------- training
def test_class_retrieval_metrics_matches_a_written_out_map():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 5))
    y = rng.integers(0, 4, 30)
    got = class_retrieval_metrics(X, y)["mAP"]
    assert got == pytest.approx(naive_map(X, y), abs=1e-9)


def test_class_retrieval_metrics_agree_with_compute_metrics():
    from cvretrieval.evaluation import compute_metrics

    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 4))
    y = rng.integers(0, 12, 60)
    y[0] = 99  # a class with a single image: no positives, left out of the mean
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    order = np.argsort(-(Xn @ Xn.T), axis=1, kind="stable")
    gnd = [{"ok": np.flatnonzero(y == c).tolist()} for c in y]
    expected, _ = compute_metrics(list(order), gnd, list(range(60)), ks=(10,))
    got = class_retrieval_metrics(X, y)
    assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert got["P@10"] == pytest.approx(expected["P@10"], abs=1e-12)


def test_split_classes_holds_out_whole_classes():
    y = np.repeat(np.arange(10), 3)
    tr, va = split_classes(y, 0.2, random_state=0)
    assert len(set(y[va])) == 2 and not set(y[tr]) & set(y[va]) and (tr | va).all()
    assert split_classes(y, 0.0)[1].sum() == 0
    with pytest.raises(ValueError, match="validation classes"):
        split_classes(np.repeat(np.arange(3), 2), 0.5)


def test_dataset_labels_of_groups():
    from cvretrieval.datasets import RetrievalDataset

    imlist = [f"im{i}.jpg" for i in range(6)]
    gnd = [{"ok": [1]}, {"ok": [0]}, {"ok": [3, 4]}, {"ok": [2]}, {"ok": [2]}, {"ok": []}]
    ds = RetrievalDataset(Path("."), imlist, list(imlist), gnd)
    _, labels, _ = dataset_labels(ds)
    assert labels[0] == labels[1] and labels[2] == labels[3] == labels[4]
    assert len({labels[0], labels[2], labels[5]}) == 3


def _clusters(rng, centers, n_per, dim=32):
    """Gaussian classes separable in a few dimensions, buried under isotropic noise."""
    n_classes, signal = centers.shape
    y = np.repeat(np.arange(n_classes), n_per)
    X = rng.normal(size=(len(y), dim))
    X[:, :signal] = centers[y] + rng.normal(size=(len(y), signal)) * 0.3
    return X.astype(np.float32), y


def test_a_few_training_steps_raise_the_map_of_separable_clusters():
    centers = np.random.default_rng(5).normal(size=(6, 3)) * 2.0
    X, y = _clusters(np.random.default_rng(6), centers, 40)
    X_test, y_test = _clusters(np.random.default_rng(7), centers, 20)  # new noise
    before = naive_map(X_test, y_test)
    model, info = fit_head(X, y, head=(64, 16), residual=False, mix=1.0, epochs=8, batch_p=6,
                           batch_k=4, lr=3e-3, progress=False)
    after = naive_map(embed_numpy(model, X_test), y_test)
    losses = [h["loss"] for h in info["history"] if h["loss"] is not None]
    assert after > before + 0.15, (before, after)
    assert losses[-1] < losses[0]


def test_early_stopping_keeps_the_best_validation_epoch():
    centers = np.random.default_rng(8).normal(size=(8, 3)) * 2.0
    X, y = _clusters(np.random.default_rng(9), centers, 12)
    val = y >= 6
    model, info = fit_head(X[~val], y[~val], X_val=X[val], y_val=y[val], head=(32, 16),
                           epochs=4, patience=2, batch_p=4, batch_k=3, progress=False)
    scores = [h["val_mAP"] for h in info["history"]]
    assert info["history"][0]["epoch"] == 0 and info["history"][0]["loss"] is None
    assert info["val_mAP"] == max(scores)
    assert info["best_epoch"] == int(np.argmax(scores))
    # the mixing grid includes beta = 0 (the base alone): never below the base on validation
    assert info["val_mAP"] >= info["base_val_mAP"] - 1e-12
    got = class_retrieval_metrics(embed_numpy(model, X[val]), y[val])["mAP"]
    assert got == pytest.approx(info["val_mAP"], abs=1e-6)


def test_resolve_base(monkeypatch, tmp_path):
    from cvretrieval.embedders import HOGEmbedder

    monkeypatch.delenv("CVRET_MOBILENET", raising=False)
    with pytest.raises(ValueError, match="CVRET_MOBILENET"):
        resolve_base("mobilenet")
    assert isinstance(resolve_base("hog"), HOGEmbedder)
    emb = HOGEmbedder(size=32)
    assert resolve_base(emb) is emb
    with pytest.raises(ValueError, match="cannot be the base"):
        resolve_base(f"siamese:{tmp_path}")
    with pytest.raises(ValueError, match="does not take views"):
        resolve_base("hog", views="full,flip")
    with pytest.raises(ValueError, match="not as an instance"):
        resolve_base(emb, views="full,flip")


def test_missing_extras_are_named(monkeypatch, trained):
    from cvretrieval.embedders.siamese import SiameseEmbedder
    from cvretrieval.io import read_image
    from cvretrieval.siamese import require_torch

    data, model_dir, _ = trained
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingExtraError, match="siamese"):
        require_torch()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    emb = SiameseEmbedder(str(model_dir))
    with pytest.raises(MissingExtraError, match="deep"):
        emb.embed([read_image(next(data.glob("*/*.png")))])


def test_public_names_resolve():
    import cvretrieval.siamese as siamese

    for name in siamese.__all__:
        assert getattr(siamese, name) is not None


# --------------------------------------------------------------------------- end to end
def _write_classes(root: Path, n_classes=6, n_per=5) -> Path:
    import cv2
    from conftest import textured_image

    rng = np.random.default_rng(0)
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        proto = textured_image(100 + c, (64, 64))
        for i in range(n_per):
            M = cv2.getRotationMatrix2D((32, 32), rng.uniform(-8, 8), rng.uniform(0.92, 1.08))
            M[:, 2] += rng.uniform(-4, 4, 2)
            im = cv2.warpAffine(proto, M, (64, 64), borderValue=(255, 255, 255))
            im = np.clip(im + rng.normal(0, 10, im.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i}.png"), im[:, :, ::-1])
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Siamese model trained for 2 epochs on synthetic class folders with HOG as base."""
    pytest.importorskip("onnx", reason="exporting the head needs onnx (extra 'siamese')")
    pytest.importorskip("onnxruntime", reason="running the head needs onnxruntime (extra 'deep')")
    tmp = tmp_path_factory.mktemp("siamese")
    data = _write_classes(tmp / "data")
    result = train_siamese(data, base="hog", head=(64, 32), epochs=2, batch_p=3, batch_k=3,
                           mix=0.5, center=False, val_split=0.34, out_dir=tmp / "model", n_jobs=1,
                           progress=False)
    return data, Path(result["model_dir"]), result


def test_train_siamese_writes_a_model_folder(trained):
    data, model_dir, result = trained
    meta = json.loads((model_dir / "siamese.json").read_text())
    assert meta["format"] == "cvretrieval-siamese" and meta["base"]["name"] == "hog"
    assert (model_dir / "head.onnx").is_file() and (model_dir / "base" / "embedder.json").is_file()
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]
    assert result["n_train"] + result["n_val"] == 30 and len(result["classes_val"]) == 2
    assert not set(result["classes_val"]) & set(result["classes_train"])
    assert meta["dim"] == 8100 + 32 == result["dim"]  # [base, head] with beta = 0.5
    assert list((model_dir / "cache").glob("base-*.npy"))  # the base embeddings are cached


def test_siamese_embedder_runs_without_torch(trained):
    data, model_dir, _ = trained
    code = textwrap.dedent(f"""
        import sys, json
        import numpy as np
        import cvretrieval
        from cvretrieval.io import read_image
        emb = cvretrieval.make_embedder("siamese:" + {str(model_dir)!r})
        paths = [{str(data / "class0" / "0.png")!r}, {str(data / "class4" / "1.png")!r}]
        X = emb.embed([read_image(p) for p in paths])
        base = cvretrieval.make_embedder("hog").embed([read_image(p) for p in paths])
        print(json.dumps({{"torch": "torch" in sys.modules, "shape": list(X.shape),
                          "dtype": str(X.dtype), "norms": np.linalg.norm(X, axis=1).tolist(),
                          "base_part": np.abs(X[:, :8100] - np.sqrt(0.5) * base).max().item()}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["torch"] is False
    assert res["shape"] == [2, 8100 + 32] and res["dtype"] == "float32"
    np.testing.assert_allclose(res["norms"], 1.0, atol=1e-5)
    # beta = 0.5: the first 8100 values are the normalised HOG vector times sqrt(0.5)
    assert res["base_part"] < 1e-5


def test_bundle_with_siamese_round_trips_and_refuses_a_changed_head(trained, tmp_path,
                                                                     monkeypatch):
    from cvretrieval.embedders.siamese import SiameseEmbedder
    from cvretrieval.retriever import Retriever

    data, model_dir, _ = trained
    paths = sorted(data.glob("*/*.png"))
    emb = SiameseEmbedder(str(model_dir))
    # worker processes receive a pickled copy: the onnxruntime session is dropped and reopened
    from cvretrieval.io import read_image

    first = emb.embed([read_image(paths[0])])
    clone = pickle.loads(pickle.dumps(emb))
    assert clone._session is None
    np.testing.assert_allclose(clone.embed([read_image(paths[0])]), first, atol=1e-6)
    ret = Retriever(emb, n_jobs=1).build(paths, progress=False)
    hits = ret.search(paths[0], k=5)
    assert hits[0].path == str(paths[0].resolve())
    ret.save(tmp_path / "b.cvret")
    again = Retriever.load(tmp_path / "b.cvret", n_jobs=1)
    assert [h.path for h in again.search(paths[0], k=5)] == [h.path for h in hits]

    # a model given by a relative path still loads from another working directory
    monkeypatch.chdir(model_dir.parent)
    rel = Retriever(SiameseEmbedder(model_dir.name), n_jobs=1).build(paths[:4], progress=False)
    rel.save(tmp_path / "rel.cvret")
    monkeypatch.chdir(tmp_path)
    assert Retriever.load(tmp_path / "rel.cvret").embedder.dim == emb.dim

    # a model re-trained into the same folder: the bundle built with the old head is refused
    copy = tmp_path / "model"
    import shutil

    shutil.copytree(model_dir, copy)
    ret2 = Retriever(SiameseEmbedder(str(copy)), n_jobs=1).build(paths[:6], progress=False)
    ret2.save(tmp_path / "c.cvret")
    head = ProjectionHead(8100, (64, 32))
    export_onnx(SiameseModel(head, 0.5), copy / "head.onnx")
    meta = json.loads((copy / "siamese.json").read_text())
    from cvretrieval.embedders.siamese import file_sha256

    meta["head"]["sha256"] = file_sha256(copy / "head.onnx")
    (copy / "siamese.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="changed since"):
        Retriever.load(tmp_path / "c.cvret")
    # a head swapped without its siamese.json is refused when the model is opened
    export_onnx(SiameseModel(ProjectionHead(8100, (64, 32)), 0.5), copy / "head.onnx")
    swapped = SiameseEmbedder(str(copy))  # the folder is read on first use
    with pytest.raises(BundleError, match="replaced or corrupted"):
        swapped.embed([read_image(paths[0])])


def test_embed_base_reuses_the_cache(trained, tmp_path, monkeypatch):
    from cvretrieval.embedders import HOGEmbedder
    from cvretrieval.retriever import Retriever

    data, _, _ = trained
    paths = sorted(data.glob("*/*.png"))[:5]
    _, X1, rows1 = embed_base(HOGEmbedder(size=32), paths, cache_dir=tmp_path, n_jobs=1,
                              progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(Retriever, "build", boom)
    emb, X2, rows2 = embed_base(HOGEmbedder(size=32), paths, cache_dir=tmp_path, n_jobs=1)
    np.testing.assert_array_equal(X1, X2)
    assert rows1.tolist() == rows2.tolist() == [0, 1, 2, 3, 4] and emb.size == 32


def test_train_refuses_a_folder_that_is_not_a_model(tmp_path):
    from cvretrieval.errors import CVRetrievalError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    data = _write_classes(tmp_path / "data", n_classes=4, n_per=2)
    with pytest.raises(CVRetrievalError, match="not part of a Siamese model"):
        train_siamese(data, base="hog", out_dir=tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"


def test_lw_init_whitens_the_within_class_scatter():
    from cvretrieval.siamese.head import lw_init

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(6, 5))
    y = np.repeat(np.arange(6), 20)
    noise = rng.normal(size=(len(y), 5)) * np.array([3.0, 0.1, 0.1, 0.1, 0.1])  # nuisance axis
    X = centres[y] + noise
    W, mean = lw_init(X, y, 5, shrinkage=0.0)
    D = np.concatenate([X[y == c] - X[y == c].mean(0) for c in range(6)])
    Sw = D.T @ D / len(D)
    M = W.astype(np.float64) @ Sw @ W.T.astype(np.float64)
    np.testing.assert_allclose(M / M[0, 0], np.eye(5), atol=1e-4)  # whitened, up to a scale
    np.testing.assert_allclose(mean, X.mean(0), atol=1e-6)
    # the nuisance axis (x0) is damped relative to PCA, which it dominates
    from cvretrieval.siamese.head import pca_init

    W_pca, _ = pca_init(X, 1)
    assert abs(W_pca[0, 0]) > 0.9 and abs(W[0, 0]) / np.abs(W[0]).max() < 0.2
    with pytest.raises(ValueError, match="2 or more"):
        lw_init(X[:3], np.arange(3), 2)


def test_fit_head_lw_init_starts_at_the_learned_whitening():
    from cvretrieval.siamese.head import lw_init

    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(6), 5)
    X = (rng.normal(size=(6, 12))[y] + 0.5 * rng.normal(size=(30, 12))).astype(np.float32)
    model, info = fit_head(X, y, head=(16, 8), init="lw", shrinkage=1.0, epochs=0, mix=1.0,
                           center=False, progress=False)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    W, m = lw_init(Xn, y, 8)
    want = (Xn - m) @ W.T
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(embed_numpy(model, X), want, atol=1e-4)
    with pytest.raises(ValueError, match="init must be"):
        fit_head(X, y, init="ica", progress=False)
