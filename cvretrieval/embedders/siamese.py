"""``siamese:MODEL_DIR``: a base embedder followed by a trained head, run with onnxruntime.

``MODEL_DIR`` is written by :func:`cvretrieval.siamese.train_siamese` (``cvret train
siamese``): ``siamese.json``, the fitted base embedder in ``base/`` and the head in
``head.onnx`` (and, for a fine-tuned CNN, the network up to GeM pooling in
``backbone.onnx``, the base's model file). Embedding needs onnxruntime (extra ``deep``)
and whatever the base needs, never PyTorch.

The embedder is staged like its base: ``extract``, ``reduce`` and ``fit_corpus`` are the
base's (so a :class:`~cvretrieval.retriever.Retriever` runs them in parallel worker
processes), and ``encode`` runs the base's ``encode`` then the head.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._json import read_json_manifest
from ..errors import BundleError, MissingExtraError
from .base import Embedder, l2_normalize
from .devices import check_device, check_onnx_session, onnx_providers
from .runtimes import file_sha256

logger = logging.getLogger(__name__)

MODEL_FORMAT = "cvretrieval-siamese"
MODEL_FORMAT_VERSION = 1
#: file written next to ``embedder.json`` when a bundle saves this embedder
REF_FILE = "siamese_ref.json"


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``MODEL_DIR/siamese.json``; :class:`BundleError` when unusable."""
    d = Path(model_dir)
    path = d / "siamese.json"
    if not d.is_dir():
        raise BundleError(
            f"Siamese model folder {d} does not exist: train one with `cvret train siamese`"
        )
    meta = read_json_manifest(
        path, missing=f"{d} is not a (complete) Siamese model; train one with `cvret train siamese`"
    )
    if meta.get("format") != MODEL_FORMAT:
        raise BundleError(f"{path} is not a cvretrieval Siamese model description")
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise BundleError(
            f"{path} has format_version {meta.get('format_version')!r}; this cvretrieval reads "
            f"{MODEL_FORMAT_VERSION}: train the model again with this version"
        )
    head = meta.get("head")
    if not isinstance(head, dict) or not {"file", "sha256", "in_dim", "out_dim"} <= set(head):
        raise BundleError(f"{path} lacks the head's file, sha256 or dimensions")
    if not isinstance(meta.get("base"), dict) or "name" not in meta["base"]:
        raise BundleError(f"{path} lacks the base embedder's description")
    return meta


def _takes_device(name: str) -> bool:
    """Whether the base embedder class ``name`` runs a network (has a ``device``)."""
    import inspect

    from . import embedder_class

    try:
        return "device" in inspect.signature(embedder_class(name)).parameters
    except ValueError:  # an unknown base: loading it says so
        return False


