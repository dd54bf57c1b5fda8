"""The embedder registry and the classical embedders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvretrieval.embedders import (
    BoVWEmbedder,
    HOGEmbedder,
    available_embedders,
    load_embedder,
    make_embedder,
    parse_spec,
)
from cvretrieval.errors import BundleError, NotFittedError


def test_spec_strings_select_embedders():
    assert isinstance(make_embedder("hog"), HOGEmbedder)
    emb = make_embedder("bovw-orb", n_words=64)
    assert isinstance(emb, BoVWEmbedder) and emb.detector == "orb" and emb.n_words == 64
    assert make_embedder("BoVW-SIFT").detector == "sift"
    assert parse_spec("bovw-rootsift") == ("bovw", {"detector": "rootsift"})


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown embedder 'nope'.*hog"):
        make_embedder("nope")
    with pytest.raises(ValueError, match="does not take n_words"):
        make_embedder("hog", n_words=10)
    with pytest.raises(ValueError, match="implies detector='orb'"):
        make_embedder("bovw-orb", detector="sift")
    assert "hog" in available_embedders()


def test_none_parameters_are_ignored():
    assert make_embedder("bovw", n_words=None).n_words == 1000


def test_hog_embeds_unit_rows(make_textured):
    X = HOGEmbedder().embed([make_textured(0), make_textured(1)])
    assert X.shape == (2, 8100) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_bovw_needs_fit_before_embedding(make_textured):
    with pytest.raises(NotFittedError, match="not fitted"):
        BoVWEmbedder(n_words=8).embed([make_textured(0)])


@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_bovw_fit_embed_save_load_round_trip(tmp_path, make_textured, detector):
    images = [make_textured(i) for i in range(6)]
    emb = BoVWEmbedder(detector=detector, n_words=16, n_features=200, random_state=0)
    feats = [emb.extract(im) for im in images]
    emb.fit(feats)
    reduced = [emb.reduce(f) for f in feats]
    emb.fit_corpus(reduced)
    X = emb.encode(reduced)
    assert X.shape == (6, 16) and X.dtype == np.float32
    norms = np.linalg.norm(X, axis=1)
    # unit rows; a row can only be zero when every word of the image is in every image (idf 0)
    assert np.isclose(norms, 1.0, rtol=1e-5).sum() >= 5
    assert np.all(np.isclose(norms, 1.0, rtol=1e-5) | (norms == 0))
    # the same image embeds identically through embed()
    np.testing.assert_allclose(emb.embed([images[2]])[0], X[2], rtol=1e-6)
    emb.save(tmp_path / "emb")
    meta = json.loads((tmp_path / "emb" / "embedder.json").read_text())
    assert meta["name"] == "bovw" and meta["params"]["detector"] == detector
    again = load_embedder(tmp_path / "emb")
    np.testing.assert_array_equal(again.embed(images), emb.embed(images))


def test_bovw_idf_down_weights_words_in_every_image():
    emb = BoVWEmbedder(n_words=4)
    emb.vocabulary_ = object()  # only the corpus statistics are exercised here
    words = [np.array([0, 1], np.uint32), np.array([0, 2], np.uint32), np.array([0, 3], np.uint32)]
    emb.fit_corpus(words)
    X = emb.encode(words)
    # word 0 is in every image, so it must weigh less than the image's own rare word
    assert (X[:, 0] < X[np.arange(3), [1, 2, 3]]).all()


def test_load_embedder_errors(tmp_path):
    with pytest.raises(BundleError, match="embedder.json is missing"):
        load_embedder(tmp_path)
    (tmp_path / "embedder.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_embedder(tmp_path)
    meta = {"format_version": 99, "name": "hog", "params": {}}
    (tmp_path / "embedder.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format_version 99"):
        load_embedder(tmp_path)


def test_external_vocabulary_must_match_the_detector(tmp_path, make_textured):
    from cvretrieval.features.vocabulary import save_vocabulary

    emb = BoVWEmbedder(detector="orb", n_words=8, n_features=200)
    emb.fit([emb.extract(make_textured(i)) for i in range(3)])
    save_vocabulary(emb.vocabulary_, tmp_path / "v")
    wrong = BoVWEmbedder(detector="sift", vocabulary=str(tmp_path / "v"))  # no I/O yet
    with pytest.raises(BundleError, match="orb descriptors.*sift"):
        wrong.fit([])
    ok = BoVWEmbedder(detector="orb", n_words=999, vocabulary=str(tmp_path / "v"))
    assert ok.needs_fit  # issue 12: the vocabulary is read by fit, not __init__
    ok.fit([])
    assert not ok.needs_fit and ok.n_words == 8


# --------------------------------------------------------------------------- the registry
def test_model_specs_keep_the_path_after_the_first_colon():
    path = "C:/Models/My Net.onnx"
    assert parse_spec("onnx:" + path) == ("onnx", {"model_path": path})
    assert parse_spec(" TFLite:/a/B.tflite") == ("tflite", {"model_path": "/a/B.tflite"})
    assert parse_spec("torchscript:net.pt") == ("torchscript", {"model_path": "net.pt"})
    assert parse_spec("siamese:runs/best") == ("siamese", {"model_dir": "runs/best"})
    assert parse_spec("vlad-sift") == ("vlad", {"detector": "sift"})
    assert parse_spec("bovw-orb") == ("bovw", {"detector": "orb"})
    with pytest.raises(ValueError, match="names no file: write tflite:PATH"):
        parse_spec("tflite:")
    with pytest.raises(ValueError, match="needs model_path: write onnx:PATH"):
        make_embedder("onnx")
    with pytest.raises(ValueError, match="unknown embedder 'resnet:x.onnx'.*onnx:PATH"):
        make_embedder("resnet:x.onnx")


def test_vlad_family_takes_a_detector_suffix():
    vlad = pytest.importorskip("cvretrieval.embedders.vlad", reason="no VLAD embedder here")
    emb = make_embedder("vlad-sift", n_words=8)
    assert isinstance(emb, vlad.VLADEmbedder) and emb.detector == "sift" and emb.n_words == 8


def test_available_embedders_lists_every_builtin_with_a_status():
    table = available_embedders()
    assert {"hog", "bovw", "vlad", "onnx", "tflite", "torchscript", "siamese"} <= set(table)
    assert table["hog"] == "ok (built-in)"
    for name, status in table.items():
        assert status.startswith(("ok (", "unavailable: ")), (name, status)


def test_a_missing_lazy_module_only_disables_that_embedder(monkeypatch):
    from cvretrieval.embedders import LAZY_BUILTINS, LazyEntry

    monkeypatch.setitem(LAZY_BUILTINS, "ghost", LazyEntry("cvretrieval.embedders.ghost", "Ghost"))
    assert "not part of this installation" in available_embedders()["ghost"]
    assert available_embedders()["hog"] == "ok (built-in)"
    with pytest.raises(ValueError, match="'ghost' is not available"):
        make_embedder("ghost")


PLUGIN = '''
import numpy as np
from cvretrieval.embedders.base import Embedder


class Echo(Embedder):
    name = "echo"

    def __init__(self, size=4):
        self.size = size

    @property
    def dim(self):
        return self.size

    def extract(self, image):
        return np.full(self.size, float(image.mean()), np.float32)

    def encode(self, reduced):
        return np.stack(reduced)


class FileEcho(Echo):
    name = "fileecho"
    path_param = "source"

    def __init__(self, source, size=4):
        self.source = source
        self.size = size
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution 'h3plug' declaring entry points in group cvretrieval.embedders."""
    (tmp_path / "h3plug.py").write_text(PLUGIN)
    info = tmp_path / "h3plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: h3plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[cvretrieval.embedders]\necho = h3plug:Echo\nfileecho = h3plug:FileEcho\n"
        "broken = h3plug_missing:Nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugins(plugin_dist, tmp_path):
    emb = make_embedder("echo", size=3)
    assert type(emb).__name__ == "Echo" and emb.dim == 3
    assert type(make_embedder("h3plug:echo")).__name__ == "Echo"  # distribution:name
    with_path = make_embedder("fileecho:/data/list.txt", size=2)
    assert with_path.source == "/data/list.txt" and with_path.size == 2
    table = available_embedders()
    assert table["echo"] == "ok (h3plug:Echo)"
    assert table["broken"].startswith("unavailable: ModuleNotFoundError")
    assert "h3plug:echo" not in table  # aliases are not listed twice
    emb.save(tmp_path / "saved")
    again = load_embedder(tmp_path / "saved")
    image = np.full((4, 4, 3), 10, np.uint8)
    assert type(again).__name__ == "Echo" and again.size == 3
    np.testing.assert_array_equal(again.embed([image]), [[10.0, 10.0, 10.0]])


def test_capabilities_are_declared_on_the_class():
    """Issue 12.1: callers read declared flags, never hasattr probes."""
    from cvretrieval.embedders.base import Embedder
    from cvretrieval.embedders.vlad import VLADEmbedder

    for flag in ("sparse_output", "local_features", "grayscale_input"):
        assert getattr(Embedder, flag) is False  # the safe default of every new embedder
    assert VLADEmbedder.local_features is True and VLADEmbedder.sparse_output is False
    # gray decoding follows the detector: OpenCV's look at gray only (an ONNX or plug-in
    # detector may want colour and says so); HOG is gray by construction
    from cvretrieval.embedders.classical import HOGEmbedder

    assert VLADEmbedder(n_words=4).grayscale_input is True
    assert HOGEmbedder.grayscale_input is True
    feats = VLADEmbedder(n_words=4).extract(np.zeros((32, 32, 3), np.uint8))
    assert len(feats) == 0 and feats.keypoints.shape == (0, 2)  # LocalFeatures, as declared
