"""Pretrained networks as embedders: ONNX, TFLite and TorchScript model files.

Every adapter does the same thing around a different runtime: resize the image to the
model's input size, order and normalise the pixels as the model expects
(:mod:`~cvretrieval.embedders.preprocess`), run a batch
(:mod:`~cvretrieval.embedders.runtimes`, on the CPU or a GPU: ``device``), de-quantise an
integer output, pool a feature map into one vector (GAP, GeM or MAC) and L2-normalise
it, so the index's ``ip`` metric is the cosine similarity.

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

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest, write_json_atomic
from ..errors import BundleError, CVRetrievalError, MissingExtraError, ModelError
from .base import Embedder, l2_normalize
from .devices import check_device
from .pooling import LAYOUTS, POOLINGS, dequantize, pool
from .preprocess import (
    CHANNEL_ORDERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_MODES,
    as_hw,
    channel_triple,
    image_views,
    input_geometry,
    parse_views,
    prepare_batch,
    resize_image,
)
from .preprocess import (
    format_shape as _fmt,
)
from .runtimes import (
    Runtime,
    file_fingerprint,
    file_sha256,
    in_worker_process,
    missing_extra,
    one_line,
    open_runtime,
)

logger = logging.getLogger(__name__)

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
    device : {'auto', 'cpu', 'cuda'}, default 'auto'
        Where the network runs: ``auto`` uses a GPU when one is usable (onnxruntime-gpu's
        CUDA provider; torch with CUDA), else the CPU; ``cuda`` without one is an error
        naming what is missing. TFLite runs on the CPU. Vectors do not depend on it beyond
        floating-point rounding.
    views : str, default 'full'
        Test-time views of each image (:func:`parse_views`): ``full``, ``flip``, ``cropF``
        (the central fraction ``F`` of each side), ``cropF-flip``, comma-separated; the
        vector is the mean of the views' L2-normalised vectors (one network pass per view).
        ``full,crop0.8`` scored class retrieval higher than ``full`` on held-out Caltech
        classes (README, "Siamese heads on unseen classes").

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
    #: which runtime opens the file (see :func:`cvretrieval.embedders.runtimes.open_runtime`)
    runtime_kind: ClassVar[str] = ""

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
        device: str = "auto",
        views: str = "full",
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
        self.device = device
        self.views = views
        self.model_sha256_: str | None = None
        self._info: dict[str, Any] | None = None
        self._runtime: Runtime | None = None

    # --- availability and validation -----------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """``None`` when the runtime is installed, else what to install."""
        if any(importlib.util.find_spec(m.split(".")[0]) for m in cls.runtime_modules):
            return None
        return missing_extra(cls.extra, cls.runtime_modules[0].split(".")[0].replace("_", "-"))

    def _setting(self, key: str) -> Any:
        """The value of the setting ``key`` (a parameter here; subclasses may fill it in)."""
        return getattr(self, key)

    def _check_params(self) -> None:
        s = self._setting
        if s("input_size") is not None:
            as_hw(s("input_size"))
        checks = [
            ("resize", s("resize"), RESIZE_MODES),
            ("channels", s("channels"), CHANNEL_ORDERS),
            ("pooling", s("pooling"), POOLINGS),
        ]
        if s("layout") is not None:
            checks.append(("layout", s("layout"), LAYOUTS))
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")
        if not (isinstance(s("p"), (int, float)) and s("p") > 0):
            raise ValueError(f"p (the GeM exponent) must be > 0, got {s('p')!r}")
        parse_views(self.views)
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        for key in ("mean", "std"):
            if s(key) is not None:
                channel_triple(s(key), key)
        check_device(self.device)

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
        return 1 if in_worker_process() else None

    def _get_runtime(self) -> Runtime:
        s = self._setting
        if self._runtime is None:
            path = self._model_file()
            fp = file_fingerprint(path)
            if self._info is not None and tuple(self._info["fingerprint"]) != fp:
                current = file_sha256(path)
                if current != self._info["sha256"]:
                    raise ModelError(
                        f"{path} changed since it was opened (sha256 {current[:12]}, expected "
                        f"{self._info['sha256'][:12]}): restore it or start again with the "
                        "new model"
                    )
                self._info["fingerprint"] = fp
            self._runtime = open_runtime(
                self.runtime_kind, str(path.resolve()), self._threads(), s("output_name"), fp,
                check_device(self.device),
            )
        return self._runtime

    def _inspect(self) -> dict[str, Any]:
        """Open the model once and learn input size, layout, dtype and output dimension."""
        s = self._setting
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
        layout, n_channels, size = input_geometry(
            rt.input.shape, s("layout"), s("input_size"), self.default_layout, str(path)
        )
        quantised = rt.input.dtype.kind in "iu"
        info = {
            "sha256": sha,
            "fingerprint": list(file_fingerprint(path)),
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
                f"({one_line(exc)}): check input_size, layout and output_name"
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
        s = self._setting
        assert self._info is not None
        if s("mean") is None and s("std") is None and not self._info["quantized_input"]:
            return IMAGENET_MEAN, IMAGENET_STD
        return s("mean"), s("std")

    def _forward(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """Pooled, de-quantised, not yet normalised vectors of a list of images."""
        s = self._setting
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
                resize=s("resize"),
                channels=s("channels"),
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
            out.append(pool(y, s("pooling"), float(s("p")), info["layout"]))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def extract_batch(self, images: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        """Pooled (not yet L2-normalised) vectors, one per image, in batches of ``batch_size``."""
        if len(images) == 0:
            return []
        self._inspect()
        views = parse_views(self.views)
        if views == ((1.0, False),):
            return list(self._forward(list(images)))
        Y = self._forward([v for im in images for v in image_views(im, views)])
        Y = l2_normalize(Y).reshape(len(images), len(views), -1)
        return list(Y.mean(axis=1))

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


class ONNXEmbedder(DeepEmbedder):
    """An ONNX model run by onnxruntime (extra ``deep``); see :class:`DeepEmbedder`.

    Examples
    --------
    >>> emb = ONNXEmbedder("resnet50.onnx", pooling="gem", p=3.0)
    >>> emb.get_params()["pooling"]
    'gem'
    """

    name = "onnx"
    runtime_kind = "onnx"
    runtime_modules = ("onnxruntime",)


class TFLiteEmbedder(DeepEmbedder):
    """A TensorFlow Lite model run by ai-edge-litert (extra ``deep``); see :class:`DeepEmbedder`.

    Quantised models take raw uint8 pixels (detected from the input dtype) and their
    integer outputs are de-quantised with the output's scale and zero point. Batches use
    ``resize_tensor_input`` when the model allows it, else one image at a time.
    ``tflite_runtime`` or ``tensorflow`` are used when ai-edge-litert is absent.
    """

    name = "tflite"
    runtime_kind = "tflite"
    runtime_modules = ("ai_edge_litert", "tflite_runtime", "tensorflow")
    default_layout = "nhwc"


class TorchScriptEmbedder(DeepEmbedder):
    """A TorchScript file (``torch.jit.save``) run by torch (extra ``siamese``).

    TorchScript files declare no input shape: ``input_size`` defaults to 224 and the
    layout to NCHW.
    """

    name = "torchscript"
    runtime_kind = "torchscript"
    extra = "siamese"
    runtime_modules = ("torch",)
