"""Runtimes that run a model file: onnxruntime, the TFLite interpreter and TorchScript.

Each adapter opens a file, describes its only image input and the chosen output
(:class:`TensorInfo`) and runs a prepared batch (:meth:`Runtime.run`, thread-safe).
The frameworks are optional (extra ``deep``: onnxruntime and ai-edge-litert; TorchScript
needs torch, extra ``siamese``) and imported only when a model is opened;
:func:`open_runtime` opens a model once per process. ``device`` chooses CPU or GPU
(:mod:`cvretrieval.embedders.devices`): onnxruntime's CUDA provider, torch on CUDA;
TFLite runs on the CPU only.
"""

from __future__ import annotations

import functools
import importlib
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._files import sha256_of
from ..errors import MissingExtraError, ModelError
from .devices import DeviceError, check_device, check_onnx_session, onnx_providers, torch_device

logger = logging.getLogger(__name__)

__all__ = [
    "Runtime",
    "TensorInfo",
    "file_fingerprint",
    "file_sha256",
    "import_extra",
    "in_worker_process",
    "missing_extra",
    "one_line",
    "open_runtime",
]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (cached per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def file_fingerprint(path: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file: cheap evidence that it did not change."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def in_worker_process() -> bool:
    """True inside a worker process (joblib, multiprocessing)."""
    return multiprocessing.parent_process() is not None


@dataclass(frozen=True)
class TensorInfo:
    """What a runtime says about one input or output tensor.

    ``shape`` uses ``None`` for dynamic dimensions (``None`` as a whole when unknown);
    ``scale``/``zero_point`` are the quantisation parameters (``None`` when not quantised).
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: np.dtype
    scale: tuple[float, ...] | None = None
    zero_point: tuple[int, ...] | None = None
    quant_axis: int = 0


class Runtime:
    """One opened model: input/output descriptions and ``run(batch) -> output``."""

    input: TensorInfo
    output: TensorInfo
    #: the batch size the model insists on (``None``: any)
    fixed_batch: int | None = None

    def __init__(
        self, path: str, n_threads: int | None, output_name: str | None, device: str = "cpu"
    ) -> None:
        self._lock = threading.Lock()
        #: where the model runs: ``'cpu'`` or ``'cuda'`` (set by the subclass)
        self.device = "cpu"

    def run(self, x: NDArray[Any]) -> NDArray[Any]:
        with self._lock:
            return self._run(x)

    def _run(self, x: NDArray[Any]) -> NDArray[Any]:
        raise NotImplementedError


def _one_input_and_output(
    path: str,
    inputs: Sequence[Any],
    input_names: Sequence[str],
    outputs: dict[str, Any],
    output_name: str | None,
) -> tuple[Any, Any]:
    """A model's only input and its output ``output_name`` (default: the first output)."""
    if len(inputs) != 1:
        raise ModelError(
            f"{path} takes {len(inputs)} inputs ({', '.join(input_names)}); "
            "an image embedder needs a model with one image input"
        )
    name = output_name if output_name is not None else next(iter(outputs))
    if name not in outputs:
        raise ModelError(f"{path} has no output {name!r}; its outputs: {', '.join(outputs)}")
    return inputs[0], outputs[name]


def missing_extra(extra: str, module: str) -> str:
    """The end of a message saying which extra installs ``module``."""
    return f"needs the '{extra}' extra: pip install 'cvretrieval[{extra}]' ({module} not installed)"


_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class _ONNXRuntime(Runtime):
    def __init__(
        self, path: str, n_threads: int | None, output_name: str | None, device: str = "cpu"
    ) -> None:
        super().__init__(path, n_threads, output_name, device)
        ort = import_extra("onnxruntime", "deep")
        opts = ort.SessionOptions()
        if n_threads:
            opts.intra_op_num_threads = int(n_threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = onnx_providers(device, ort)
        try:
            self.session = ort.InferenceSession(path, opts, providers=providers)
        except Exception as exc:
            raise ModelError(
                f"{path} is not a model onnxruntime can load ({one_line(exc)})"
            ) from None
        self.device = check_onnx_session(device, self.session, path)
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        the_input, the_output = _one_input_and_output(
            path, inputs, [i.name for i in inputs], outputs, output_name
        )
        self.input = self._info(the_input)
        self.output = self._info(the_output)
        batch = self.input.shape[0] if self.input.shape else None
        self.fixed_batch = batch

    @staticmethod
    def _info(arg: Any) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        dtype = _ONNX_DTYPES.get(arg.type)
        if dtype is None:
            raise ModelError(
                f"tensor {arg.name!r} has type {arg.type}, not an image or feature type"
            )
        return TensorInfo(arg.name, shape, np.dtype(dtype))

    def _run(self, x: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(self.session.run([self.output.name], {self.input.name: x})[0])


def _tflite_interpreter() -> Any:
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise MissingExtraError(
        "TFLite models " + missing_extra("deep", "ai-edge-litert")
        + "; tflite_runtime or tensorflow also work when installed"
    )


def _tflite_info(d: dict[str, Any]) -> TensorInfo:
    sig = d.get("shape_signature")
    sig = d["shape"] if sig is None or len(sig) == 0 else sig
    shape = tuple(int(v) if v > 0 else None for v in sig)
    qp = d.get("quantization_parameters") or {}
    scales = tuple(float(s) for s in np.atleast_1d(qp.get("scales", [])))
    zeros = tuple(int(z) for z in np.atleast_1d(qp.get("zero_points", [])))
    if not scales and d.get("quantization", (0.0, 0))[0]:
        scales, zeros = (float(d["quantization"][0]),), (int(d["quantization"][1]),)
    quantised = bool(scales) and any(s != 0 for s in scales)
    return TensorInfo(
        d["name"],
        shape,
        np.dtype(d["dtype"]),
        scales if quantised else None,
        (zeros or (0,) * len(scales)) if quantised else None,
        int(qp.get("quantized_dimension", 0)),
    )


class _TFLiteRuntime(Runtime):
    def __init__(
        self, path: str, n_threads: int | None, output_name: str | None, device: str = "cpu"
    ) -> None:
        super().__init__(path, n_threads, output_name, device)
        if check_device(device) == "cuda":
            raise DeviceError(
                f"device 'cuda': TFLite models run on the CPU only ({path}); use device cpu "
                "or auto, or convert the model to ONNX"
            )
        interpreter_cls = _tflite_interpreter()
        try:
            self.it = interpreter_cls(model_path=path, num_threads=n_threads or None)
            self.it.allocate_tensors()
        except Exception as exc:
            raise ModelError(
                f"{path} is not a model the TFLite interpreter can load ({one_line(exc)})"
            ) from None
        inputs = self.it.get_input_details()
        outputs = {d["name"]: d for d in self.it.get_output_details()}
        self._in, out = _one_input_and_output(
            path, inputs, [d["name"] for d in inputs], outputs, output_name
        )
        self.input = _tflite_info(self._in)
        self._out_index = out["index"]
        self.output = _tflite_info(out)
        self._batch_ok: bool | None = None  # can the batch dimension be resized?
        self._shape = tuple(int(v) for v in self._in["shape"])

    def _resize(self, shape: tuple[int, ...]) -> bool:
        if shape == self._shape:
            return True
        try:
            self.it.resize_tensor_input(self._in["index"], list(shape), strict=False)
            self.it.allocate_tensors()
        except Exception as exc:
            logger.info("this TFLite model cannot take a batch of %d (%s): one image at a time",
                        shape[0], one_line(exc))
            self.it.resize_tensor_input(self._in["index"], list(self._shape), strict=False)
            self.it.allocate_tensors()
            return False
        self._shape = shape
        return True

    def _invoke(self, x: NDArray[Any]) -> NDArray[Any]:
        self.it.set_tensor(self._in["index"], x)
        self.it.invoke()
        return np.array(self.it.get_tensor(self._out_index))

    def _run(self, x: NDArray[Any]) -> NDArray[Any]:
        if x.shape[0] == 1 or self._batch_ok is not False:
            if self._resize(tuple(x.shape)):
                return self._invoke(x)
            self._batch_ok = False  # remember: this model only runs one image at a time
        self._resize((1, *x.shape[1:]))
        return np.concatenate([self._invoke(x[i : i + 1]) for i in range(x.shape[0])])


class _TorchScriptRuntime(Runtime):
    def __init__(
        self, path: str, n_threads: int | None, output_name: str | None, device: str = "cpu"
    ) -> None:
        super().__init__(path, n_threads, output_name, device)
        self.torch = import_extra("torch", "siamese")
        self.device = torch_device(device, self.torch)
        if n_threads:
            self.torch.set_num_threads(int(n_threads))
        try:
            self.module = self.torch.jit.load(path, map_location=self.device).eval()
        except Exception as exc:
            raise ModelError(
                f"{path} is not a TorchScript model ({one_line(exc)}); "
                "save one with torch.jit.save"
            ) from None
        self.output_name = output_name
        self.input = TensorInfo("input", None, np.dtype(np.float32))
        self.output = TensorInfo(output_name or "output", None, np.dtype(np.float32))

    def _run(self, x: NDArray[Any]) -> NDArray[Any]:
        torch = self.torch
        with torch.inference_mode():
            y = self.module(torch.from_numpy(x).to(self.device))
        if isinstance(y, dict):
            key = self.output_name if self.output_name is not None else next(iter(y))
            if key not in y:
                raise ModelError(
                    f"the model has no output {key!r}; its outputs: {', '.join(map(str, y))}"
                )
            y = y[key]
        elif isinstance(y, (tuple, list)):
            y = y[int(self.output_name or 0)]
        return y.detach().float().cpu().numpy()


def import_extra(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"this embedder {missing_extra(extra, module)}") from None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 300 characters."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


_RUNTIMES: dict[str, type[Runtime]] = {
    "onnx": _ONNXRuntime,
    "tflite": _TFLiteRuntime,
    "torchscript": _TorchScriptRuntime,
}


@functools.lru_cache(maxsize=4)
def open_runtime(
    kind: str,
    path: str,
    n_threads: int | None,
    output_name: str | None,
    fingerprint: tuple[int, int],
    device: str = "cpu",
) -> Runtime:
    """Open a model once per process (``fingerprint`` reopens it when the file changes).

    Parameters
    ----------
    kind : {'onnx', 'tflite', 'torchscript'}
    path : str
        The model file (resolved).
    n_threads : int or None
        Runtime threads (``None``: the runtime's default).
    output_name : str or None
        The output to return (default the first).
    fingerprint : (size, mtime_ns)
        Part of the cache key only.
    device : {'auto', 'cpu', 'cuda'}
        See :mod:`cvretrieval.embedders.devices`.
    """
    logger.debug("opening %s model %s on %s", kind, path, device)
    return _RUNTIMES[kind](path, n_threads, output_name, device)
