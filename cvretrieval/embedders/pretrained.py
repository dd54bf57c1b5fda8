"""``model:NAME``: a pretrained embedder of the model registry (:mod:`cvretrieval.models`).

``cvret models fetch NAME`` downloads and verifies the file into the cache; this embedder
then runs it like ``onnx:PATH`` or ``tflite:PATH`` with the registry's preprocessing
(input size, resize, mean/std, pooling) and output. A saved embedder records the model's
name and SHA-256 and refuses to load when the cached file is missing or different.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .._json import read_json_manifest, write_json_atomic
from ..errors import BundleError, MissingExtraError, ModelError
from .deep import MODEL_STATE_FILE, DeepEmbedder

__all__ = ["PretrainedEmbedder"]

#: what a setting is when neither the parameters nor the registry give it
_DEFAULTS = {"resize": "squash", "channels": "rgb", "pooling": "gap", "p": 3.0}


class PretrainedEmbedder(DeepEmbedder):
    """A registered pretrained model, by name (spec ``model:NAME``).

    Parameters
    ----------
    model_name : str
        A name of ``cvret models list``, fetched first with ``cvret models fetch NAME``.
    pooling : {'gap', 'gem', 'mac', 'none'} or None
        Overrides the registry's pooling (for models whose output is a feature map).
    p : float or None
        GeM exponent (default 3).
    batch_size, n_threads, device, views
        As for :class:`cvretrieval.embedders.deep.DeepEmbedder`.

    Attributes
    ----------
    model_sha256_ : str
        SHA-256 of the file run, set when the model is first opened (or when loaded).

    Examples
    --------
    >>> PretrainedEmbedder("resnet50-v2", device="cpu").get_params()["model_name"]
    'resnet50-v2'
    """

    name: ClassVar[str] = "model"
    path_param: ClassVar[str] = "model_name"
    runtime_modules: ClassVar[tuple[str, ...]] = (
        "onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow",
    )

    def __init__(
        self,
        model_name: str,
        pooling: str | None = None,
        p: float | None = None,
        batch_size: int = 8,
        n_threads: int | None = None,
        device: str = "auto",
        views: str = "full",
    ):
        self.model_name = model_name
        self.pooling = pooling  # type: ignore[assignment]
        self.p = p  # type: ignore[assignment]
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.device = device
        self.views = views
        self.model_sha256_: str | None = None
        self._info: dict[str, Any] | None = None
        self._runtime = None
        self._record: dict[str, Any] | None = None

    def _fetched(self) -> dict[str, Any]:
        """What ``cvret models fetch`` recorded (path, sha256, preprocessing), cached."""
        if self._record is None:
            from ..models import model_record

            self._record = model_record(str(self.model_name))
        return self._record

    @property
    def runtime_kind(self) -> str:  # type: ignore[override]
        return str(self._fetched()["runtime"])

    @property
    def model_path(self) -> str:  # type: ignore[override]
        """The cached file this embedder runs."""
        return str(self._fetched()["path"])

    def _setting(self, key: str) -> Any:
        own = {"pooling": self.pooling, "p": self.p}.get(key)
        if own is not None:
            return own
        if key == "layout":
            return None
        value = self._fetched().get(key)
        return _DEFAULTS.get(key) if value is None else value

    def _model_file(self) -> Path:
        path = Path(self.model_path)
        if not path.is_file():
            raise ModelError(
                f"model {self.model_name!r} is missing from the cache ({path}): run "
                f"`cvret models fetch {self.model_name}`"
            )
        return path

    def spec(self) -> dict[str, Any]:
        out = {"name": self.name, "params": self.get_params()}
        if self.model_sha256_ is not None:
            out["model"] = {"name": self.model_name, "sha256": self.model_sha256_}
        return out

    def _save_state(self, directory: Path) -> None:
        info = self._inspect()
        write_json_atomic(directory / MODEL_STATE_FILE, {
            "model_name": self.model_name, "sha256": info["sha256"],
            "input_size": info["input_size"], "layout": info["layout"], "dim": info["dim"],
        })

    def _load_state(self, directory: Path) -> None:
        path = directory / MODEL_STATE_FILE
        record = read_json_manifest(path, missing=f"the saved {self.name} embedder is incomplete")
        if "sha256" not in record:
            raise BundleError(f"{path} lacks the model's sha256: save the embedder again")
        expected = str(record["sha256"])
        try:
            actual = self._fetched()["sha256"]
        except ModelError as exc:
            raise BundleError(f"this bundle embeds with model {self.model_name!r}: {exc}") from None
        if actual != expected:
            raise BundleError(
                f"the cached model {self.model_name!r} is not the one this embedder was built "
                f"with (sha256 {actual[:12]}, expected {expected[:12]}): rebuild the bundle"
            )
        self.model_sha256_ = expected
        reason = self.unavailable_reason()
        if reason:
            raise MissingExtraError(f"the saved {self.name} embedder {reason}")
