"""ONNX local-feature detectors: any model mapping an image to key points, scores, descriptors.

``--detector onnx:model.onnx`` (or ``make_detector("onnx:model.onnx")``) runs the model
with onnxruntime (the ``onnx`` extra). The model must output *per-key-point* arrays, as
post-processed SuperPoint / ALIKED / DISK exports do (``keypoints (1, N, 2)``,
``scores (1, N)``, ``descriptors (1, N, D)``), or as DELF does (``locations (N, 2)``
``y, x``, ``attention (N,)``, ``descriptors (N, D)``); dense heat maps must be decoded
inside the graph.

Options, first found wins: keyword arguments (``detector_options``), then a JSON sidecar
next to the model (``model.json`` or ``model.onnx.json``), then the model's metadata
property ``cvretrieval.detector`` (a JSON object), then what the graph's signature implies.

==================  ==========================================================================
option              meaning (default)
==================  ==========================================================================
input_name          the image input (the first input)
input_size          ``None``: the image's own size (rounded down to ``size_multiple``); an int:
                    the long side, aspect kept; ``[h, w]``: exactly; a static input shape wins
size_multiple       sides are rounded down to a multiple of this (8: SuperPoint's cells)
grayscale           feed one channel (from a channel dimension of 1, else RGB)
layout              ``nchw``, ``nhwc``, ``hwc`` or ``hw`` (from the input's rank and shape)
normalize           ``unit`` (x / 255), ``none`` (0..255), ``imagenet`` (mean/std of ImageNet)
mean, std           per-channel, on the ``unit`` scale; override ``normalize``'s
keypoints           output name of the key points (by name: keypoint/kpt/location/point; else
                    the 1st output)
scores              output name of the scores (score/attention/confidence; else the 2nd of 3
                    outputs; ``null``: none)
descriptors         output name of the descriptors (descriptor/desc/feature; else the last)
keypoint_order      ``xy`` or ``yx`` (DELF's locations are ``yx``)
keypoint_coords     ``pixels`` of the network input, ``unit`` ([0, 1]) or ``signed`` ([-1, 1])
l2_normalize        L2-normalise float descriptors (False)
score_threshold     drop key points scoring below this (None)
extra_inputs        ``{name: value}`` constants for other inputs (DELF's thresholds, scales)
descriptor_dim      ``D`` when the output shape does not say (else found by a dry run)
threads             onnxruntime intra-op threads (1: one per worker process)
min_image_size      smaller images give no key points (16)
==================  ==========================================================================
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..errors import MissingExtraError
from .local import LocalFeatures

__all__ = ["METADATA_KEY", "ONNXDetector", "read_detector_options"]

logger = logging.getLogger(__name__)

METADATA_KEY = "cvretrieval.detector"
OPTIONS = (
    "input_name", "input_size", "size_multiple", "grayscale", "layout", "normalize", "mean",
    "std", "keypoints", "scores", "descriptors", "keypoint_order", "keypoint_coords",
    "l2_normalize", "score_threshold", "extra_inputs", "descriptor_dim", "threads",
    "min_image_size",
)
_NAMES = {
    "keypoints": ("keypoint", "kpt", "location", "point"),
    "scores": ("score", "attention", "confidence", "response"),
    "descriptors": ("descriptor", "desc", "feature"),
}
_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def read_detector_options(path: str | Path) -> dict[str, Any]:
    """Options stored with a model: the JSON sidecar (``model.json`` / ``model.onnx.json``),
    else the model's ``cvretrieval.detector`` metadata property; ``{}`` when neither."""
    p = Path(path)
    for side in (p.with_suffix(".json"), p.with_name(p.name + ".json")):
        if side.is_file():
            try:
                opts = json.loads(side.read_text())
            except ValueError as exc:
                raise ValueError(f"{side} is not valid JSON ({exc}); fix or remove it") from None
            if not isinstance(opts, dict):
                raise ValueError(f"{side} must hold a JSON object of detector options")
            return opts
    return {}


def _check_options(opts: dict[str, Any], where: str) -> None:
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown ONNX detector option(s) {unknown} in {where}; "
                         f"valid: {', '.join(OPTIONS)}")


