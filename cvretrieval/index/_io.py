"""Saving and loading an :class:`~cvretrieval.index.Index` (private).

One file: the bytes ``faiss.write_index`` writes (so ``faiss.read_index`` still
reads the file), then a trailer::

    template bytes | removed ids (int64) | JSON config (UTF-8) | footer (32 bytes)

where the footer is ``<QQQ8s``: the three lengths and the magic ``CVRIDX01``.
The template is the trained empty index, so that a loaded index can still make
shards (:meth:`Index.empty_copy`) without copying its vectors.

The older folder format (``index.faiss`` + ``index.json``) is written when the
path is an existing directory or has no suffix, and read back the same way.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from .._json import read_json_manifest, write_json_atomic
from ..errors import BundleError
from ._faiss import FAISS_METRICS, faiss_message, is_lsh

if TYPE_CHECKING:  # pragma: no cover
    from ._index import Index

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
CONFIG_FILE = "index.json"
MAGIC = b"CVRIDX01"
_FOOTER = struct.Struct("<QQQ8s")


def is_folder(path: Path) -> bool:
    return path.is_dir() or (not path.exists() and not path.suffix)


def _meta(index: Index) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        **index.config(),
        "next_id": int(index.next_id_),
        "checksum": index.checksum_,
        "faiss_version": faiss.__version__,
    }


def save(index: Index, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    if is_folder(path):
        _save_folder(index, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(_meta(index)).encode("utf-8")
    template = b"" if index.template_ is None else index.template_.tobytes()
    removed = np.ascontiguousarray(index.removed_, dtype="<i8").tobytes()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        faiss.write_index(index.index_, str(tmp))
        with open(tmp, "ab") as f:
            f.write(template)
            f.write(removed)
            f.write(meta)
            f.write(_FOOTER.pack(len(template), len(removed), len(meta), MAGIC))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_folder(index: Index, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {**_meta(index), "removed": index.removed_.tolist()}
    tmp_index = directory / f".{INDEX_FILE}.tmp"
    faiss.write_index(index.index_, str(tmp_index))
    os.replace(tmp_index, directory / INDEX_FILE)
    write_json_atomic(directory / CONFIG_FILE, meta)


def load(cls: type[Index], path: str | os.PathLike[str]) -> Index:
    path = Path(path)
    if is_folder(path):
        return _load_folder(cls, path)
    if not path.is_file():
        raise BundleError(f"{path} is missing: give an index file written by Index.save")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < _FOOTER.size:
                raise ValueError
            f.seek(size - _FOOTER.size)
            n_template, n_removed, n_meta, magic = _FOOTER.unpack(f.read(_FOOTER.size))
            if magic != MAGIC or n_template + n_removed + n_meta + _FOOTER.size > size:
                raise ValueError
            f.seek(size - _FOOTER.size - n_meta - n_removed - n_template)
            template = f.read(n_template)
            removed = np.frombuffer(f.read(n_removed), dtype="<i8").astype(np.int64)
            meta = json.loads(f.read(n_meta).decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError
    except (ValueError, UnicodeDecodeError, struct.error):
        raise BundleError(
            f"{path} is not an index file written by Index.save (no valid cvretrieval "
            "trailer): re-save the index"
        ) from None
    except OSError as exc:
        raise BundleError(f"{path} cannot be read ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has format_version {meta.get('format_version')!r}, but this cvretrieval "
            f"reads {FORMAT_VERSION}: re-save the index with this version"
        )
    tmpl = np.frombuffer(template, dtype=np.uint8).copy() if template else None
    return _restore(cls, meta, path, path, removed, tmpl)


def _load_folder(cls: type[Index], directory: Path) -> Index:
    json_path = directory / CONFIG_FILE
    index_path = directory / INDEX_FILE
    for p in (json_path, index_path):
        if not p.is_file():
            raise BundleError(
                f"{p} is missing: {directory} is not an index folder written by Index.save"
            )
    meta = read_json_manifest(
        json_path, format_version=FORMAT_VERSION, hint="re-save the index with this version"
    )
    removed = np.asarray(meta.get("removed", []), dtype=np.int64)
    return _restore(cls, meta, json_path, index_path, removed, None)


def _restore(
    cls: type[Index],
    meta: dict[str, Any],
    meta_path: Path,
    index_path: Path,
    removed: np.ndarray,
    template: np.ndarray | None,
) -> Index:
    missing = [key for key in ("spec", "factory", "metric", "d", "ntotal") if key not in meta]
    if missing:
        raise BundleError(f"{meta_path} lacks {', '.join(missing)}: re-save the index")
    try:
        obj = cls(
            meta["spec"],
            meta["metric"],
            nprobe=meta.get("nprobe"),
            ef_search=meta.get("ef_search"),
            random_state=meta.get("random_state", 0),
            max_memory=meta.get("max_memory"),
            refine=meta.get("refine"),
        )
    except ValueError as exc:
        raise BundleError(f"{meta_path} has an invalid setting: {exc}") from None
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise BundleError(
            f"{index_path} is not a readable Faiss index: {faiss_message(exc)}"
        ) from None
    live = int(index.ntotal) - int(removed.size)
    if live != meta["ntotal"] or index.d != meta["d"]:
        raise BundleError(
            f"{index_path} holds {live} vectors of dimension {index.d} but {meta_path} "
            f"says {meta['ntotal']} of dimension {meta['d']}: the two do not belong "
            "together, re-save the index"
        )
    if not is_lsh(index) and index.metric_type != FAISS_METRICS[obj.metric]:
        raise BundleError(
            f"{index_path} uses Faiss metric {index.metric_type} but {meta_path} says "
            f"{obj.metric!r}: the two do not belong together, re-save the index"
        )
    obj._install(
        index,
        str(meta["factory"]),
        str(meta.get("reason") or ""),
        int(index.d),
        int(meta.get("n_planned") or live or 1),
        template,
    )
    obj.removed_ = removed
    obj.next_id_ = int(meta.get("next_id", index.ntotal))
    if meta.get("checksum") and obj.checksum_ is None:
        obj.checksum_ = str(meta["checksum"])
    return obj
