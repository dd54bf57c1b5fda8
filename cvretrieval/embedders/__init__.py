"""Embedders and their registry: one name selects any model everywhere.

Spec strings:

- ``hog``;
- ``bovw``, ``vlad`` and ``asmk`` with an optional detector suffix (``bovw-orb``, ``vlad-sift``,
  detectors ``sift``, ``rootsift``, ``orb``, ``akaze``, ``brisk``);
- a model file, ``onnx:PATH``, ``tflite:PATH``, ``torchscript:PATH``, or a trained Siamese
  model folder, ``siamese:MODEL_DIR``, or precomputed vectors, ``vectors:FILE.npz`` (the
  part after the first colon fills the class's ``path_param``);
- a registered pretrained model, ``model:NAME`` (``cvret models list``; fetched first with
  ``cvret models fetch NAME``);
- third-party embedders registered under the entry-point group ``cvretrieval.embedders``:
  the entry point's name, ``DISTRIBUTION:name``, or ``name:PATH`` when the class declares
  a ``path_param``.

Built-ins other than ``hog`` and ``bovw`` live in modules imported only when used, so a
missing optional dependency only makes that embedder unavailable
(see :func:`available_embedders`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..errors import BundleError, MissingExtraError
from ..features.local import DETECTORS
from .base import Embedder, l2_normalize, read_embedder_meta
from .classical import BoVWEmbedder, HOGEmbedder

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cvretrieval.embedders"


@dataclass(frozen=True)
class LazyEntry:
    """A built-in embedder whose module is imported on first use."""

    module: str
    cls: str
    #: the ``__init__`` parameter a ``name:PATH`` spec fills (``None``: no path form)
    path_param: str | None = None


#: built-ins imported with the package
BUILTINS: dict[str, type[Embedder]] = {"hog": HOGEmbedder, "bovw": BoVWEmbedder}
#: built-ins imported on demand
LAZY_BUILTINS: dict[str, LazyEntry] = {
    "vlad": LazyEntry("cvretrieval.embedders.vlad", "VLADEmbedder"),
    "asmk": LazyEntry("cvretrieval.embedders.asmk", "ASMKEmbedder"),
    "onnx": LazyEntry("cvretrieval.embedders.deep", "ONNXEmbedder", "model_path"),
    "tflite": LazyEntry("cvretrieval.embedders.deep", "TFLiteEmbedder", "model_path"),
    "torchscript": LazyEntry("cvretrieval.embedders.deep", "TorchScriptEmbedder", "model_path"),
    "siamese": LazyEntry("cvretrieval.embedders.siamese", "SiameseEmbedder", "model_dir"),
    "model": LazyEntry("cvretrieval.embedders.pretrained", "PretrainedEmbedder", "model_name"),
    "vectors": LazyEntry("cvretrieval.embedders.vectors", "VectorsEmbedder", "path"),
}
#: families that take a local detector as a suffix: ``bovw-sift``, ``vlad-orb``
LOCAL_FAMILIES = ("bovw", "vlad", "asmk")

__all__ = [
    "BUILTINS",
    "BoVWEmbedder",
    "ENTRY_POINT_GROUP",
    "Embedder",
    "HOGEmbedder",
    "LAZY_BUILTINS",
    "available_embedders",
    "embedder_class",
    "l2_normalize",
    "load_embedder",
    "make_embedder",
    "parse_spec",
]


def _plugins() -> dict[str, Any]:
    """Entry points of the group by name, and by ``distribution:name``."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
        dist = getattr(ep, "dist", None)
        if dist is not None and getattr(dist, "name", None):
            found.setdefault(f"{dist.name.lower()}:{ep.name}", ep)
    return found


def _builtin_names() -> list[str]:
    return [*BUILTINS, *LAZY_BUILTINS]