class ONNXDetector:
    """A local-feature detector running an ONNX model (see the module docstring for options).

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file.
    n_features : int, default 1000
        Key points kept, the highest-scoring.
    **options
        See the module docstring; they override the sidecar and the model's metadata.
    """

    grayscale_input = False

    def __init__(self, path: str | Path, n_features: int = 1000, **options: Any) -> None:
        self.path = str(path)
        self.n_features = int(n_features)
        self.name = f"onnx:{self.path}"
        _check_options(options, "the detector options")
        stored = read_detector_options(self.path)
        _check_options(stored, f"the sidecar of {self.path}")
        self._given = {**stored, **options}
        self._session: Any = None
        self._dim: int | None = self._given.get("descriptor_dim")
        self._binary: bool | None = None
        self._resolve()

    # ------------------------------------------------------------------ set-up
    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle; rebuilt lazily
        return {**self.__dict__, "_session": None}

    def _open(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ModuleNotFoundError:
                raise MissingExtraError(
                    "ONNX detectors need onnxruntime: pip install 'cvretrieval[onnx]'"
                ) from None
            so = ort.SessionOptions()
            so.intra_op_num_threads = int(self._given.get("threads", 1))
            so.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(
                    self.path, so, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ValueError(f"cannot load ONNX detector {self.path}: {exc}") from None
        return self._session

    def _resolve(self) -> None:
        """Fill every option from the given ones, the model's metadata and its signature."""
        sess = self._open()
        meta = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta:
            stored = json.loads(meta)
            _check_options(stored, f"the metadata of {self.path}")
            self._given = {**stored, **self._given}
        g = self._given
        inputs = {i.name: i for i in sess.get_inputs()}
        self.input_name = g.get("input_name") or sess.get_inputs()[0].name
        if self.input_name not in inputs:
            raise ValueError(f"{self.path} has no input {self.input_name!r}; "
                             f"inputs: {', '.join(inputs)}")
        inp = inputs[self.input_name]
        shape = list(inp.shape)
        self.input_uint8 = "uint8" in inp.type
        rank = len(shape)
        layout = g.get("layout")
        if layout is None:
            if rank == 4:
                layout = "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
            else:
                layout = {3: "hwc", 2: "hw"}.get(rank)
        if layout not in ("nchw", "nhwc", "hwc", "hw"):
            raise ValueError(f"layout must be nchw, nhwc, hwc or hw, got {layout!r}")
        self.layout = layout
        c_axis = {"nchw": 1, "nhwc": 3, "hwc": 2}.get(layout)
        channels = shape[c_axis] if c_axis is not None else 1
        grayscale = g.get("grayscale")
        self.grayscale = bool(channels == 1 if grayscale is None else grayscale)
        hw_axes = {"nchw": (2, 3), "nhwc": (1, 2), "hwc": (0, 1), "hw": (0, 1)}[layout]
        static = [shape[a] for a in hw_axes]
        self.static_size = tuple(static) if all(isinstance(v, int) for v in static) else None
        self.input_size = g.get("input_size")
        self.size_multiple = int(g.get("size_multiple", 8))
        norm = g.get("normalize", "unit")
        if norm not in ("unit", "none", "imagenet"):
            raise ValueError(f"normalize must be unit, none or imagenet, got {norm!r}")
        self.normalize = norm
        mean, std = (_IMAGENET if norm == "imagenet" else (None, None))
        self.mean = g.get("mean", mean)
        self.std = g.get("std", std)
        outputs = [o.name for o in sess.get_outputs()]
        self.outputs = {k: self._output(k, outputs) for k in ("keypoints", "scores", "descriptors")}
        self.keypoint_order = g.get("keypoint_order", "xy")
        self.keypoint_coords = g.get("keypoint_coords", "pixels")
        if self.keypoint_order not in ("xy", "yx"):
            raise ValueError(f"keypoint_order must be xy or yx, got {self.keypoint_order!r}")
        if self.keypoint_coords not in ("pixels", "unit", "signed"):
            raise ValueError("keypoint_coords must be pixels, unit or signed, "
                             f"got {self.keypoint_coords!r}")
        self.l2_normalize = bool(g.get("l2_normalize", False))
        self.score_threshold = g.get("score_threshold")
        self.extra_inputs = dict(g.get("extra_inputs") or {})
        self.min_image_size = int(g.get("min_image_size", 16))
        out = {o.name: o for o in sess.get_outputs()}[self.outputs["descriptors"]]
        last = out.shape[-1] if out.shape else None
        if self._dim is None and isinstance(last, int):
            self._dim = int(last)
        self._binary = "uint8" in out.type

    def _output(self, role: str, outputs: list[str]) -> str | None:
        g = self._given
        if role in g:
            name = g[role]
            if name is not None and name not in outputs:
                raise ValueError(f"{self.path} has no output {name!r} ({role}); "
                                 f"outputs: {', '.join(outputs)}")
            return name
        for o in outputs:
            if any(w in o.lower() for w in _NAMES[role]):
                return o
        if role == "scores":
            return outputs[1] if len(outputs) >= 3 else None
        if len(outputs) < 2:
            raise ValueError(f"{self.path} has {len(outputs)} output(s); a detector needs key "
                             "points and descriptors (name them with the keypoints/descriptors "
                             "options)")
        return outputs[0] if role == "keypoints" else outputs[-1]

    @property
    def descriptor_dim(self) -> int:
        if self._dim is None:  # dynamic output shape: one dry run on a textured image
            rng = np.random.default_rng(0)
            probe = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            self._dim = int(self._run(probe)[2].shape[1])
        return int(self._dim)

    @property
    def binary(self) -> bool:
        return bool(self._binary)

    # ------------------------------------------------------------------ inference
    def _network_size(self, h: int, w: int) -> tuple[int, int]:
        if self.static_size is not None:
            return int(self.static_size[0]), int(self.static_size[1])
        size = self.input_size
        if isinstance(size, (list, tuple)):
            th, tw = int(size[0]), int(size[1])
        elif size is not None:
            s = float(size) / max(h, w)
            th, tw = round(h * s), round(w * s)
        else:
            th, tw = h, w
        m = max(self.size_multiple, 1)
        return max(m, th // m * m), max(m, tw // m * m)

    def _prepare(self, image: NDArray[np.uint8]) -> tuple[NDArray[Any], float, float]:
        img: NDArray[Any] = np.asarray(image)
        if img.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got dtype {img.dtype}")
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {img.shape}")
        img = img[:, :, :3]
        h, w = img.shape[:2]
        th, tw = self._network_size(h, w)
        if (th, tw) != (h, w):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        x: NDArray[Any]
        if self.grayscale:
            x = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]
        else:
            x = img
        if not self.input_uint8:
            x = x.astype(np.float32)
            if self.normalize != "none" or self.mean is not None:
                x /= 255.0
            if self.mean is not None:
                mean = np.asarray(self.mean, np.float32)[: x.shape[2]]
                std = np.asarray(self.std if self.std is not None else 1.0, np.float32)
                x = (x - mean) / (std[: x.shape[2]] if std.ndim else std)
        if self.layout in ("nchw",):
            x = x.transpose(2, 0, 1)[None]
        elif self.layout == "nhwc":
            x = x[None]
        elif self.layout == "hw":
            x = x[:, :, 0]
        return np.ascontiguousarray(x), w / tw, h / th

    def _run(self, image: NDArray[np.uint8]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        x, sx, sy = self._prepare(image)
        names = [self.outputs["keypoints"], self.outputs["descriptors"]]
        if self.outputs["scores"] is not None:
            names.append(self.outputs["scores"])
        feeds = {self.input_name: x}
        for k, v in self.extra_inputs.items():
            feeds[k] = np.asarray(v, np.float32 if isinstance(v, float) else None)
        res = self._open().run(names, feeds)
        kp = np.asarray(res[0], np.float32).reshape(-1, 2)
        n = kp.shape[0]
        desc = np.asarray(res[1])
        desc = desc.reshape(n, -1) if n else desc.reshape(0, desc.shape[-1] if desc.ndim else 0)
        scores = (np.asarray(res[2], np.float32).reshape(-1) if len(res) > 2
                  else np.ones(n, np.float32))
        if scores.shape[0] != n or desc.shape[0] != n:
            raise ValueError(f"{self.path} gave {n} key points, {scores.shape[0]} scores and "
                             f"{desc.shape[0]} descriptors: check the output names")
        if self.keypoint_order == "yx":
            kp = kp[:, ::-1]
        th, tw = x.shape[-2:] if self.layout in ("nchw", "hw") else x.shape[-3:-1]
        if self.keypoint_coords == "unit":
            kp = kp * np.array([tw - 1, th - 1], np.float32)
        elif self.keypoint_coords == "signed":
            kp = (kp + 1.0) * 0.5 * np.array([tw - 1, th - 1], np.float32)
        kp = kp * np.array([sx, sy], np.float32)
        return np.ascontiguousarray(kp, np.float32), scores, desc

    def detect(self, image: NDArray[np.uint8]) -> LocalFeatures:
        """Key points, scores and descriptors of an ``(H, W, 3)`` RGB or ``(H, W)`` image."""
        img = np.asarray(image)
        shape = (int(img.shape[0]), int(img.shape[1]))
        if min(shape) < self.min_image_size:
            return LocalFeatures.empty(self.descriptor_dim, self.binary, shape)
        kp, scores, desc = self._run(img)
        keep = np.isfinite(scores) & np.isfinite(kp).all(axis=1)
        if self.score_threshold is not None:
            keep &= scores >= float(self.score_threshold)
        idx = np.flatnonzero(keep)
        if idx.size > self.n_features:
            idx = idx[np.argsort(-scores[idx], kind="stable")[: self.n_features]]
        kp, scores, desc = kp[idx], scores[idx], desc[idx]
        if self.binary:
            desc = np.ascontiguousarray(desc, np.uint8)
        else:
            desc = np.ascontiguousarray(desc, np.float32)
            if self.l2_normalize and len(desc):
                desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        if self._dim is None:
            self._dim = int(desc.shape[1])
        n = len(idx)
        z = np.zeros(n, np.float32)
        return LocalFeatures(kp, desc, z, np.full(n, -1.0, np.float32), shape, scores=scores)