class SiameseEmbedder(Embedder):
    """The base embedder of a trained Siamese model, then its head (ONNX), L2-normalised.

    Parameters
    ----------
    model_dir : str
        A folder written by :func:`cvretrieval.siamese.train_siamese`.
    device : {'auto', 'cpu', 'cuda'}, default 'auto'
        Where the head runs (onnxruntime's CUDA provider with ``onnxruntime-gpu``) and,
        when the base is a network (``onnx:``, ``torchscript:``, a fine-tuned
        ``backbone.onnx``), where the base runs; ``auto`` picks the GPU when there is one.

    Attributes
    ----------
    meta_ : dict
        The model's ``siamese.json``.
    base_ : Embedder
        The fitted base embedder (from ``MODEL_DIR/base``).
    head_sha256_ : str
        SHA-256 of ``head.onnx``.

    The folder is read on first use (``dim``, ``embed``, ...), not in ``__init__``.

    Raises
    ------
    BundleError
        If the folder is not a complete Siamese model or ``head.onnx`` is not the file the
        model was trained with (its SHA-256 differs from the one in ``siamese.json``).
    """

    name = "siamese"

    def __init__(self, model_dir: str, device: str = "auto"):
        self.model_dir = str(model_dir)
        self.device = check_device(device)
        self._loaded: dict[str, Any] | None = None
        self._session: Any = None

    # --- loading ----------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self._loaded is None:
            d = Path(self.model_dir).expanduser()
            meta = read_model_meta(d)
            head_path = d / meta["head"]["file"]
            self._loaded = {
                "meta": meta,
                "head_path": head_path,
                "sha256": self._check_head(head_path, meta),
                "base": self._load_base(d, meta, self.device),
            }
        return self._loaded

    @property
    def meta_(self) -> dict[str, Any]:
        return self._load()["meta"]

    @property
    def base_(self) -> Embedder:
        return self._load()["base"]

    @property
    def head_sha256_(self) -> str:
        return self._load()["sha256"]

    @staticmethod
    def _check_head(head_path: Path, meta: dict[str, Any]) -> str:
        if not head_path.is_file():
            raise BundleError(f"{head_path} is missing: the Siamese model is incomplete")
        digest = file_sha256(head_path)
        if digest != meta["head"]["sha256"]:
            raise BundleError(
                f"{head_path} has SHA-256 {digest[:12]}… but siamese.json records "
                f"{meta['head']['sha256'][:12]}…: the head was replaced or corrupted; "
                "train the model again"
            )
        return digest

    @staticmethod
    def _load_base(model_dir: Path, meta: dict[str, Any], device: str = "auto") -> Embedder:
        from . import load_embedder, make_embedder

        base_dir = model_dir / meta["base"].get("dir", "base")
        # a network base runs where the head runs; other bases have no device
        on = {"device": device} if _takes_device(meta["base"]["name"]) else {}
        if (base_dir / "embedder.json").is_file():
            # a network file kept inside the model folder (a fine-tuned backbone) is found
            # there, wherever the folder was moved
            inside = meta["base"].get("model_file")
            overrides = {"model_path": str(model_dir / inside)} if inside else {}
            base = load_embedder(base_dir, **overrides, **on)
        else:
            base = make_embedder(meta["base"]["name"], **{**meta["base"].get("params", {}),
                                                          **on})
            if base.needs_fit:
                raise BundleError(
                    f"{base_dir} is missing and the base embedder {base.name!r} needs fitted "
                    "state: the Siamese model is incomplete; train it again"
                )
        if base.dim != int(meta["head"]["in_dim"]):
            raise BundleError(
                f"the base embedder gives {base.dim}-d vectors but the head of {model_dir} "
                f"takes {meta['head']['in_dim']}-d ones"
            )
        return base

    def _get_session(self) -> Any:
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise MissingExtraError(
                    "siamese: embedders need onnxruntime (the 'deep' extra): "
                    f"pip install 'cvretrieval[deep]' ({exc})"
                ) from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1  # a small MLP; worker processes already run in parallel
            opts.inter_op_num_threads = 1
            path = str(self._load()["head_path"])
            self._session = ort.InferenceSession(path, sess_options=opts,
                                                 providers=onnx_providers(self.device, ort))
            check_onnx_session(self.device, self._session, path)
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None  # sessions are not picklable: each process opens its own
        return state

    # --- stages -----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.meta_["dim"])

    @property
    def needs_fit(self) -> bool:
        return False

    @property
    def is_fitted(self) -> bool:
        return self.base_.is_fitted

    def n_fit_images(self, n_total: int) -> int:
        return self.base_.n_fit_images(n_total)

    def extract(self, image: NDArray[np.uint8]) -> Any:
        return self.base_.extract(image)

    def extract_batch(self, images: Sequence[NDArray[np.uint8]]) -> list[Any]:
        return self.base_.extract_batch(images)

    def fit(self, samples: Sequence[Any]) -> SiameseEmbedder:
        return self  # the base was fitted when the model was trained

    def reduce(self, features: Any) -> Any:
        return self.base_.reduce(features)

    def fit_corpus(self, reduced: Sequence[Any]) -> SiameseEmbedder:
        # the saved base is fitted (its idf are the training images'): the head was trained
        # on exactly those vectors, so corpus statistics are only learned if they are missing
        if not self.base_.is_fitted:
            self.base_.fit_corpus(reduced)
        return self

    def encode(self, reduced: Sequence[Any], batch_size: int = 1024) -> NDArray[np.float32]:
        """Base vectors through the head: ``(len(reduced), dim)`` float32, unit rows."""
        if len(reduced) == 0:
            return np.zeros((0, self.dim), np.float32)
        X = np.ascontiguousarray(self.base_.encode(reduced), dtype=np.float32)
        return self.apply_head(X, batch_size)

    def apply_head(self, X: NDArray[np.floating], batch_size: int = 1024) -> NDArray[np.float32]:
        """Run the head on base vectors ``(n, in_dim)``; ``(n, dim)`` float32, unit rows."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != int(self.meta_["head"]["in_dim"]):
            raise ValueError(
                f"base vectors have shape {X.shape}; the head takes "
                f"(n, {self.meta_['head']['in_dim']})"
            )
        sess = self._get_session()
        name = sess.get_inputs()[0].name
        out = [sess.run(None, {name: X[i : i + batch_size]})[0]
               for i in range(0, len(X), batch_size)]
        Y = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        return l2_normalize(Y)

    # --- persistence ------------------------------------------------------------------
    def _save_state(self, directory: Path) -> None:
        ref = {
            "model_dir": str(Path(self.model_dir).resolve()),
            "head_sha256": self.head_sha256_,
            "dim": self.dim,
        }
        (directory / REF_FILE).write_text(json.dumps(ref, indent=2))

    def _load_state(self, directory: Path) -> None:
        path = directory / REF_FILE
        try:
            ref = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(
                f"{path} is missing: the saved Siamese embedder is incomplete"
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} is not valid JSON ({exc})") from None
        if not Path(self.model_dir).expanduser().is_dir() and ref.get("model_dir"):
            self.model_dir = str(ref["model_dir"])  # a relative path saved from another folder
        if ref.get("head_sha256") != self.head_sha256_:
            raise BundleError(
                f"the Siamese model {self.model_dir} changed since this was saved: its head.onnx "
                f"has SHA-256 {self.head_sha256_[:12]}…, the bundle was built with "
                f"{str(ref.get('head_sha256'))[:12]}…; rebuild the bundle with this model "
                "(cvret index … --features siamese:MODEL_DIR) or restore the model it was "
                "built with"
            )
