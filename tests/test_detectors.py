"""The local-feature detector protocol: OpenCV detectors, ONNX models, entry-point plug-ins,
and any of them feeding BoVW, VLAD and spatial verification end to end."""

from __future__ import annotations

import json
import pickle
import sys
import types
from importlib.metadata import EntryPoint

import cv2
import numpy as np
import pytest
from conftest import textured_image

from cvretrieval.features import detectors
from cvretrieval.features.detectors import (
    LocalFeatureDetector,
    OpenCVDetector,
    detector_key,
    detector_names,
    make_detector,
    normalize_detector,
)
from cvretrieval.features.local import DETECTORS, LocalFeatureExtractor, LocalFeatures

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cvretrieval.features.onnx_example import build_harris_onnx  # noqa: E402


@pytest.fixture(scope="module")
def harris(tmp_path_factory):
    return build_harris_onnx(tmp_path_factory.mktemp("m") / "harris.onnx")


def _delf_like(path, locations, attention, descriptors, metadata=None):
    """A DELF-shaped model: HWC float image (+ a threshold input) -> locations (N, 2) in
    ``y, x`` order, attention (N,), descriptors (N, D); constant outputs."""
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_c"))
        for name, arr in (
            ("locations", np.asarray(locations, np.float32)),
            ("attention", np.asarray(attention, np.float32)),
            ("descriptors", np.asarray(descriptors)),
        )
    ]
    dtype = TensorProto.UINT8 if np.asarray(descriptors).dtype == np.uint8 else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "delf_like",
        [
            helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["H", "W", 3]),
            helper.make_tensor_value_info("score_threshold", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("locations", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("descriptors", dtype, ["N", None]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {"cvretrieval.detector": json.dumps(metadata)})
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_opencv_detectors_satisfy_the_protocol(name):
    det = make_detector(name, n_features=50)
    assert isinstance(det, LocalFeatureDetector) and isinstance(det, OpenCVDetector)
    assert (det.descriptor_dim, det.binary) == DETECTORS[name]
    f = det.detect(textured_image(1))
    assert 0 < len(f) <= 50 and f.scores.shape == (len(f),) and f.scores.dtype == np.float32
    assert (f.scores > 0).all()  # OpenCV responses, not the "unknown" default of ones
    assert f.descriptors.shape == (len(f), det.descriptor_dim)


def test_image_below_min_size_gives_empty_features():
    det = make_detector("sift")
    f = det.detect(np.zeros((det.min_image_size - 1, 200, 3), np.uint8))
    assert len(f) == 0 and f.descriptors.shape == (0, 128)


def test_unknown_detector_is_a_one_line_error_listing_choices():
    with pytest.raises(ValueError, match="sift, rootsift, orb, akaze, brisk.*onnx:PATH") as e:
        normalize_detector("surf")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no ONNX model file"):
        normalize_detector("onnx:/nonexistent/model.onnx")


def test_scores_default_to_ones_and_old_feature_files_still_load(tmp_path):
    from cvretrieval.features.local import load_features, save_features

    f = LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((3, 4), np.float32),
                      np.zeros(3, np.float32), np.zeros(3, np.float32), (10, 10))
    np.testing.assert_array_equal(f.scores, np.ones(3, np.float32))
    g = LocalFeatures(f.keypoints, f.descriptors, f.scales, f.angles, (10, 10),
                      scores=np.array([3, 2, 1], np.float32))
    save_features(tmp_path / "a.npz", g)
    np.testing.assert_array_equal(load_features(tmp_path / "a.npz").scores, [3, 2, 1])
    np.savez(tmp_path / "old.npz", keypoints=f.keypoints, descriptors=f.descriptors,
             scales=f.scales, angles=f.angles, image_shape=np.array([10, 10]))
    assert len(load_features(tmp_path / "old.npz").scores) == 3


# --------------------------------------------------------------------------- ONNX


def test_onnx_detector_finds_corners_of_a_known_image(harris):
    img = np.zeros((120, 160, 3), np.uint8)
    cv2.rectangle(img, (40, 30), (100, 80), (255, 255, 255), -1)  # 4 corners, nothing else
    f = make_detector(f"onnx:{harris}", n_features=100).detect(img)
    corners = np.array([[40, 30], [100, 30], [40, 80], [100, 80]], np.float32)
    d = np.linalg.norm(f.keypoints[:, None] - corners[None], axis=2)
    assert (d.min(axis=0) <= 3).all(), f.keypoints  # every corner found
    assert len(f) <= 8  # and little else
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-3)


