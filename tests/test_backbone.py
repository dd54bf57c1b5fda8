"""End-to-end CNN fine-tuning (``train_siamese(backbone=...)``): the ResNet, GeM, weights
loading, training and the exported model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="CNN fine-tuning needs PyTorch (extra 'siamese')")

from cvretrieval.errors import ModelError  # noqa: E402
from cvretrieval.siamese.backbone import (  # noqa: E402
    BackboneNet,
    GeM,
    ResNetTrunk,
    embed_images,
    fit_backbone,
    load_weights,
)


@pytest.mark.parametrize(
    "arch,params_with_fc,fc_in",
    # torchvision's published parameter counts (classifier of 1000 classes included)
    [("resnet18", 11_689_512, 512), ("resnet50", 25_557_032, 2048)],
)
def test_trunk_has_the_published_size_and_torchvision_names(arch, params_with_fc, fc_in):
    trunk = ResNetTrunk(arch)
    n = sum(p.numel() for p in trunk.parameters())
    assert n == params_with_fc - (fc_in * 1000 + 1000)
    assert trunk.out_channels == fc_in
    keys = set(trunk.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"} <= keys
    if arch == "resnet50":
        assert "layer4.2.bn3.weight" in keys and "layer1.0.downsample.1.bias" in keys
        x = trunk(torch.zeros(1, 3, 64, 64))
        assert tuple(x.shape) == (1, 2048, 2, 2)  # stride 32


def test_gem_is_average_pooling_at_p1_and_tends_to_max():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    def gem(p):
        return float(GeM(p)(x).detach())

    assert gem(1.0) == pytest.approx(3.0)
    assert gem(3.0) == pytest.approx(((1 + 8 + 27 + 216) / 4) ** (1 / 3), rel=1e-5)
    big = ((1 + 2.0**20 + 3.0**20 + 6.0**20) / 4) ** (1 / 20)
    assert gem(20.0) == pytest.approx(big, rel=1e-4) and 5.5 < big < 6.0


def _torchvision_style_file(tmp_path, arch="resnet18", prefix="module."):
    src = ResNetTrunk(arch)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    state[prefix + "fc.weight"] = torch.zeros(1000, src.out_channels)
    state[prefix + "fc.bias"] = torch.zeros(1000)
    path = tmp_path / f"{arch}.pth"
    torch.save({"state_dict": state}, path)
    return src, path


def test_load_weights_accepts_a_torchvision_state_dict_and_ignores_fc(tmp_path):
    src, path = _torchvision_style_file(tmp_path)
    dst = ResNetTrunk("resnet18")
    info = load_weights(dst, path)
    assert info["ignored"] == 2
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_load_weights_refuses_wrong_files(tmp_path):
    _, path18 = _torchvision_style_file(tmp_path, "resnet18", prefix="")
    with pytest.raises(ModelError, match="not a resnet50 state dict.*missing"):
        load_weights(ResNetTrunk("resnet50"), path18)
    with pytest.raises(ModelError, match="does not exist"):
        load_weights(ResNetTrunk("resnet18"), tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        load_weights(ResNetTrunk("resnet18"), junk)


def test_frozen_stages_get_no_gradient_and_batchnorm_statistics_stay():
    net = BackboneNet("resnet18", freeze=3)
    net.train()
    before = net.trunk.layer3[0].bn1.running_mean.clone()
    out = net(torch.randn(4, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is None for p in net.trunk.layer2.parameters())
    assert any(p.grad is not None for p in net.trunk.layer4.parameters())
    assert torch.equal(before, net.trunk.layer3[0].bn1.running_mean)
    np.testing.assert_allclose(out.detach().norm(dim=1).numpy(), 1.0, rtol=1e-5)


def _oriented_noise(n_classes=4, n_per=6, size=64, seed=0):
    """Stripes of one orientation per class under heavy noise: a random ResNet ranks them
    poorly (mAP ~0.3), a few epochs of fine-tuning learn the orientation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out, y = [], []
    for c in range(n_classes):
        angle = np.pi * c / n_classes
        for _ in range(n_per):
            coord = np.cos(angle) * xx + np.sin(angle) * yy
            img = 127 + 60 * np.sin(2 * np.pi * coord / rng.uniform(6, 10) + rng.uniform(0, 6.28))
            img = img + rng.normal(0, 60, img.shape)
            out.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
            y.append(c)
    return np.stack(out), np.asarray(y)


