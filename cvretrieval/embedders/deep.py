"""Pretrained networks as embedders: ONNX, TFLite and TorchScript model files.

Every adapter does the same thing around a different runtime: resize the image to the
model's input size, order and normalise the pixels as the model expects, run a batch,
de-quantise an integer output, pool a feature map into one vector (GAP, GeM or MAC) and
L2-normalise it, so the index's ``ip`` metric is the cosine similarity.

The runtimes are optional (extra ``deep``: onnxruntime and ai-edge-litert; TorchScript
needs torch, extra ``siamese``) and imported only when a model is opened. A model is
opened once per process and cached; the embedder pickled to worker processes carries
only its parameters and what it learned from the model (input size, dimension, hash).

A saved embedder refers to the model file by path (it is never copied) and records its
SHA-256; loading refuses a missing or different file.

References
----------
.. [1] Radenović, Tolias & Chum, "Fine-tuning CNN image retrieval with no human
       annotation", TPAMI 2018 (GeM pooling).
.. [2] Razavian, Sullivan, Carlsson & Maki, "Visual instance retrieval with deep
       convolutional networks", ITE Trans. MTA 2016.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest, write_json_atomic
from ..errors import BundleError, CVRetrievalError, MissingExtraError, ModelError
from .base import Embedder, l2_normalize
from .pooling import LAYOUTS, POOLINGS, dequantize, pool

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash", "center-crop", "letterbox")
CHANNEL_ORDERS = ("rgb", "bgr")
MODEL_STATE_FILE = "model.json"

__all__ = [
    "DeepEmbedder",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelError",
    "ONNXEmbedder",
    "TFLiteEmbedder",
    "TorchScriptEmbedder",
    "file_sha256",
    "prepare_batch",
    "resize_image",
]



# --------------------------------------------------------------------------- pure helpers
def _as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"input_size must be an int or a (height, width) pair, got {size!r}")
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {size!r}")
    return h, w


def _resize(image: NDArray[np.uint8], w: int, h: int) -> NDArray[np.uint8]:
    shrink = w <= image.shape[1] and h <= image.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.asarray(cv2.resize(image, (w, h), interpolation=interp), np.uint8)
    return out if out.ndim == image.ndim else out[..., None]


def resize_image(
    image: NDArray[np.uint8], size: int | Sequence[int], mode: str = "squash", pad_value: int = 0
) -> NDArray[np.uint8]:
    """Bring an image to ``size`` for a network.

    Parameters
    ----------
    image : (H, W, C) ndarray of uint8
    size : int or (height, width)
    mode : {'squash', 'center-crop', 'letterbox'}
        ``squash`` resizes to the size ignoring the aspect ratio; ``center-crop`` scales
        so the image covers the size (short side fits) and crops the centre;
        ``letterbox`` scales so the whole image fits and pads the rest with ``pad_value``.
        Shrinking uses area interpolation, enlarging bilinear.

    Returns
    -------
    (height, width, C) ndarray of uint8

    Examples
    --------
    >>> img = np.zeros((100, 200, 3), np.uint8); img[:, 50:150] = 255
    >>> int(resize_image(img, 50, "center-crop").min())
    255
    >>> box = resize_image(img, 50, "letterbox")
    >>> box.shape, int(box[:12].max()), int(box[13:37, 25].min())
    ((50, 50, 3), 0, 255)
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    th, tw = _as_hw(size)
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    if mode == "squash":
        return _resize(image, tw, th)
    if mode == "center-crop":
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        scaled = _resize(image, nw, nh)
        y0, x0 = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + th, x0 : x0 + tw])
    s = min(th / h, tw / w)
    nh, nw = min(th, max(1, round(h * s))), min(tw, max(1, round(w * s)))
    scaled = _resize(image, nw, nh)
    out = np.full((th, tw, image.shape[2]), pad_value, np.uint8)
    y0, x0 = (th - nh) // 2, (tw - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = scaled
    return out