def test_onnx_detector_keeps_the_strongest_n_features_and_pickles(harris):
    img = textured_image(2)
    full = make_detector(f"onnx:{harris}", n_features=10_000).detect(img)
    top = make_detector(f"onnx:{harris}", n_features=20)
    few = top.detect(img)
    assert len(few) == 20 < len(full)
    assert few.scores.min() >= np.sort(full.scores)[-20] - 1e-9
    back = pickle.loads(pickle.dumps(top))  # the session is dropped and rebuilt
    np.testing.assert_array_equal(back.detect(img).keypoints, few.keypoints)


def test_onnx_input_size_rescales_key_points_to_the_image(harris):
    img = np.zeros((240, 320, 3), np.uint8)
    cv2.rectangle(img, (80, 60), (200, 160), (255, 255, 255), -1)
    f = make_detector(f"onnx:{harris}", options={"input_size": 160}).detect(img)
    assert f.image_shape == (240, 320)
    corners = np.array([[80, 60], [200, 60], [80, 160], [200, 160]], np.float32)
    d = np.linalg.norm(f.keypoints[:, None] - corners[None], axis=2)
    assert (d.min(axis=0) <= 5).all(), f.keypoints  # in the 320 x 240 frame, not 160 x 120


def test_delf_style_outputs_yx_order_unit_coords_and_extra_inputs(tmp_path):
    path = _delf_like(tmp_path / "delf.onnx", [[0.5, 0.25], [1.0, 0.0], [0.0, 1.0]],
                      [0.9, 0.1, 0.5], np.eye(3, 4, dtype=np.float32))
    det = make_detector(f"onnx:{path}", options={
        "keypoint_order": "yx", "keypoint_coords": "unit", "normalize": "none",
        "size_multiple": 1, "extra_inputs": {"score_threshold": 100.0}, "score_threshold": 0.2})
    assert det.layout == "hwc" and not det.grayscale and det.descriptor_dim == 4
    f = det.detect(np.zeros((101, 201, 3), np.uint8))
    # attention 0.1 is dropped; the rest by decreasing score; (y, x) in [0, 1] -> pixels
    np.testing.assert_allclose(f.keypoints, [[50, 50], [200, 0]])
    np.testing.assert_allclose(f.scores, [0.9, 0.5])


def test_onnx_options_come_from_sidecar_then_metadata(tmp_path):
    meta = {"keypoint_order": "yx", "size_multiple": 1}
    path = _delf_like(tmp_path / "m.onnx", [[10, 20]], [1.0], np.ones((1, 8), np.uint8), meta)
    img = np.zeros((64, 64, 3), np.uint8)
    det = make_detector(f"onnx:{path}", options={"extra_inputs": {"score_threshold": 0.0}})
    assert det.binary and det.descriptor_dim == 8
    np.testing.assert_allclose(det.detect(img).keypoints, [[20, 10]])  # yx from the metadata
    (tmp_path / "m.json").write_text(json.dumps({"keypoint_order": "xy",
                                                 "extra_inputs": {"score_threshold": 0.0}}))
    np.testing.assert_allclose(make_detector(f"onnx:{path}").detect(img).keypoints, [[10, 20]])
    (tmp_path / "m.json").write_text(json.dumps({"colour": "red"}))
    with pytest.raises(ValueError, match=r"unknown ONNX detector option.*colour.*sidecar"):
        make_detector(f"onnx:{path}")


def test_onnx_wrong_output_name_is_a_clear_error(harris):
    with pytest.raises(ValueError, match="no output 'kp'.*keypoints, scores, descriptors"):
        make_detector(f"onnx:{harris}", options={"keypoints": "kp"})


def test_onnx_cache_key_is_a_safe_file_name_and_follows_the_model(harris, tmp_path):
    key = detector_key(f"onnx:{harris}")
    assert key.startswith("onnx-harris-") and "/" not in key and ":" not in key
    model = tmp_path / "harris.onnx"
    model.write_bytes(harris.read_bytes())
    before = detector_key(f"onnx:{model}")
    assert before != key  # another file
    model.write_bytes(harris.read_bytes() + b"\0")  # rewritten in place
    assert detector_key(f"onnx:{model}") != before


# --------------------------------------------------------------------------- plug-ins


class _Dense:
    """A plug-in detector: a fixed grid with raw 4x4 patches as descriptors."""

    name = "dense"
    descriptor_dim = 16
    binary = False
    min_image_size = 8

    def __init__(self, n_features=1000, step=16):
        self.n_features, self.step = n_features, step

    def detect(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        h, w = gray.shape
        ys, xs = np.mgrid[4 : h - 4 : self.step, 4 : w - 4 : self.step]
        kp = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)[: self.n_features]
        desc = np.stack([gray[y - 2 : y + 2, x - 2 : x + 2].ravel() for x, y in kp.astype(int)])
        z = np.zeros(len(kp), np.float32)
        return LocalFeatures(kp, desc.astype(np.float32), z, z - 1, (h, w))