def test_fine_tuning_raises_the_map_and_keeps_the_best_epoch():
    images, y = _oriented_noise()
    model, info = fit_backbone(
        images, y, images_val=images, y_val=y, arch="resnet18", freeze=2, epochs=4,
        batch_p=4, batch_k=3, lr=3e-4, patience=None, random_state=0, progress=False,
    )
    maps = [h["val_mAP"] for h in info["history"]]
    assert info["base_val_mAP"] == maps[0] < 0.5
    assert info["val_mAP"] == max(maps) and info["best_epoch"] == maps.index(max(maps)) > 0
    assert info["val_mAP"] > info["base_val_mAP"] + 0.2
    # the returned model is the best epoch's: embedding again reproduces its score
    from cvretrieval.siamese.train import class_retrieval_metrics

    again = class_retrieval_metrics(embed_images(model, images), y)["mAP"]
    assert again == pytest.approx(info["val_mAP"], abs=1e-6)


def _write_stripes(root: Path, n_classes=4, n_per=5, size=72) -> Path:
    import cv2

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        angle = np.pi * c / n_classes
        for i in range(n_per):
            coord = np.cos(angle) * xx + np.sin(angle) * yy
            img = 127 + 100 * np.sin(2 * np.pi * coord / 8 + rng.uniform(0, 6.28))
            img = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{i}.png"), img)
    return root


def test_train_siamese_with_a_backbone_writes_a_model_that_runs_without_torch(tmp_path):
    pytest.importorskip("onnx", reason="exporting needs onnx (extra 'siamese')")
    pytest.importorskip("onnxruntime", reason="running the model needs onnxruntime (extra 'deep')")
    from cvretrieval.embedders import make_embedder
    from cvretrieval.io import read_image
    from cvretrieval.siamese.train import train_siamese

    data = _write_stripes(tmp_path / "data")
    _, weights = _torchvision_style_file(tmp_path, "resnet18")
    result = train_siamese(
        data, backbone="resnet18", weights=weights, input_size=64, freeze=3, dim=128,
        epochs=2, batch_p=2, batch_k=3, val_split=0.5, out_dir=tmp_path / "model",
        n_jobs=1, progress=False,
    )
    model_dir = Path(result["model_dir"])
    meta = json.loads((model_dir / "siamese.json").read_text())
    assert meta["backbone"]["arch"] == "resnet18" and meta["dim"] == 128
    assert meta["backbone"]["weights"]["sha256"] and len(meta["classes_val"]) == 2
    assert {"backbone.onnx", "head.onnx", "siamese.json"} <= {p.name for p in model_dir.iterdir()}
    assert [h["epoch"] for h in result["history"]][:1] == [0]

    # the same network in PyTorch, rebuilt from the exported pieces, gives the same vectors
    paths = sorted(data.rglob("*.png"))[:4]
    emb = make_embedder(f"siamese:{model_dir}")
    X = emb.encode([emb.reduce(emb.extract(read_image(p))) for p in paths])
    assert X.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)

    import onnxruntime as ort

    from cvretrieval.embedders.deep import prepare_batch

    batch = prepare_batch([read_image(p) for p in paths], 64)
    feats = ort.InferenceSession(str(model_dir / "backbone.onnx")).run(None, {"image": batch})[0]
    proj = ort.InferenceSession(str(model_dir / "head.onnx"))
    ref = proj.run(None, {proj.get_inputs()[0].name: feats})[0]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(X, ref, atol=1e-5)

    # the folder can move: its base finds backbone.onnx inside it
    moved = tmp_path / "elsewhere" / "model"
    shutil.move(str(model_dir), moved)
    emb2 = make_embedder(f"siamese:{moved}")
    X2 = emb2.encode([emb2.reduce(emb2.extract(read_image(p))) for p in paths])
    np.testing.assert_allclose(X2, X, atol=1e-6)


def test_unknown_backbone_is_refused_before_any_work(tmp_path):
    from cvretrieval.siamese.train import train_siamese

    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        train_siamese(tmp_path, backbone="vgg16", out_dir=tmp_path / "m")