def _triple(value: float | Sequence[float], name: str) -> NDArray[np.float32]:
    arr = np.atleast_1d(np.asarray(value, np.float32)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ValueError(f"{name} must be one number or one per channel (3), got {value!r}")
    return arr


def prepare_batch(
    images: Sequence[NDArray[np.uint8]],
    size: int | Sequence[int],
    *,
    resize: str = "squash",
    channels: str = "rgb",
    layout: str = "nchw",
    mean: float | Sequence[float] | None = IMAGENET_MEAN,
    std: float | Sequence[float] | None = IMAGENET_STD,
    dtype: Any = np.float32,
    quantization: tuple[float, int] | None = None,
    n_channels: int = 3,
) -> NDArray[Any]:
    """Turn RGB uint8 images into one input batch for a network.

    Float inputs: pixels / 255, minus ``mean``, divided by ``std`` (per channel, in the
    order of ``channels``). Integer inputs: raw pixels when ``mean`` and ``std`` are
    ``None`` (``pixel - 128`` for int8); otherwise the normalised values are quantised with
    ``quantization = (scale, zero_point)``.

    Parameters
    ----------
    images : sequence of (H, W, 3) ndarray of uint8
        RGB images, any size.
    size : int or (height, width)
    resize : {'squash', 'center-crop', 'letterbox'}
    channels : {'rgb', 'bgr'}
    layout : {'nchw', 'nhwc'}
    mean, std : float, 3 floats or None
        In units of pixel / 255. ``None`` means no normalisation.
    dtype : numpy dtype
        The model's input dtype.
    quantization : (scale, zero_point), optional
        For integer inputs with ``mean``/``std``.
    n_channels : {3, 1}
        1 feeds the grey level (``channels`` is then irrelevant).

    Returns
    -------
    (N, C, H, W) or (N, H, W, C) ndarray of ``dtype``

    Examples
    --------
    >>> img = np.full((4, 4, 3), 255, np.uint8)
    >>> prepare_batch([img], 4, mean=0.5, std=0.5).shape
    (1, 3, 4, 4)
    >>> float(prepare_batch([img], 4, mean=0.5, std=0.5).max())
    1.0
    """
    dtype = np.dtype(dtype)
    if channels not in CHANNEL_ORDERS:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    th, tw = _as_hw(size)
    if len(images) == 0:
        shape = (0, n_channels, th, tw) if layout == "nchw" else (0, th, tw, n_channels)
        return np.zeros(shape, dtype)
    batch = np.stack([resize_image(_rgb(im), (th, tw), resize) for im in images])
    if n_channels == 1:
        batch = np.stack([cv2.cvtColor(b, cv2.COLOR_RGB2GRAY) for b in batch])[..., None]
    elif channels == "bgr":
        batch = batch[..., ::-1]
    normalise = mean is not None or std is not None
    if dtype.kind in "iu" and not normalise:
        x: NDArray[Any] = batch.astype(np.int16) - 128 if dtype == np.int8 else batch
        x = x.astype(dtype)
    else:
        xf = batch.astype(np.float32) / 255.0
        if normalise:
            m = _triple(0.0 if mean is None else mean, "mean")[:n_channels]
            s = _triple(1.0 if std is None else std, "std")[:n_channels]
            if np.any(s == 0):
                raise ValueError(f"std must not contain 0, got {std!r}")
            if channels == "bgr" and n_channels == 3:
                m, s = m[::-1], s[::-1]
            xf = (xf - m) / s
        if dtype.kind in "iu":
            if quantization is None or not quantization[0]:
                raise ModelError(
                    f"the model takes {dtype} input without quantisation parameters: "
                    "pass mean=None and std=None to feed raw pixels"
                )
            scale, zero = quantization
            info = np.iinfo(dtype)
            x = np.clip(np.round(xf / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = xf.astype(dtype)
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _rgb(image: NDArray[Any]) -> NDArray[np.uint8]:
    im = np.asarray(image)
    if im.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB arrays, got dtype {im.dtype}")
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be (H, W, 3) RGB arrays, got shape {im.shape}")
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    return im[..., :3]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (cached per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _in_worker_process() -> bool:
    return multiprocessing.parent_process() is not None


# --------------------------------------------------------------------------- runtimes
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


class _Runtime:
    """One opened model: input/output descriptions and ``run(batch) -> output``."""

    input: TensorInfo
    output: TensorInfo
    #: the batch size the model insists on (``None``: any)
    fixed_batch: int | None = None

    def __init__(self, path: str, n_threads: int | None, output_name: str | None) -> None:
        self._lock = threading.Lock()

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


def _missing(extra: str, module: str) -> str:
    return f"needs the '{extra}' extra: pip install 'cvretrieval[{extra}]' ({module} not installed)"


_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class _ONNXRuntime(_Runtime):
    def __init__(self, path: str, n_threads: int | None, output_name: str | None) -> None:
        super().__init__(path, n_threads, output_name)
        ort = _import("onnxruntime", "deep")
        opts = ort.SessionOptions()
        if n_threads:
            opts.intra_op_num_threads = int(n_threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(
                f"{path} is not a model onnxruntime can load ({_one_line(exc)})"
            ) from None
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
        "TFLite models " + _missing("deep", "ai-edge-litert")
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


class _TFLiteRuntime(_Runtime):
    def __init__(self, path: str, n_threads: int | None, output_name: str | None) -> None:
        super().__init__(path, n_threads, output_name)
        interpreter_cls = _tflite_interpreter()
        try:
            self.it = interpreter_cls(model_path=path, num_threads=n_threads or None)
            self.it.allocate_tensors()
        except Exception as exc:
            raise ModelError(
                f"{path} is not a model the TFLite interpreter can load ({_one_line(exc)})"
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
                        shape[0], _one_line(exc))
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


class _TorchScriptRuntime(_Runtime):
    def __init__(self, path: str, n_threads: int | None, output_name: str | None) -> None:
        super().__init__(path, n_threads, output_name)
        self.torch = _import("torch", "siamese")
        if n_threads:
            self.torch.set_num_threads(int(n_threads))
        try:
            self.module = self.torch.jit.load(path, map_location="cpu").eval()
        except Exception as exc:
            raise ModelError(
                f"{path} is not a TorchScript model ({_one_line(exc)}); "
                "save one with torch.jit.save"
            ) from None
        self.output_name = output_name
        self.input = TensorInfo("input", None, np.dtype(np.float32))
        self.output = TensorInfo(output_name or "output", None, np.dtype(np.float32))

    def _run(self, x: NDArray[Any]) -> NDArray[Any]:
        torch = self.torch
        with torch.inference_mode():
            y = self.module(torch.from_numpy(x))
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


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"this embedder {_missing(extra, module)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


_RUNTIMES: dict[str, type[_Runtime]] = {
    "onnx": _ONNXRuntime,
    "tflite": _TFLiteRuntime,
    "torchscript": _TorchScriptRuntime,
}


@functools.lru_cache(maxsize=4)
def _open_runtime(
    kind: str,
    path: str,
    n_threads: int | None,
    output_name: str | None,
    fingerprint: tuple[int, int],
) -> _Runtime:
    """Open a model once per process (``fingerprint`` reopens it when the file changes)."""
    logger.debug("opening %s model %s", kind, path)
    return _RUNTIMES[kind](path, n_threads, output_name)


# --------------------------------------------------------------------------- embedders
class DeepEmbedder(Embedder):
    """A network file as an embedder (base of the ONNX, TFLite and TorchScript adapters).

    Parameters
    ----------
    model_path : str
        The model file. It is referred to, never copied: a saved embedder records its path
        and SHA-256 and refuses to load when the file is missing or different.
    input_size : int, (height, width) or None
        Network input size. Default: the model's static input shape (224 for TorchScript,
        whose files do not declare one). A value disagreeing with a static shape is an error.
    resize : {'squash', 'center-crop', 'letterbox'}, default 'squash'
        How an image is brought to ``input_size`` (see :func:`resize_image`).
    channels : {'rgb', 'bgr'}, default 'rgb'
        Channel order the network expects.
    layout : {'nchw', 'nhwc'} or None
        Input layout; default from the model's input shape (the axis of size 3), else NCHW
        for ONNX and TorchScript, NHWC for TFLite. 4-d outputs are read in the same layout.
    mean, std : float, 3 floats or None
        Normalisation in units of pixel / 255. Default: ImageNet's for float inputs; none
        for integer (quantised) inputs, which receive the raw pixels. ``mean=0, std=1``
        feeds pixel / 255.
    pooling : {'gap', 'gem', 'mac', 'none'}, default 'gap'
        How a feature-map (``(N, C, H, W)``/``(N, H, W, C)``) or token (``(N, L, D)``)
        output becomes a vector; ``(N, D)`` outputs are used as they are; ``none`` flattens.
    p : float, default 3
        GeM exponent.
    output_name : str or None
        Which output to use (default the first); an index for TorchScript tuples.
    batch_size : int, default 8
        Images per inference call.
    n_threads : int or None
        Runtime threads; default 1 inside worker processes, the runtime's default otherwise.

    Attributes
    ----------
    model_sha256_ : str
        Hash of the model file, set when the model is first opened (or when loaded).

    Notes
    -----
    Integer outputs are de-quantised with the output tensor's scale and zero point (TFLite).
    Vectors are always L2-normalised.
    """

    name: ClassVar[str] = ""
    #: the parameter a ``name:PATH`` spec fills
    path_param: ClassVar[str] = "model_path"
    #: the extra that installs the runtime, and the modules it provides
    extra: ClassVar[str] = "deep"
    runtime_modules: ClassVar[tuple[str, ...]] = ()
    default_layout: ClassVar[str] = "nchw"

    def __init__(
        self,
        model_path: str,
        input_size: int | Sequence[int] | None = None,
        resize: str = "squash",
        channels: str = "rgb",
        layout: str | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        pooling: str = "gap",
        p: float = 3.0,
        output_name: str | None = None,
        batch_size: int = 8,
        n_threads: int | None = None,
    ):
        self.model_path = str(model_path)
        self.input_size = list(input_size) if isinstance(input_size, tuple) else input_size
        self.resize = resize
        self.channels = channels
        self.layout = layout
        self.mean = list(mean) if isinstance(mean, tuple) else mean
        self.std = list(std) if isinstance(std, tuple) else std
        self.pooling = pooling
        self.p = p
        self.output_name = output_name
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.model_sha256_: str | None = None
        self._info: dict[str, Any] | None = None
        self._runtime: _Runtime | None = None

    # --- availability and validation -----------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """``None`` when the runtime is installed, else what to install."""
        if any(importlib.util.find_spec(m.split(".")[0]) for m in cls.runtime_modules):
            return None
        return _missing(cls.extra, cls.runtime_modules[0].split(".")[0].replace("_", "-"))

    def _check_params(self) -> None:
        if self.input_size is not None:
            _as_hw(self.input_size)
        checks = [
            ("resize", self.resize, RESIZE_MODES),
            ("channels", self.channels, CHANNEL_ORDERS),
            ("pooling", self.pooling, POOLINGS),
        ]
        if self.layout is not None:
            checks.append(("layout", self.layout, LAYOUTS))
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")
        if not (isinstance(self.p, (int, float)) and self.p > 0):
            raise ValueError(f"p (the GeM exponent) must be > 0, got {self.p!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        for key in ("mean", "std"):
            if getattr(self, key) is not None:
                _triple(getattr(self, key), key)

    def validate(self) -> DeepEmbedder:
        """Check the options, open the model and run it once; raise a clear error if wrong.

        :func:`cvretrieval.embedders.make_embedder` calls this so a bad model fails at once
        rather than on every image.
        """
        self._check_params()
        self._inspect()
        return self

    def _model_file(self) -> Path:
        path = Path(self.model_path).expanduser()
        if not path.exists():
            raise ModelError(f"model file {self.model_path} does not exist: check the path")
        if not path.is_file():
            raise ModelError(f"{self.model_path} is not a file: pass the model file itself")
        return path

    def _threads(self) -> int | None:
        if self.n_threads is not None:
            return int(self.n_threads)
        return 1 if _in_worker_process() else None

    def _get_runtime(self) -> _Runtime:
        if self._runtime is None:
            path = self._model_file()
            fp = _fingerprint(path)
            if self._info is not None and tuple(self._info["fingerprint"]) != fp:
                current = file_sha256(path)
                if current != self._info["sha256"]:
                    raise ModelError(
                        f"{path} changed since it was opened (sha256 {current[:12]}, expected "
                        f"{self._info['sha256'][:12]}): restore it or start again with the "
                        "new model"
                    )
                self._info["fingerprint"] = fp
            self._runtime = _open_runtime(
                self.name, str(path.resolve()), self._threads(), self.output_name, fp
            )
        return self._runtime

    def _inspect(self) -> dict[str, Any]:
        """Open the model once and learn input size, layout, dtype and output dimension."""
        if self._info is not None:
            return self._info
        self._check_params()
        path = self._model_file()
        sha = file_sha256(path)
        if self.model_sha256_ is not None and sha != self.model_sha256_:
            raise BundleError(
                f"{path} has sha256 {sha}, not the {self.model_sha256_} this embedder was saved "
                "with: restore the original model file or rebuild the bundle with the new one"
            )
        rt = self._get_runtime()
        shape = rt.input.shape
        if shape is not None and len(shape) != 4:
            raise ModelError(
                f"{path} takes input of shape {_fmt(shape)}; an image model takes a 4-d batch "
                "(N, C, H, W) or (N, H, W, C)"
            )
        layout = self.layout or _guess_layout(shape, self.default_layout)
        if shape is not None:
            c_axis, hw_axes = (1, (2, 3)) if layout == "nchw" else (3, (1, 2))
            n_channels = shape[c_axis]
            if n_channels not in (None, 1, 3):
                raise ModelError(
                    f"{path} takes input of shape {_fmt(shape)}: with layout {layout} that is "
                    f"{n_channels} channels, not an RGB or grey image; pass layout="
                    f"'{'nhwc' if layout == 'nchw' else 'nchw'}' if the layout is the other one"
                )
            static = tuple(shape[a] for a in hw_axes)
        else:
            n_channels, static = None, (None, None)
        if self.input_size is not None:
            size = _as_hw(self.input_size)
            if all(v is not None for v in static) and tuple(static) != size:
                raise ModelError(
                    f"input_size {self.input_size!r} disagrees with {path}, whose input is "
                    f"fixed at {static[0]}x{static[1]}: drop input_size or pass {static[0]}"
                )
        elif all(v is not None for v in static):
            size = (int(static[0]), int(static[1]))  # type: ignore[arg-type]
        elif shape is None:
            size = (224, 224)
            logger.info("%s declares no input shape: using input_size 224", path)
        else:
            raise ModelError(
                f"{path} has a dynamic input size ({_fmt(shape)}): pass input_size (e.g. 224)"
            )
        quantised = rt.input.dtype.kind in "iu"
        info = {
            "sha256": sha,
            "fingerprint": list(_fingerprint(path)),
            "input_size": [int(size[0]), int(size[1])],
            "layout": layout,
            "n_channels": int(n_channels or 3),
            "input_dtype": rt.input.dtype.name,
            "input_quantization": (
                [rt.input.scale[0], (rt.input.zero_point or (0,))[0]] if rt.input.scale else None
            ),
            "quantized_input": quantised,
            "output_quantization": (
                {"scale": list(rt.output.scale), "zero_point": list(rt.output.zero_point or ()),
                 "axis": rt.output.quant_axis} if rt.output.scale else None
            ),
        }
        self._info = info
        try:
            probe = self._forward([np.zeros((*info["input_size"], 3), np.uint8)])
        except CVRetrievalError:
            self._info = None
            raise
        except Exception as exc:
            self._info = None
            raise ModelError(
                f"{path} failed on a {_fmt(self._input_shape(1))} {info['input_dtype']} input "
                f"({_one_line(exc)}): check input_size, layout and output_name"
            ) from None
        info["dim"] = int(probe.shape[1])
        self.model_sha256_ = sha
        logger.info("%s: input %s %s %s, %d-d output", path, _fmt(self._input_shape(1)),
                    info["input_dtype"], layout, info["dim"])
        return info

    def _input_shape(self, n: int) -> tuple[int, ...]:
        assert self._info is not None
        h, w = self._info["input_size"]
        c = self._info["n_channels"]
        return (n, c, h, w) if self._info["layout"] == "nchw" else (n, h, w, c)

    # --- inference ------------------------------------------------------------------------
    def _normalisation(self) -> tuple[Any, Any]:
        assert self._info is not None
        if self.mean is None and self.std is None and not self._info["quantized_input"]:
            return IMAGENET_MEAN, IMAGENET_STD
        return self.mean, self.std

    def _forward(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Pooled, de-quantised, not yet normalised vectors of a list of images."""
        info = self._info
        assert info is not None
        rt = self._get_runtime()
        mean, std = self._normalisation()
        out = []
        step = rt.fixed_batch or int(self.batch_size)
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            n = len(chunk)
            if rt.fixed_batch and n < rt.fixed_batch:  # pad a model that insists on its batch size
                chunk += [chunk[-1]] * (rt.fixed_batch - n)
            x = prepare_batch(
                chunk,
                info["input_size"],
                resize=self.resize,
                channels=self.channels,
                layout=info["layout"],
                mean=mean,
                std=std,
                dtype=np.dtype(info["input_dtype"]),
                quantization=tuple(q_in) if (q_in := info["input_quantization"]) else None,
                n_channels=info["n_channels"],
            )
            y = rt.run(x)[:n]
            q = info["output_quantization"]
            if q is not None and np.asarray(y).dtype.kind in "iu":
                axis = q["axis"] if len(q["scale"]) > 1 else -1
                y = dequantize(y, q["scale"], q["zero_point"], axis=axis)
            out.append(pool(y, self.pooling, float(self.p), info["layout"]))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def extract_batch(self, images: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        """Pooled (not yet L2-normalised) vectors, one per image, in batches of ``batch_size``."""
        if len(images) == 0:
            return []
        self._inspect()
        return list(self._forward(list(images)))

    def extract(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The pooled (not yet L2-normalised) vector of one RGB uint8 image, ``(dim,)`` float32."""
        return self.extract_batch([image])[0]

    def encode(self, reduced: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        if len(reduced) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.stack(reduced))

    @property
    def dim(self) -> int:
        return int(self._inspect()["dim"])

    # --- identity, pickling, persistence -----------------------------------------------------
    def spec(self) -> dict[str, Any]:
        out = super().spec()
        if self.model_sha256_ is not None:
            out["model"] = {"path": self.model_path, "sha256": self.model_sha256_}
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runtime"] = None  # sessions do not pickle: each process opens its own
        return state

    def _save_state(self, directory: Path) -> None:
        info = self._inspect()
        record = {
            "model_path": self.model_path,
            "resolved_path": str(Path(self.model_path).expanduser().resolve()),
            "sha256": info["sha256"],
            "size": int(info["fingerprint"][0]),
            "input_size": info["input_size"],
            "layout": info["layout"],
            "input_dtype": info["input_dtype"],
            "dim": info["dim"],
        }
        write_json_atomic(directory / MODEL_STATE_FILE, record)

    def _load_state(self, directory: Path) -> None:
        path = directory / MODEL_STATE_FILE
        record = read_json_manifest(path, missing=f"the saved {self.name} embedder is incomplete")
        if "sha256" not in record:
            raise BundleError(f"{path} lacks the model's sha256: save the embedder again")
        expected = str(record["sha256"])
        given = Path(self.model_path).expanduser()
        resolved = Path(record.get("resolved_path") or self.model_path)
        if not given.is_file() and resolved.is_file():
            self.model_path = str(resolved)  # a relative path saved from another folder
        model = Path(self.model_path).expanduser()
        rebuild = f"rebuild the bundle with `cvret index ... --features {self.name}:NEW_MODEL`"
        if not model.is_file():
            raise BundleError(
                f"the model file {self.model_path} this embedder was built with is missing "
                f"(sha256 {expected}): put that file back at {resolved}, or {rebuild}"
            )
        actual = file_sha256(model)
        if actual != expected:
            raise BundleError(
                f"{model} is not the model this embedder was built with: its sha256 is {actual}, "
                f"expected {expected}; restore the original file, or {rebuild}"
            )
        self.model_sha256_ = expected
        reason = self.unavailable_reason()
        if reason:
            raise MissingExtraError(f"the saved {self.name} embedder {reason}")


def _fmt(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "(unknown)"
    return "(" + ", ".join("?" if v is None else str(v) for v in shape) + ")"


def _guess_layout(shape: tuple[int | None, ...] | None, default: str) -> str:
    if shape is None or len(shape) != 4:
        return default
    first, last = shape[1], shape[3]
    if last in (1, 3) and first not in (1, 3):
        return "nhwc"
    if first in (1, 3) and last not in (1, 3):
        return "nchw"
    return default


class ONNXEmbedder(DeepEmbedder):
    """An ONNX model run by onnxruntime (extra ``deep``); see :class:`DeepEmbedder`.

    Examples
    --------
    >>> emb = ONNXEmbedder("resnet50.onnx", pooling="gem", p=3.0)
    >>> emb.get_params()["pooling"]
    'gem'
    """

    name = "onnx"
    runtime_modules = ("onnxruntime",)


class TFLiteEmbedder(DeepEmbedder):
    """A TensorFlow Lite model run by ai-edge-litert (extra ``deep``); see :class:`DeepEmbedder`.

    Quantised models take raw uint8 pixels (detected from the input dtype) and their
    integer outputs are de-quantised with the output's scale and zero point. Batches use
    ``resize_tensor_input`` when the model allows it, else one image at a time.
    ``tflite_runtime`` or ``tensorflow`` are used when ai-edge-litert is absent.
    """

    name = "tflite"
    runtime_modules = ("ai_edge_litert", "tflite_runtime", "tensorflow")
    default_layout = "nhwc"


class TorchScriptEmbedder(DeepEmbedder):
    """A TorchScript file (``torch.jit.save``) run by torch (extra ``siamese``).

    TorchScript files declare no input shape: ``input_size`` defaults to 224 and the
    layout to NCHW.
    """

    name = "torchscript"
    extra = "siamese"
    runtime_modules = ("torch",)
