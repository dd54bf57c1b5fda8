"""``cvret models list | fetch`` and ``--features model:NAME``, served by a local HTTP server.

The model is a tiny ONNX classifier built here (Conv 1×1 → ReLU → GlobalAveragePool →
Flatten → Gemm → Softmax); fetching it adds the classifier's input (the pooled features)
as an output, so its embedding is the L2-normalised mean of ReLU(conv(pixels)), which the
tests compute independently with numpy.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial

import cv2
import numpy as np
import pytest
from conftest import cli_run, textured_image

pytest.importorskip("onnxruntime", reason="the 'deep' extra is not installed")
onnx = pytest.importorskip("onnx", reason="the 'deep' extra is not installed")
pytest.importorskip("pooch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cvretrieval.embedders import load_embedder, make_embedder  # noqa: E402
from cvretrieval.errors import BundleError, ModelError  # noqa: E402
from cvretrieval.models import (  # noqa: E402
    fetch_model,
    list_models,
    load_model_registry,
    model_record,
    penultimate_output,
)

RNG = np.random.default_rng(11)
CONV_W = RNG.normal(size=(4, 3)).astype(np.float32)
FC_W = RNG.normal(size=(4, 10)).astype(np.float32)
MEAN, STD = 0.5, 0.25
SIZE = 8


def classifier(path, *, classifier_layer=True):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"])]
    inits = [numpy_helper.from_array(CONV_W[:, :, None, None], "w")]
    out = "f"
    if classifier_layer:
        nodes += [helper.make_node("Gemm", ["f", "fc"], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["prob"])]
        inits.append(numpy_helper.from_array(FC_W, "fc"))
        out = "prob"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def expected_vector(rgb):
    """The embedding by hand: resize, normalise, 1×1 conv, ReLU, mean, L2."""
    x = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (x - MEAN) / STD
    v = np.maximum(x.reshape(-1, 3) @ CONV_W.T, 0).mean(axis=0)
    return v / np.linalg.norm(v)


@pytest.fixture
def server(tmp_path):
    """A 127.0.0.1 HTTP server over ``tmp_path/www``; ``.requests`` lists the paths asked."""
    www = tmp_path / "www"
    (www / "zoo").mkdir(parents=True)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=www))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.www, httpd.requests = www, requests
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def registry(tmp_path, server, monkeypatch):
    """Extra registry entries (``$CVRET_MODELS_REGISTRY``) and a private cache."""
    model = classifier(server.www / "zoo" / "tiny.onnx")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    common = {"runtime": "onnx", "input_size": SIZE, "mean": MEAN, "std": STD,
              "resize": "squash", "pooling": "gap", "output": "penultimate",
              "licence": "CC0-1.0"}
    entries = {
        "tiny": {"url": "https://models.example.org/zoo/tiny.onnx", "sha256": sha, **common},
        "tiny-bad": {"url": "https://models.example.org/zoo/tiny.onnx", "sha256": "0" * 64,
                     **common},
        "tiny-unverified": {"url": "https://models.example.org/zoo/tiny.onnx", "sha256": None,
                            **common},
    }
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"models": entries}))
    monkeypatch.setenv("CVRET_MODELS_REGISTRY", str(path))
    monkeypatch.setenv("CVRET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CVRET_FETCH_BASE_URL", raising=False)
    return entries


def images(tmp_path, n=4):
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), textured_image(i, (64, 80)))
        paths.append(p)
    return paths


def test_list_shows_shipped_and_extra_models(registry):
    rows = {r["name"]: r for r in list_models()}
    assert {"resnet50-v2", "mobilenetv2", "tiny"} <= set(rows)
    assert rows["tiny"]["fetched"] is False and rows["tiny-unverified"]["verified"] is False
    result = cli_run("models", "list", "--json", "-")
    assert {r["name"] for r in json.loads(result.stdout)} >= {"resnet50-v2", "tiny"}


def test_fetch_then_features_model_name_embeds_images(tmp_path, server, registry):
    result = cli_run("models", "fetch", "tiny", "--base-url", server.base)
    assert "model:tiny" in result.output
    assert server.requests == ["/zoo/tiny.onnx"]
    record = model_record("tiny")
    assert record["output_name"] == "g"  # the pooled map that feeds Gemm, not the class scores
    emb = make_embedder("model:tiny", device="cpu")
    paths = images(tmp_path)
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    got = emb.encode(emb.extract_batch(rgb))
    assert got.shape == (len(paths), 4)
    np.testing.assert_allclose(got, np.stack([expected_vector(im) for im in rgb]), atol=1e-4)
    # fetched once: a second fetch is served from the cache
    cli_run("models", "fetch", "tiny", "--base-url", server.base)
    assert len(server.requests) == 1
    # the whole command line: index the photos with model:tiny and find a photo's copy first
    bundle = tmp_path / "bundle"
    cli_run("index", tmp_path / "photos", "-o", bundle, "--features", "model:tiny",
            "--n-jobs", "1")
    query = tmp_path / "query.png"
    cv2.imwrite(str(query), cv2.imread(str(paths[2])))
    hits = json.loads(cli_run("search", bundle, query, "-k", "2", "--json", "-").stdout)
    text = json.dumps(hits)
    assert "img2.png" in text and text.index("img2.png") < min(
        text.index(f"img{i}.png") for i in (0, 1, 3) if f"img{i}.png" in text
    )


def test_saved_embedder_refuses_a_different_cached_model(tmp_path, server, registry):
    fetch_model("tiny", base_url=server.base, progress=False)
    emb = make_embedder("model:tiny", device="cpu")
    img = textured_image(3, (40, 40))[..., ::-1].copy()
    before = emb.encode(emb.extract_batch([img]))
    emb.save(tmp_path / "saved")
    again = load_embedder(tmp_path / "saved")
    np.testing.assert_array_equal(again.encode(again.extract_batch([img])), before)
    record = model_record("tiny")
    path = record["path"]
    with open(path, "ab") as f:  # the cached file is altered behind cvretrieval's back
        f.write(b"\0")
    with pytest.raises(ModelError, match="changed since it was fetched"):
        model_record("tiny")
    with pytest.raises(BundleError, match="cvret models fetch tiny"):
        load_embedder(tmp_path / "saved")


def test_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path, server, registry):
    result = cli_run("models", "fetch", "tiny-bad", "--base-url", server.base, ok=False)
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "Traceback" not in result.output
    cached = list((tmp_path / "cache" / "models").glob("tiny-bad*"))
    assert [p.name for p in cached if not p.name.endswith(".part")] == []
    with pytest.raises(ModelError, match="cvret models fetch tiny-bad"):
        make_embedder("model:tiny-bad")


def test_unverified_needs_allow_unverified(tmp_path, server, registry):
    result = cli_run("models", "fetch", "tiny-unverified", "--base-url", server.base, ok=False)
    assert result.exit_code == 1 and "--allow-unverified" in result.output
    assert server.requests == []  # refused before any byte was downloaded
    cli_run("models", "fetch", "tiny-unverified", "--base-url", server.base,
            "--allow-unverified")
    record = model_record("tiny-unverified")
    expected = hashlib.sha256((server.www / "zoo" / "tiny.onnx").read_bytes()).hexdigest()
    assert record["verified"] is False and record["download_sha256"] == expected


def test_model_not_fetched_and_unknown_names_say_what_to_do(registry, tmp_path):
    with pytest.raises(ModelError, match="not downloaded: run `cvret models fetch tiny`"):
        make_embedder("model:tiny")
    result = cli_run("models", "fetch", "nope", ok=False)
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output
    assert "resnet50-v2" in result.output


def test_penultimate_needs_a_classifier_layer(tmp_path):
    plain = onnx.load(str(classifier(tmp_path / "plain.onnx", classifier_layer=False)))
    with pytest.raises(ModelError, match="cannot find the classifier layer"):
        penultimate_output(plain)
    assert penultimate_output(onnx.load(str(classifier(tmp_path / "c.onnx")))) == "g"


def test_shipped_registry_pins_every_url_and_licence(monkeypatch):
    monkeypatch.delenv("CVRET_MODELS_REGISTRY", raising=False)
    reg = load_model_registry()
    assert {"resnet50-v2", "mobilenetv2"} <= set(reg)
    for name, e in reg.items():
        commit = e["url"].split("/raw/")[1].split("/")[0]
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), name
        assert e["licence"] and e["source"].startswith("https://"), name
        assert e["sha256"] is None or len(e["sha256"]) == 64, name
        assert e["runtime"] in ("onnx", "tflite") and e["input_size"] == 224, name
    assert reg["resnet50-v2"]["sha256"] is not None  # published (Git LFS oid)
