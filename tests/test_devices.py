"""``device='auto' | 'cpu' | 'cuda'`` for deep inference and Siamese training, and the layout
of the deep and Siamese packages (no import cycles, no module over 500 lines, public names
where callers import them)."""

from __future__ import annotations

import ast
import importlib
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli_run

import cvretrieval
from cvretrieval.embedders.devices import DeviceError, check_device, onnx_providers, torch_device

PKG = Path(cvretrieval.__file__).parent


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


# ----------------------------------------------------------------------------- layout
def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (functions included)."""
    tree = ast.parse(path.read_text())
    me = f"{package}.{path.stem}" if path.stem != "__init__" else package
    base_parts = me.split(".") if path.stem == "__init__" else me.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                root = ".".join(base_parts[: len(base_parts) - node.level + 1])
                mod = f"{root}.{node.module}" if node.module else root
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            module_file = PKG.parent / (n.replace(".", "/") + ".py")
            if n.startswith(package + ".") and module_file.is_file():
                found.add(n)
    found.discard(me)
    return found


def _cycle(package: str) -> list[str] | None:
    folder = PKG.parent / package.replace(".", "/")
    graph = {
        f"{package}.{p.stem}": _imports(p, package)
        for p in folder.glob("*.py") if p.stem != "__init__"
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt]
            if nxt not in state:
                found = visit(nxt, [*stack, nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


@pytest.mark.parametrize("package", ["cvretrieval.siamese", "cvretrieval.embedders"])
def test_no_import_cycle(package):
    assert _cycle(package) is None, f"import cycle: {' -> '.join(_cycle(package) or [])}"


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The checker itself must be able to fail: two modules importing each other."""
    pkg = tmp_path / "cvretrieval" / "fakepkg"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path / "cvretrieval")
    assert _cycle("cvretrieval.fakepkg") is not None


def test_modules_stay_under_500_lines():
    files = [*(PKG / "embedders").glob("*.py"), *(PKG / "siamese").glob("*.py"),
             PKG / "models.py", PKG / "cli" / "models.py", PKG / "cli" / "train.py"]
    long = {f.name: n for f in files if f.is_file()
            and (n := len(f.read_text().splitlines())) > 500}
    assert not long


@pytest.mark.parametrize("module,names", [
    ("cvretrieval.embedders.deep", ["DeepEmbedder", "ONNXEmbedder", "TFLiteEmbedder",
                                    "TorchScriptEmbedder", "IMAGENET_MEAN", "IMAGENET_STD",
                                    "ModelError", "file_sha256", "prepare_batch",
                                    "resize_image"]),
    ("cvretrieval.siamese.train", ["train_siamese", "fit_head", "embed_base", "resolve_base",
                                   "dataset_labels", "split_classes",
                                   "class_retrieval_metrics"]),
    ("cvretrieval.siamese", ["train_siamese", "fit_head", "export_onnx", "ProjectionHead",
                             "batch_loss", "PKSampler", "require_torch"]),
])
def test_public_names_stay_where_callers_import_them(module, names):
    pytest.importorskip("torch")
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []


# ----------------------------------------------------------------------------- devices
def test_check_device_rejects_unknown_names():
    assert check_device("CPU") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        check_device("gpu")


@pytest.mark.skipif(_has_cuda(), reason="a CUDA GPU is visible")
def test_torch_cuda_without_a_gpu_is_one_clear_line():
    torch = pytest.importorskip("torch")
    assert torch_device("auto", torch) == "cpu"
    with pytest.raises(DeviceError, match="sees no CUDA GPU") as info:
        torch_device("cuda", torch)
    assert "\n" not in str(info.value) and "--device cpu" in str(info.value)


@pytest.mark.skipif(_ort_has_cuda(), reason="onnxruntime-gpu is installed")
def test_onnx_cuda_without_onnxruntime_gpu_names_it():
    ort = pytest.importorskip("onnxruntime")
    assert onnx_providers("auto", ort) == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="install onnxruntime-gpu"):
        onnx_providers("cuda", ort)


def _tiny_onnx(path, size=8):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(3).normal(size=(5, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, size, size])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _images(n=3):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(n)]


def test_onnx_cpu_and_auto_give_the_same_vectors(tmp_path):
    pytest.importorskip("onnxruntime")
    from cvretrieval.embedders import make_embedder

    path = _tiny_onnx(tmp_path / "m.onnx")
    cpu = make_embedder(f"onnx:{path}", device="cpu")
    auto = make_embedder(f"onnx:{path}")
    a, b = cpu.encode(cpu.extract_batch(_images())), auto.encode(auto.extract_batch(_images()))
    assert a.shape == (3, 5) and np.abs(a).sum() > 0
    if _ort_has_cuda():
        np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(_ort_has_cuda(), reason="onnxruntime-gpu is installed")