def _load_lazy(name: str) -> type[Embedder]:
    entry = LAZY_BUILTINS[name]
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            raise ValueError(
                f"embedder {name!r} is not available: its module {entry.module} is not part of "
                "this installation"
            ) from None
        raise MissingExtraError(
            f"embedder {name!r} needs {exc.name}, which is not installed"
        ) from None
    return getattr(module, entry.cls)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a spec string into a registry name and the parameters it implies.

    Examples
    --------
    >>> parse_spec("bovw-orb")
    ('bovw', {'detector': 'orb'})
    >>> parse_spec("hog")
    ('hog', {})
    >>> parse_spec("tflite:models/Mobile Net.tflite")
    ('tflite', {'model_path': 'models/Mobile Net.tflite'})
    >>> parse_spec("siamese:runs/best")
    ('siamese', {'model_dir': 'runs/best'})
    """
    s = spec.strip()
    low = s.lower()
    if low in BUILTINS or low in LAZY_BUILTINS:
        return low, {}
    family, _, suffix = low.partition("-")
    if family in LOCAL_FAMILIES and suffix in DETECTORS:
        return family, {"detector": suffix}
    prefix, colon, rest = s.partition(":")
    if colon:
        entry = LAZY_BUILTINS.get(prefix.lower())
        if entry is not None and entry.path_param:
            if not rest.strip():
                raise ValueError(f"{spec!r} names no file: write {prefix.lower()}:PATH")
            return prefix.lower(), {entry.path_param: rest}
        plugins = _plugins()
        if s not in plugins and prefix in plugins:
            path_param = getattr(plugins[prefix].load(), "path_param", None)
            if path_param:
                return prefix, {path_param: rest}
    return s, {}


def embedder_class(name: str) -> type[Embedder]:
    """The class registered under ``name`` (built-in or entry point).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    MissingExtraError
        When the embedder's optional dependency is not installed.
    """
    if name in BUILTINS:
        return BUILTINS[name]
    if name in LAZY_BUILTINS:
        return _load_lazy(name)
    plugins = _plugins()
    if name in plugins:
        return plugins[name].load()
    known = (
        sorted(BUILTINS)
        + [f"{f}-{d}" for f in LOCAL_FAMILIES for d in DETECTORS]
        + [f"{n}:PATH" if e.path_param else n for n, e in LAZY_BUILTINS.items()]
        + sorted(plugins)
    )
    raise ValueError(f"unknown embedder {name!r}; available: {', '.join(known)}")


def make_embedder(spec: str, **params: Any) -> Embedder:
    """Build an unfitted embedder from a spec string and keyword parameters.

    Parameters given as ``None`` are ignored, so callers can pass optional settings through.
    An embedder with a ``validate()`` method (the deep adapters) is validated at once, so a
    missing or unsuitable model file fails here rather than on every image.

    Examples
    --------
    >>> make_embedder("bovw-orb", n_words=200).get_params()["detector"]
    'orb'
    """
    name, implied = parse_spec(spec)
    cls = embedder_class(name)
    given = {k: v for k, v in params.items() if v is not None}
    for key, value in implied.items():
        if key in given and str(given[key]).lower() != str(value).lower():
            raise ValueError(f"{spec!r} implies {key}={value!r} but {key}={given[key]!r} was given")
        given[key] = value
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(
            f"embedder {name!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'nothing'}"
        )
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty and p.name not in given
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if missing:
        path_param = getattr(cls, "path_param", None)
        hint = f": write {name}:PATH" if path_param in missing else ""
        raise ValueError(f"embedder {name!r} needs {', '.join(missing)}{hint}")
    emb = cls(**given)
    validate = getattr(emb, "validate", None)
    if callable(validate):
        validate()
    return emb


def load_embedder(directory: str | Path, **overrides: Any) -> Embedder:
    """Rebuild a fitted embedder saved by :meth:`Embedder.save`.

    ``overrides`` replace saved parameters, e.g. the ``model_path`` of a model file that
    moved together with the folder that refers to it.
    """
    d = Path(directory)
    meta = read_embedder_meta(d)
    try:
        cls = embedder_class(meta["name"])
    except ValueError as exc:
        raise BundleError(f"{d}: {exc} (is the plug-in that made it installed?)") from None
    params = dict(meta["params"])
    params.pop("vocabulary", None)  # the fitted vocabulary is inside the bundle
    params.update(overrides)
    emb = cls(**params)
    emb._load_state(d)
    if emb.dim != meta.get("dim", emb.dim):
        raise BundleError(
            f"{d}: saved dim {meta.get('dim')} disagrees with the embedder's {emb.dim}"
        )
    return emb


def _status_of_class(cls: Any, origin: str) -> str:
    reason_of = getattr(cls, "unavailable_reason", None)
    reason = reason_of() if callable(reason_of) else None
    return f"unavailable: {reason}" if reason else f"ok ({origin})"


def available_embedders() -> dict[str, str]:
    """Every registered embedder name and a one-line status: ``ok (...)`` or why unavailable.

    Examples
    --------
    >>> available_embedders()["hog"]
    'ok (built-in)'
    """
    out = {name: "ok (built-in)" for name in BUILTINS}
    for name, entry in LAZY_BUILTINS.items():
        origin = "built-in"
        if entry.path_param:
            origin += f", spec {name}:{entry.path_param.upper()}"
        if name in LOCAL_FAMILIES:
            origin += f", or {name}-DETECTOR"
        try:
            out[name] = _status_of_class(_load_lazy(name), origin)
        except Exception as exc:  # noqa: BLE001 - a listing must never fail
            out[name] = f"unavailable: {exc}"
    for name, ep in _plugins().items():
        if ":" in name:
            continue  # the distribution:name alias of an entry listed under its name
        try:
            out.setdefault(name, _status_of_class(ep.load(), ep.value))
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the listing
            out.setdefault(name, f"unavailable: {type(exc).__name__}: {exc}")
    return out
