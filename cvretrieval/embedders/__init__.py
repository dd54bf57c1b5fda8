"""Embedders and their registry: one name selects any model everywhere.

Spec strings: ``hog``; ``bovw`` with an optional detector suffix (``bovw-orb``,
``bovw-sift``, ``bovw-rootsift``, ``bovw-akaze``, ``bovw-brisk``); third-party
embedders registered under the entry-point group ``cvretrieval.embedders``
(``pkgname:name`` or the entry point's name).
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..features.local import DETECTORS
from .base import Embedder, l2_normalize, read_embedder_meta
from .classical import BoVWEmbedder, HOGEmbedder

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cvretrieval.embedders"

BUILTINS: dict[str, type[Embedder]] = {"hog": HOGEmbedder, "bovw": BoVWEmbedder}
#: families that take a local detector as a suffix: ``bovw-sift``
LOCAL_FAMILIES = ("bovw",)

__all__ = [
    "BUILTINS",
    "BoVWEmbedder",
    "Embedder",
    "HOGEmbedder",
    "available_embedders",
    "embedder_class",
    "l2_normalize",
    "load_embedder",
    "make_embedder",
    "parse_spec",
]


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a spec string into a registry name and the parameters it implies.

    Examples
    --------
    >>> parse_spec("bovw-orb")
    ('bovw', {'detector': 'orb'})
    >>> parse_spec("hog")
    ('hog', {})
    """
    s = spec.strip()
    low = s.lower()
    if low in BUILTINS:
        return low, {}
    family, _, suffix = low.partition("-")
    if family in LOCAL_FAMILIES and suffix in DETECTORS:
        return family, {"detector": suffix}
    return s, {}


def embedder_class(name: str) -> type[Embedder]:
    """The class registered under ``name`` (built-in or entry point)."""
    if name in BUILTINS:
        return BUILTINS[name]
    plugins = _plugins()
    if name in plugins:
        return plugins[name].load()
    known = sorted(BUILTINS) + [f"{f}-{d}" for f in LOCAL_FAMILIES for d in DETECTORS] + sorted(plugins)
    raise ValueError(f"unknown embedder {name!r}; available: {', '.join(known)}")


def make_embedder(spec: str, **params: Any) -> Embedder:
    """Build an unfitted embedder from a spec string and keyword parameters.

    Parameters given as ``None`` are ignored, so callers can pass optional settings through.

    Examples
    --------
    >>> make_embedder("bovw-orb", n_words=200).get_params()["detector"]
    'orb'
    """
    name, implied = parse_spec(spec)
    cls = embedder_class(name)
    given = {k: v for k, v in params.items() if v is not None}
    for key, value in implied.items():
        if key in given and str(given[key]).lower() != str(value):
            raise ValueError(f"{spec!r} implies {key}={value!r} but {key}={given[key]!r} was given")
        given[key] = value
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(
            f"embedder {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted) or 'nothing'}"
        )
    return cls(**given)


def load_embedder(directory: str | Path) -> Embedder:
    """Rebuild a fitted embedder saved by :meth:`Embedder.save`."""
    d = Path(directory)
    meta = read_embedder_meta(d)
    try:
        cls = embedder_class(meta["name"])
    except ValueError as exc:
        raise BundleError(f"{d}: {exc} (is the plug-in that made it installed?)") from None
    params = dict(meta["params"])
    params.pop("vocabulary", None)  # the fitted vocabulary is inside the bundle
    emb = cls(**params)
    emb._load_state(d)
    if emb.dim != meta.get("dim", emb.dim):
        raise BundleError(f"{d}: saved dim {meta.get('dim')} disagrees with the embedder's {emb.dim}")
    return emb


def available_embedders() -> dict[str, str]:
    """Registered embedder names and a one-line status (``ok`` or why unavailable)."""
    out = {name: "ok (built-in)" for name in BUILTINS}
    for name, ep in _plugins().items():
        try:
            ep.load()
            out[name] = f"ok ({ep.value})"
        except Exception as exc:  # a broken plug-in must not break the listing
            out[name] = f"unavailable: {exc}"
    return out
