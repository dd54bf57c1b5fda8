"""Revisited Oxford / Paris ground-truth pickles, read with a restricted unpickler."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvretrieval.errors import DatasetError

from .base import (
    IMAGE_EXTENSIONS,
    REVISITOP_PROTOCOLS,
    RetrievalDataset,
    dataset_from,
    log_problems,
    problem,
    require_regular_file,
)
from .groundtruth import short_repr
from .jsongt import unsafe_reason

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- revisitop pickle
_PLAIN_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol 2 spells a bytes object
}
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _numpy_global(module: str, name: str) -> Any:
    if module == "numpy":
        return getattr(np, name)
    modern = module.replace("numpy.core.", "numpy._core.")
    try:
        return getattr(importlib.import_module(modern), name)
    except ImportError:  # numpy < 2 has no numpy._core
        return getattr(importlib.import_module(module.replace("numpy._core.", "numpy.core.")), name)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle referenced a global that :class:`_RestrictedUnpickler` does not admit."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays, and nothing else.

    Lists, dicts, tuples, strings, numbers and ``None`` need no global at all;
    ``find_class`` admits only sets, ``OrderedDict``, ``_codecs.encode`` (bytes
    in protocol 2) and the few numpy functions that rebuild an array or a
    scalar. Any other global (``os.system``, ``builtins.eval``, a class...) is
    refused before it is imported.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(
            f"refusing to load the global {module}.{name}: a ground-truth pickle holds only "
            "lists, dicts, numbers, strings and numpy arrays"
        )


def safe_pickle_load(path: str | os.PathLike[str]) -> Any:
    """Load a pickle that may hold only plain containers, numbers, strings and numpy arrays.

    Parameters
    ----------
    path : path-like
        The pickle file (e.g. revisitop's ``gnd_roxford5k.pkl``).

    Returns
    -------
    object
        The unpickled lists / dicts / arrays.

    Raises
    ------
    DatasetError
        If the file is missing, not a pickle, or references any other global
        (a pickle that would run code, e.g. ``os.system``, is refused unloaded).
    """
    path = Path(path)
    require_regular_file(path, "pickle file")
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DatasetError(
            f"{path} is not a readable ground-truth pickle ({type(exc).__name__}: {exc})"
        ) from None


def revisitop_protocols(gnd: Sequence[dict]) -> dict[str, list[dict]]:
    """The Easy / Medium / Hard ground truths from revisitop's ``easy``/``hard``/``junk``.

    Exactly as revisitop's ``example_evaluate.py``: Easy: ok = easy, junk = junk +
    hard; Medium: ok = easy + hard, junk = junk; Hard: ok = hard, junk = junk + easy.
    ``bbx`` is kept.

    Parameters
    ----------
    gnd : sequence of dict
        Per query ``"easy"``, ``"hard"``, ``"junk"`` (lists or arrays of indices)
        and optionally ``"bbx"``.

    Returns
    -------
    dict
        ``{"easy": [...], "medium": [...], "hard": [...]}``, each a list of
        ``{"ok", "junk"[, "bbx"]}`` with plain int lists.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris", CVPR 2018
           (``revisitop/python/example_evaluate.py``).

    Examples
    --------
    >>> p = revisitop_protocols([{"easy": [0], "hard": [1], "junk": [2]}])
    >>> p["easy"][0], p["medium"][0], p["hard"][0]
    ({'ok': [0], 'junk': [2, 1]}, {'ok': [0, 1], 'junk': [2]}, {'ok': [1], 'junk': [2, 0]})
    """

    def ints(v: Any, i: int, key: str) -> list[int]:
        arr = np.asarray(v if v is not None else [], dtype=object).ravel()
        for x in arr:
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
                raise DatasetError(
                    f"gnd[{i}][{key!r}] holds {short_repr(x)} ({type(x).__name__}); "
                    "indices must be integers"
                )
        return [int(x) for x in arr]

    out: dict[str, list[dict]] = {"easy": [], "medium": [], "hard": []}
    for i, g in enumerate(gnd):
        easy, hard, junk = (ints(g.get(k), i, k) for k in ("easy", "hard", "junk"))
        extra = {"bbx": g["bbx"]} if g.get("bbx") is not None else {}
        out["easy"].append({"ok": easy, "junk": junk + hard, **extra})
        out["medium"].append({"ok": easy + hard, "junk": list(junk), **extra})
        out["hard"].append({"ok": hard, "junk": junk + easy, **extra})
    return out


def _find_gnd_pickle(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = sorted(path.glob("gnd_*.pkl"))
    if not found:
        raise DatasetError(
            f"no gnd_*.pkl in {str(path)!r}; the revisitop layout is gnd_roxford5k.pkl "
            "(or gnd_rparis6k.pkl) beside a jpg/ folder of images"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{str(path)!r} holds several ground-truth pickles "
            f"({', '.join(p.name for p in found)}); pass the one to use"
        )
    return found[0]


def read_revisitop(path: str | os.PathLike[str], protocol: str | None = None) -> RetrievalDataset:
    """Read revisited Oxford / Paris (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``).

    The pickle (read with a restricted unpickler, see :func:`safe_pickle_load`)
    holds ``imlist`` and ``qimlist`` (image names without extension) and ``gnd``
    (per query ``easy``, ``hard``, ``junk`` index lists and ``bbx``). Images are
    ``<folder of the pickle>/jpg/<name>.jpg`` (or beside the pickle when there is
    no ``jpg/`` folder). The three protocols are built by
    :func:`revisitop_protocols`. A pickle whose entries hold ``ok``/``junk``
    instead (the classic ``gnd_oxford5k.pkl``) gives a data set without protocols.

    Parameters
    ----------
    path : path-like
        The pickle, or the folder holding exactly one ``gnd_*.pkl``.
    protocol : {"easy", "medium", "hard"}, optional
        Which protocol ``gnd`` is; default ``"medium"``. All three stay in
        ``dataset.protocols``.

    Returns
    -------
    RetrievalDataset
        ``format="revisitop"``; queries are not in the gallery.

    Raises
    ------
    DatasetError
        Missing or refused pickle, missing keys, out-of-range indices, unknown
        protocol.

    References
    ----------
    .. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
           Retrieval Benchmarking", CVPR 2018.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data set path {str(path)!r} does not exist; check the path")
    pkl = _find_gnd_pickle(path)
    doc = safe_pickle_load(pkl)
    if not isinstance(doc, dict):
        raise DatasetError(
            f"{pkl}: expected a dict with imlist, qimlist and gnd, got {type(doc).__name__}"
        )
    for key in ("imlist", "qimlist", "gnd"):
        if key not in doc:
            raise DatasetError(f"{pkl}: missing key {key!r} (keys: {sorted(map(str, doc))})")
    names: dict[str, list[str]] = {}
    for key in ("imlist", "qimlist"):
        value = doc[key]
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise DatasetError(f"{pkl}: {key!r} must be a list of image names")
        for i, v in enumerate(value):
            why = unsafe_reason(v)
            if why:
                raise DatasetError(
                    f"{pkl}: {key}[{i}] {short_repr(v)} is refused: {why}; image names must "
                    "stay inside the data set's folder"
                )
        names[key] = list(value)
    gnd_raw = doc["gnd"]
    if not isinstance(gnd_raw, (list, tuple)) or not all(isinstance(g, dict) for g in gnd_raw):
        raise DatasetError(f"{pkl}: 'gnd' must be a list of dicts (one per query)")
    root = pkl.parent
    prefix = "jpg/" if (root / "jpg").is_dir() else ""

    def image(name: str) -> str:  # revisitop: cfg["ext"] = ".jpg", names have none
        return prefix + (
            name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name + ".jpg"
        )

    imlist = [image(n) for n in names["imlist"]]
    qimlist = [image(n) for n in names["qimlist"]]
    stem = pkl.stem[4:] if pkl.stem.startswith("gnd_") else pkl.stem
    problems: list[dict] = []
    has_levels = bool(gnd_raw) and all("easy" in g and "hard" in g for g in gnd_raw)
    if has_levels:
        try:
            protocols = revisitop_protocols(gnd_raw)
        except DatasetError as exc:
            raise DatasetError(f"{pkl}: {exc}") from None
        chosen = protocol or "medium"
        if chosen not in protocols:
            raise DatasetError(
                f"unknown protocol {chosen!r} for {pkl.name}; choose one of {REVISITOP_PROTOCOLS}"
            )
        gnd = protocols[chosen]
        for pname in REVISITOP_PROTOCOLS:
            for i, g in enumerate(protocols[pname]):
                if not g["ok"]:
                    problem(
                        problems,
                        "no-positives",
                        qimlist[i] if i < len(qimlist) else str(i),
                        f"query {i} has no positives in the {pname} protocol (left out of its mAP)",
                    )
    else:
        if protocol is not None:
            raise DatasetError(
                f"{pkl.name} has no easy/hard annotation, so no protocol {protocol!r}; "
                "leave protocol unset"
            )
        protocols, chosen = {}, ""
        gnd = [dict(g) for g in gnd_raw]
    ds = dataset_from(
        pkl, root, imlist, qimlist, gnd,
        name=stem, format="revisitop", protocols=protocols, protocol=chosen, problems=problems,
    )
    missing = sum(1 for p in ds.image_paths() if not p.exists())
    if missing:
        logger.warning(
            "%s: %d of %d gallery images are not in %s (run `cvret datasets check`)",
            pkl.name,
            missing,
            len(imlist),
            root / prefix,
        )
    log_problems(problems, pkl.name)
    logger.info(
        "read %s: %d images, %d queries, protocol %s", stem, len(imlist), len(qimlist), chosen
    )
    return ds