def test_onnx_embedder_cuda_fails_at_once_with_the_reason(tmp_path):
    pytest.importorskip("onnxruntime")
    from cvretrieval.embedders import make_embedder

    path = _tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
        make_embedder(f"onnx:{path}", device="cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        make_embedder(f"onnx:{path}", device="gpu")


def test_torchscript_cpu_and_auto_give_the_same_vectors(tmp_path):
    torch = pytest.importorskip("torch")
    from cvretrieval.embedders import make_embedder

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU())
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    cpu = make_embedder(f"torchscript:{path}", input_size=8, device="cpu")
    auto = make_embedder(f"torchscript:{path}", input_size=8, device="auto")
    a, b = cpu.encode(cpu.extract_batch(_images())), auto.encode(auto.extract_batch(_images()))
    assert a.shape == (3, 4)
    np.testing.assert_allclose(a, b, atol=1e-5 if _has_cuda() else 0)
    if not _has_cuda():
        with pytest.raises(DeviceError, match="sees no CUDA GPU"):
            make_embedder(f"torchscript:{path}", input_size=8, device="cuda")


def test_fit_head_cpu_and_auto_train_the_same_weights():
    pytest.importorskip("torch")
    from cvretrieval.siamese.fit import fit_head
    from cvretrieval.siamese.head import embed_numpy

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 16))
    y = np.repeat(np.arange(8), 6)
    X = (centres[y] + 0.8 * rng.normal(size=(len(y), 16))).astype(np.float32)
    kw = dict(head=(16, 8), epochs=2, batch_p=4, batch_k=3, mix=1.0, progress=False)
    m_cpu, info_cpu = fit_head(X, y, device="cpu", **kw)
    m_auto, info_auto = fit_head(X, y, device="auto", **kw)
    assert info_cpu["device"] == "cpu"
    assert [r["loss"] for r in info_cpu["history"]][1:] != [None, None]
    out_cpu, out_auto = embed_numpy(m_cpu, X), embed_numpy(m_auto, X)
    if _has_cuda():
        np.testing.assert_allclose(out_cpu, out_auto, atol=1e-3)
    else:
        assert info_auto["device"] == "cpu"
        for (k, v), (_, w) in zip(m_cpu.state_dict().items(), m_auto.state_dict().items(),
                                      strict=True):
            assert bool((v == w).all()), k
        np.testing.assert_array_equal(out_cpu, out_auto)


@pytest.mark.skipif(_has_cuda(), reason="a CUDA GPU is visible")
def test_cli_train_siamese_device_cuda_without_gpu_is_one_line(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    data = tmp_path / "data"
    for c in "ab":
        (data / c).mkdir(parents=True)
    for backbone in ([], ["--backbone", "resnet18"]):
        result = cli_run("train", "siamese", data, "--base", "hog", "--device", "cuda",
                         "-o", tmp_path / "model", *backbone, ok=False)
        assert result.exit_code == 1, result.output
        assert "sees no CUDA GPU" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "model").exists()  # refused before any work


def test_a_backbone_model_folder_can_be_trained_again():
    """``prepare_out_dir`` used to refuse a folder holding ``backbone.onnx`` (a --backbone
    model), so training again into the same folder failed."""
    pytest.importorskip("torch")
    from cvretrieval.siamese.export import prepare_out_dir

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "model"
        out.mkdir()
        for name in ("siamese.json", "head.onnx", "backbone.onnx", "training.png"):
            (out / name).write_bytes(b"x")
        (out / "base").mkdir()
        prepare_out_dir(out)
        assert not (out / "siamese.json").exists() and (out / "backbone.onnx").exists()
        (out / "notes.txt").write_text("mine")
        with pytest.raises(cvretrieval.errors.CVRetrievalError, match="notes.txt"):
            prepare_out_dir(out)


def test_siamese_model_folder_takes_a_device(tmp_path):
    """``siamese:DIR`` runs its head (and a network base) where ``device`` says: cpu and
    auto agree on a machine without a GPU; cuda without one is one clear error."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cvretrieval.embedders import make_embedder
    from cvretrieval.siamese import train_siamese

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for c in range(4):
        (data / f"c{c}").mkdir(parents=True)
        base = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        for i in range(4):
            noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(data / f"c{c}" / f"{i}.png"), noisy)
    out = train_siamese(data, base="hog", head=(16, 8), epochs=1, batch_p=2, batch_k=2,
                        center=False, val_split=0.5, out_dir=tmp_path / "model", n_jobs=1,
                        progress=False)
    spec = f"siamese:{out['model_dir']}"
    cpu, auto = make_embedder(spec, device="cpu"), make_embedder(spec)
    assert cpu.get_params()["device"] == "cpu" and auto.get_params()["device"] == "auto"
    a, b = cpu.embed(_images()), auto.embed(_images())
    assert a.shape[0] == 3 and np.isfinite(a).all()
    if _ort_has_cuda():
        np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        np.testing.assert_array_equal(a, b)
        with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
            make_embedder(spec, device="cuda").embed(_images())
    with pytest.raises(ValueError, match="device must be one of"):
        make_embedder(spec, device="gpu")