@pytest.fixture
def plugin(monkeypatch):
    mod = types.ModuleType("fake_cvret_detectors")
    mod.Dense = _Dense
    mod.Broken = lambda n_features=1000: object()
    monkeypatch.setitem(sys.modules, "fake_cvret_detectors", mod)
    eps = [EntryPoint("dense", "fake_cvret_detectors:Dense", detectors.ENTRY_POINT_GROUP),
           EntryPoint("broken", "fake_cvret_detectors:Broken", detectors.ENTRY_POINT_GROUP)]

    def fake(group=None, **kw):
        return eps if group == detectors.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(detectors, "entry_points", fake)


def test_entry_point_detectors_are_found_and_checked(plugin):
    assert "dense" in detector_names() and normalize_detector("dense") == "dense"
    det = make_detector("dense", n_features=30, options={"step": 8})
    assert isinstance(det, LocalFeatureDetector) and det.step == 8
    assert len(det.detect(textured_image(0))) == 30
    ext = LocalFeatureExtractor("dense")
    assert (ext.dim, ext.binary) == (16, False)
    with pytest.raises(TypeError, match="plug-in 'broken' returned a object"):
        make_detector("broken")
    with pytest.raises(ValueError, match="rejected its options"):
        make_detector("dense", options={"colour": 1})


def test_cli_detector_option_accepts_plugins_and_onnx(plugin, harris, tmp_path):
    from conftest import cli_run

    for i in range(6):
        cv2.imwrite(str(tmp_path / f"{i}.png"), textured_image(40 + i))
    out = tmp_path / "vocab"
    cli_run("vocab", "build", tmp_path, "--detector", f"onnx:{harris}", "--words", 8,
            "--n-jobs", 1, "-o", out, "-q")
    assert (out).is_dir()
    bad = cli_run("vocab", "build", tmp_path, "--detector", "surf", "-o", out, ok=False)
    assert bad.exit_code == 2 and "dense" in bad.output and "onnx:PATH" in bad.output


# --------------------------------------------------------------------------- end to end


def _gallery(n=8):
    return [textured_image(200 + i, (300, 400)) for i in range(n)]


def _copy(img):
    """Rotate by 7 degrees about the centre, then keep a 75% window."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 7, 1.0)
    rot = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(rot[30 : 30 + int(0.8 * h), 40 : 40 + int(0.85 * w)])


@pytest.mark.parametrize("family", ["bovw", "vlad"])
def test_onnx_detector_feeds_embedders_and_spatial_verification(family, harris, tmp_path):
    from cvretrieval.embedders import make_embedder
    from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter
    from cvretrieval.rerank.spatial import SpatialVerifier

    emb = make_embedder(family, detector=f"onnx:{harris}", n_words=16, n_features=300)
    if family == "vlad":  # BoVW's flags are set by classical.py's owner
        assert emb.local_features and not emb.sparse_output
    gallery = _gallery()
    feats = [emb.extract(im) for im in gallery]
    emb.fit(feats)
    reduced = [emb.reduce(f) for f in feats]
    emb.fit_corpus(reduced)
    X = emb.encode(reduced)
    target = 5
    q = emb.extract(_copy(gallery[target]))
    xq = emb.encode([emb.reduce(q)])[0]
    ranking = np.argsort(-(X @ xq), kind="stable")
    # signed descriptors (as SuperPoint's): float16, uint8 quantisation would clip them
    with FeatureStoreWriter(tmp_path / "s", descriptors="float16") as w:
        for f in feats:
            w.append(f)
    store = FeatureStore.open(tmp_path / "s")
    sv = SpatialVerifier(top_n=8, min_inliers=8, matcher="ratio", threshold=4.0)
    ids, inliers = sv.rerank(q, ranking, store)
    assert ids[0] == target, (ranking, ids, inliers)
    assert inliers[0] >= 8 and (inliers[1:] < 8).all()


def test_cli_index_and_search_with_an_onnx_detector(harris, tmp_path):
    """cvret index/search end to end: the ONNX key points feed BoVW, the bundle's feature
    store and spatial verification; a rotated and cropped copy finds its source first."""
    from conftest import cli_run

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, img in enumerate(_gallery()):
        cv2.imwrite(str(photos / f"{i}.png"), img)
    cv2.imwrite(str(tmp_path / "query.png"), _copy(_gallery()[5]))
    bundle = tmp_path / "b.cvret"
    cli_run("index", photos, "-o", bundle, "--features", "bovw", "--detector", f"onnx:{harris}",
            "--words", 200, "--rerank", "sv", "--n-jobs", 1, "-q")
    out = cli_run("search", bundle, tmp_path / "query.png", "-k", 3).output
    first = next(line for line in out.splitlines() if line.strip().startswith("1 "))
    assert first.strip().endswith("5.png"), out
