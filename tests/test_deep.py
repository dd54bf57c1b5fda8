"""Deep-model embedders: pooling, pre-processing, the ONNX/TFLite/TorchScript adapters.

Tiny models are written by the tests themselves (onnx.helper, torch.jit) so the expected
vectors can be computed independently in numpy; the real quantised MobileNet (TFLite) is
scored on the UKBench sample.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys

import numpy as np
import pytest

from cvretrieval.embedders import load_embedder, make_embedder
from cvretrieval.embedders.deep import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelError,
    ONNXEmbedder,
    prepare_batch,
    resize_image,
)
from cvretrieval.embedders.pooling import dequantize, gap, gem, mac, pool
from cvretrieval.embedders.runtimes import open_runtime as _open_runtime
from cvretrieval.errors import BundleError, MissingExtraError

RNG = np.random.default_rng(7)
# a fixed 1x1 convolution: 4 output channels from RGB, then ReLU
CONV_W = RNG.normal(size=(4, 3)).astype(np.float32)
CONV_B = np.array([0.1, -0.2, 0.3, 0.0], np.float32)


# ----------------------------------------------------------------------------- helpers
def write_conv_onnx(path, weight=CONV_W, bias=CONV_B, *, size=8, batch="N", hw_dynamic=False,
                    uint8_input=False, vector_output=False):
    """A Conv1x1 + ReLU ONNX graph (feature map output), optionally pooled to a vector."""
    onnx = pytest.importorskip("onnx", reason="the 'deep' extra (onnx) is not installed")
    from onnx import TensorProto, helper, numpy_helper

    h = w = "H" if hw_dynamic else size
    in_type = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
    nodes, inits = [], []
    src = "image"
    if uint8_input:
        nodes.append(helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT))
        src = "imagef"
    if weight is not None:
        inits += [
            numpy_helper.from_array(weight.reshape(len(weight), 3, 1, 1).astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ]
        nodes += [
            helper.make_node("Conv", [src, "W", "B"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["fmap"]),
        ]
        src = "fmap"
    out = src
    n_out = 3 if weight is None else len(weight)
    if vector_output:
        nodes += [helper.make_node("GlobalAveragePool", [src], ["gp"]),
                  helper.make_node("Flatten", ["gp"], ["vec"])]
        out = "vec"
        out_shape = [batch, n_out]
    else:
        out_shape = [batch, n_out, None, None]
    if out == "image":  # identity graph
        nodes.append(helper.make_node("Identity", ["image"], ["same"]))
        out = "same"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", in_type, [batch, 3, h, w])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def ort():
    _open_runtime.cache_clear()
    return pytest.importorskip("onnxruntime", reason="the 'deep' extra (onnxruntime) is missing")


def numpy_conv_fmap(img, weight=CONV_W, bias=CONV_B):
    """Independent forward pass: ImageNet-normalised RGB -> (C, H, W) ReLU feature map."""
    x = (img.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    y = np.einsum("ck,hwk->chw", weight.astype(np.float64), x) + bias[:, None, None]
    return np.maximum(y, 0.0)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def rand_image(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- pure functions
def test_gem_interpolates_between_average_and_max():
    x = np.random.default_rng(0).uniform(0.1, 5.0, size=(3, 6, 4, 5))
    np.testing.assert_allclose(gem(x, p=1.0), x.mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(gem(x, p=3.0), np.mean(x**3, axis=(2, 3)) ** (1 / 3), rtol=1e-5)
    # p -> inf tends to the max: within 2 % at p = 200 for 20 positions
    np.testing.assert_allclose(gem(x, p=200.0), x.max(axis=(2, 3)), rtol=0.02)
    assert np.all(gem(x, p=3.0) <= x.max(axis=(2, 3)) + 1e-6)
    np.testing.assert_allclose(gap(x), x.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(mac(x), x.max(axis=(2, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="p > 0"):
        gem(x, p=0)


def test_pool_reads_the_layout_and_shapes():
    x = np.random.default_rng(1).uniform(size=(2, 5, 3, 4))  # NCHW
    nhwc = x.transpose(0, 2, 3, 1)
    for method in ("gap", "mac", "gem"):
        np.testing.assert_allclose(
            pool(x, method, layout="nchw"), pool(nhwc, method, layout="nhwc"), rtol=1e-6
        )
    np.testing.assert_allclose(pool(x, "gap"), x.mean(axis=(2, 3)), rtol=1e-6)
    vec = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(pool(vec, "gem"), vec)  # vectors are used as they are
    tokens = np.random.default_rng(2).uniform(size=(2, 7, 3))  # (N, L, D)
    np.testing.assert_allclose(pool(tokens, "mac"), tokens.max(axis=1), rtol=1e-6)
    assert pool(x, "none").shape == (2, 60)
    with pytest.raises(ValueError, match="cannot pool a 5-d output"):
        pool(np.zeros((1, 2, 3, 4, 5)), "gap")
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(x, "sum")


def test_dequantize_known_answers():
    q = np.array([0, 10, 255], np.uint8)
    np.testing.assert_allclose(dequantize(q, 0.1, 10), [-1.0, 0.0, 24.5], rtol=1e-6)
    per_channel = np.array([[1, 1], [3, 5]], np.int8)
    np.testing.assert_allclose(dequantize(per_channel, [2.0, 0.5], [1, -1], axis=-1),
                               [[0.0, 1.0], [4.0, 3.0]])


def test_resize_modes_on_block_images():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = (255, 0, 0)  # red left quarter
    img[:, 150:] = (0, 0, 255)  # blue right quarter
    squashed = resize_image(img, 50, "squash")
    assert squashed.shape == (50, 50, 3)
    assert tuple(squashed[25, 5]) == (255, 0, 0) and tuple(squashed[25, 45]) == (0, 0, 255)
    # short side fits, centre crop: the coloured quarters are cut away
    cropped = resize_image(img, 50, "center-crop")
    assert cropped.shape == (50, 50, 3) and cropped.max() == 0
    # whole image fits: 25 rows of content between 12 + 13 rows of padding
    boxed = resize_image(img, (50, 50), "letterbox", pad_value=7)
    assert boxed.shape == (50, 50, 3)
    assert (boxed[:12] == 7).all() and (boxed[37:] == 7).all()
    assert tuple(boxed[24, 2]) == (255, 0, 0) and tuple(boxed[24, 47]) == (0, 0, 255)
    assert resize_image(img, (100, 200)) is img
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize_image(img, 50, "stretch")


def test_prepare_batch_orders_normalises_and_quantises():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 51, 0
    x = prepare_batch([img], 2, mean=None, std=None)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 0.2, 0.0], rtol=1e-6)
    bgr = prepare_batch([img], 2, channels="bgr", layout="nhwc", mean=0.0, std=1.0)
    np.testing.assert_allclose(bgr[0, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    imagenet = prepare_batch([img], 2)
    expected = (np.array([1.0, 0.2, 0.0]) - IMAGENET_MEAN) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(imagenet[0, :, 1, 1], expected, rtol=1e-5)
    raw = prepare_batch([img], 2, layout="nhwc", mean=None, std=None, dtype=np.uint8)
    np.testing.assert_array_equal(raw[0, 0, 0], [255, 51, 0])
    signed = prepare_batch([img], 2, layout="nhwc", mean=None, std=None, dtype=np.int8)
    np.testing.assert_array_equal(signed[0, 0, 0], [127, -77, -128])
    # normalised to [-1, 1], then quantised with scale 1/128 and zero point 128
    quant = prepare_batch([img], 2, layout="nhwc", mean=0.5, std=0.5, dtype=np.uint8,
                          quantization=(1 / 128, 128))
    np.testing.assert_array_equal(quant[0, 0, 0], [255, np.round(-0.6 * 128 + 128), 0])
    grey = prepare_batch([img], 2, layout="nhwc", mean=None, std=None, dtype=np.uint8, n_channels=1)
    assert grey.shape == (1, 2, 2, 1)
    assert abs(int(grey[0, 0, 0, 0]) - round(0.299 * 255 + 0.587 * 51)) <= 1


# ----------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("pooling,p", [("gap", 3.0), ("mac", 3.0), ("gem", 3.0), ("gem", 1.0)])
def test_onnx_feature_map_known_answer(tmp_path, ort, pooling, p):
    path = write_conv_onnx(tmp_path / "conv.onnx")
    emb = make_embedder("onnx:" + path, pooling=pooling, p=p)
    assert emb.dim == 4 and emb.get_params()["model_path"] == path
    images = [rand_image(s) for s in range(3)]
    X = emb.embed(images)
    assert X.shape == (3, 4) and X.dtype == np.float32
    for img, row in zip(images, X, strict=True):
        fmap = numpy_conv_fmap(img)
        if pooling == "gap":
            v = fmap.mean(axis=(1, 2))
        elif pooling == "mac":
            v = fmap.max(axis=(1, 2))
        else:
            v = np.mean(np.maximum(fmap, 1e-6) ** p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(row, unit(v), atol=1e-5)


def test_onnx_gem_p1_is_gap_and_large_p_approaches_mac(tmp_path, ort):
    path = write_conv_onnx(tmp_path / "conv.onnx", bias=np.array([2.0, 2.0, 2.0, 2.0], np.float32))
    images = [rand_image(s) for s in range(4)]
    raw = {
        name: np.stack(make_embedder("onnx:" + path, pooling=pool_, p=p).extract_batch(images))
        for name, pool_, p in [("gap", "gap", 3.0), ("gem1", "gem", 1.0), ("mac", "mac", 3.0),
                               ("gem100", "gem", 100.0)]
    }
    np.testing.assert_allclose(raw["gem1"], raw["gap"], rtol=1e-5)
    np.testing.assert_allclose(raw["gem100"], raw["mac"], rtol=0.05)
    assert not np.allclose(raw["gap"], raw["mac"], rtol=0.05)  # so the check above means something


def test_onnx_batched_equals_one_by_one(tmp_path, ort):
    sizes = [(8, 8), (20, 12), (9, 30), (8, 8), (64, 64)]
    images = [rand_image(s, h, w) for s, (h, w) in enumerate(sizes)]
    for kw in ({}, {"batch": 1}):  # dynamic batch, then a model fixed at batch size 1
        path = write_conv_onnx(tmp_path / f"conv{len(kw)}.onnx", **kw)
        emb = make_embedder("onnx:" + path, batch_size=3, pooling="gem")
        batched = emb.embed(images)
        single = np.concatenate([emb.embed([im]) for im in images])
        np.testing.assert_allclose(batched, single, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)


def test_uint8_model_takes_raw_pixels_and_vector_outputs_pass_through(tmp_path, ort):
    path = write_conv_onnx(tmp_path / "mean.onnx", weight=None, uint8_input=True,
                           vector_output=True)
    emb = make_embedder("onnx:" + path, pooling="mac")  # pooling does not apply to (N, D) outputs
    img = rand_image(3)
    channel_means = img.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(emb.extract(img), channel_means, rtol=1e-5)
    np.testing.assert_allclose(emb.embed([img])[0], unit(channel_means), rtol=1e-5)


def test_input_size_from_the_model_or_the_options(tmp_path, ort):
    fixed = write_conv_onnx(tmp_path / "fixed.onnx", size=8)
    with pytest.raises(ModelError, match="input_size 16 disagrees.*fixed at 8x8"):
        make_embedder("onnx:" + fixed, input_size=16)
    assert make_embedder("onnx:" + fixed, input_size=(8, 8)).dim == 4
    dynamic = write_conv_onnx(tmp_path / "dynamic.onnx", hw_dynamic=True)
    with pytest.raises(ModelError, match="dynamic input size.*pass input_size"):
        make_embedder("onnx:" + dynamic)
    emb = make_embedder("onnx:" + dynamic, input_size=8)
    big = np.repeat(np.repeat(rand_image(5), 4, axis=0), 4, axis=1)  # 32x32, blocks of 4
    # area down-scaling of 4x4 blocks gives back the 8x8 image exactly
    expected = unit(numpy_conv_fmap(rand_image(5)).mean(axis=(1, 2)))
    np.testing.assert_allclose(emb.embed([big])[0], expected, atol=1e-5)
    with pytest.raises(ModelError, match="channels, not an RGB"):
        make_embedder("onnx:" + fixed, layout="nhwc")
    with pytest.raises(ValueError, match="resize='stretch' is not one of"):
        make_embedder("onnx:" + fixed, resize="stretch")


def test_missing_and_non_model_files(tmp_path, ort):
    with pytest.raises(ModelError, match="does not exist"):
        make_embedder("onnx:" + str(tmp_path / "nope.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a network")
    with pytest.raises(ModelError, match="not a model onnxruntime can load"):
        make_embedder(f"onnx:{junk}")
    with pytest.raises(ModelError, match="not a file"):
        make_embedder(f"onnx:{tmp_path}")
    pytest.importorskip("ai_edge_litert", reason="the 'deep' extra (ai-edge-litert) is missing")
    with pytest.raises(ModelError, match="not a model the TFLite interpreter can load"):
        make_embedder(f"tflite:{junk}")


def test_save_load_round_trip_and_refusal_of_a_changed_model(tmp_path, ort):
    model = tmp_path / "conv.onnx"
    write_conv_onnx(model)
    emb = make_embedder(f"onnx:{model}", pooling="gem", p=2.0)
    images = [rand_image(s) for s in range(3)]
    X = emb.embed(images)
    emb.save(tmp_path / "emb")
    record = json.loads((tmp_path / "emb" / "model.json").read_text())
    assert record["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert record["model_path"] == str(model)
    meta = json.loads((tmp_path / "emb" / "embedder.json").read_text())
    assert meta["name"] == "onnx" and meta["dim"] == 4 and meta["params"]["p"] == 2.0
    again = load_embedder(tmp_path / "emb")
    assert isinstance(again, ONNXEmbedder) and again.pooling == "gem"
    np.testing.assert_allclose(again.embed(images), X, atol=1e-6)
    # another network at the same path is refused
    write_conv_onnx(model, weight=CONV_W[::-1].copy())
    with pytest.raises(BundleError, match="not the model this embedder was built with.*restore"):
        load_embedder(tmp_path / "emb")
    model.unlink()
    with pytest.raises(BundleError, match="model file .* is missing.*put that file back"):
        load_embedder(tmp_path / "emb")


def test_pickled_embedder_carries_no_session(tmp_path, ort):
    emb = make_embedder("onnx:" + write_conv_onnx(tmp_path / "conv.onnx"))
    X = emb.embed([rand_image(1)])
    assert emb._runtime is not None
    clone = pickle.loads(pickle.dumps(emb))
    assert clone._runtime is None and clone.model_sha256_ == emb.model_sha256_
    np.testing.assert_allclose(clone.embed([rand_image(1)]), X, atol=1e-6)


def test_missing_runtime_names_the_extra(tmp_path, ort, monkeypatch):
    from cvretrieval.embedders import available_embedders

    path = write_conv_onnx(tmp_path / "conv.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    _open_runtime.cache_clear()
    with pytest.raises(MissingExtraError, match=r"'deep' extra: pip install 'cvretrieval\[deep\]'"):
        make_embedder("onnx:" + path)
    assert available_embedders()["onnx"].startswith("unavailable: needs the 'deep' extra")


# ----------------------------------------------------------------------------- TorchScript
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_known_answer(tmp_path):
    torch = pytest.importorskip("torch", reason="the 'siamese' extra (torch) is not installed")
    _open_runtime.cache_clear()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(CONV_W.reshape(4, 3, 1, 1)))
                self.conv.bias.copy_(torch.from_numpy(CONV_B))

        def forward(self, x):
            return torch.relu(self.conv(x))

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net()), str(path))
    emb = make_embedder(f"torchscript:{path}", input_size=8, pooling="mac")
    images = [rand_image(s) for s in range(3)]
    X = emb.embed(images)
    for img, row in zip(images, X, strict=True):
        np.testing.assert_allclose(row, unit(numpy_conv_fmap(img).max(axis=(1, 2))), atol=1e-5)
    np.testing.assert_allclose(np.concatenate([emb.embed([im]) for im in images]), X, atol=1e-6)
    assert make_embedder(f"torchscript:{path}").get_params()["input_size"] is None  # 224 by default
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    with pytest.raises(ModelError, match="not a TorchScript model"):
        make_embedder(f"torchscript:{junk}")


# ----------------------------------------------------------------------------- TFLite (real model)
@pytest.fixture
def litert():
    _open_runtime.cache_clear()
    return pytest.importorskip("ai_edge_litert.interpreter",
                               reason="the 'deep' extra (ai-edge-litert) is not installed")


def test_tflite_dequantises_the_uint8_output(coral_tflite, litert):
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    it = litert.Interpreter(model_path=str(coral_tflite))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], img[None])  # quantised model: raw uint8 pixels
    it.invoke()
    q = it.get_tensor(out["index"]).reshape(-1)
    scale, zero = out["quantization"]
    assert q.dtype == np.uint8 and scale > 0
    emb = make_embedder(f"tflite:{coral_tflite}")
    assert emb.dim == 1024
    np.testing.assert_allclose(emb.extract(img), scale * (q.astype(np.float64) - zero), rtol=1e-6)


def test_tflite_batched_equals_one_by_one(coral_tflite, litert):
    images = [np.random.default_rng(s).integers(0, 256, (120 + 10 * s, 160, 3), dtype=np.uint8)
              for s in range(5)]
    emb = make_embedder(f"tflite:{coral_tflite}", batch_size=3, resize="center-crop")
    batched = emb.embed(images)
    single = np.concatenate([emb.embed([im]) for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    with pytest.raises(ModelError, match="disagrees"):
        make_embedder(f"tflite:{coral_tflite}", input_size=160)


def test_tflite_mobilenet_on_ukbench(coral_tflite, ukbench_dir, litert, tmp_path):
    import cvretrieval
    from cvretrieval.datasets import load_dataset

    dataset = load_dataset(ukbench_dir)
    ret = cvretrieval.Retriever("tflite:" + str(coral_tflite), n_jobs=1)
    ret.build(dataset.image_paths())
    metrics = cvretrieval.evaluate(ret, dataset, progress=False)["metrics"]
    # chance is about 1.2 on 56 images; the model scores 4.0 (every group found)
    assert metrics["ns_score"] > 3.5, metrics
    assert metrics["mAP"] > 0.9, metrics
    query = dataset.image_paths()[5]
    ret.save(tmp_path / "bundle")
    loaded = cvretrieval.Retriever.load(tmp_path / "bundle", n_jobs=1)
    assert [h.path for h in loaded.search(query, k=4)] == [h.path for h in ret.search(query, k=4)]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    sha = hashlib.sha256(coral_tflite.read_bytes()).hexdigest()
    assert manifest["embedder"]["model"]["sha256"] == sha


# ----------------------------------------------------------------------------- test-time views
def test_parse_views_and_image_views_known_answers():
    from cvretrieval.embedders.preprocess import image_views, parse_views

    assert parse_views("full, flip,crop0.6,crop0.6-flip") == (
        (1.0, False), (1.0, True), (0.6, False), (0.6, True))
    for bad in ("crop1", "crop0", "cropx", "mirror", ""):
        with pytest.raises(ValueError):
            parse_views(bad)
    img = np.arange(10 * 10 * 3).reshape(10, 10, 3)
    full, flip, crop = image_views(img, parse_views("full,flip,crop0.6"))
    np.testing.assert_array_equal(full, img)
    np.testing.assert_array_equal(flip[:, 0], img[:, 9])
    np.testing.assert_array_equal(crop, img[2:8, 2:8])  # 6 of 10 pixels, centred


def test_onnx_views_average_the_unit_vectors_of_the_views(tmp_path, ort):
    path = write_conv_onnx(tmp_path / "conv.onnx")
    single = make_embedder("onnx:" + path, pooling="mac")
    multi = make_embedder("onnx:" + path, pooling="mac", views="full,flip,crop0.6")
    images = [rand_image(s, 10, 10) for s in range(3)]
    X = multi.embed(images)
    for img, row in zip(images, X, strict=True):
        parts = single.embed([img, img[:, ::-1].copy(), img[2:8, 2:8].copy()])
        np.testing.assert_allclose(row, unit(parts.mean(axis=0)), atol=1e-5)
    # MAC of a mirrored image is the same; of a crop it differs: the views mean something
    assert not np.allclose(X, single.embed(images), atol=1e-3)
    one = make_embedder("onnx:" + path, pooling="mac", views="full")
    assert one.embed(images[:1]).tolist() == single.embed(images[:1]).tolist()
    multi.save(tmp_path / "saved")
    np.testing.assert_allclose(load_embedder(tmp_path / "saved").embed(images), X, atol=1e-6)
    with pytest.raises(ValueError, match="unknown view"):
        make_embedder("onnx:" + path, views="full,crop2")
