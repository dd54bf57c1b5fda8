"""The bundle manifest: what a committed bundle holds, checked field by field.

``manifest.json`` is the single point of commit: a writer writes every new file first,
then replaces the manifest atomically (write a temporary file, fsync, ``os.replace``,
fsync the folder). A reader sees the previous or the new content, never a mixture;
files no manifest names are garbage that the next writer removes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._files import fsync_path, sha256_of
from .._json import read_json_manifest
from ..errors import BundleError

FORMAT = "cvretrieval-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
METRICS = ("ip", "l2")


def file_sha256(path: Path) -> str:
    return sha256_of(path)


def folder_checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``folder``."""
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Commit ``manifest`` atomically and durably."""
    data = (json.dumps(manifest, indent=2, default=str) + "\n").encode("utf-8")
    path = root / MANIFEST
    tmp = root / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(root)


def _field(m: dict[str, Any], path: Path, key: str, kind: type | tuple[type, ...],
           what: str) -> Any:
    value = m.get(key)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is int)
    if not ok:
        raise BundleError(f"{path}: field {key!r} must be {what}, got {value!r:.60}; "
                          "the manifest is damaged: rebuild the bundle with `cvret index`")
    return value


def _relative(root: Path, path: Path, key: str, value: str) -> Path:
    """A file named by the manifest, refused when it would leave the bundle folder."""
    p = Path(value)
    if p.is_absolute() or ".." in p.parts or not value:
        raise BundleError(f"{path}: field {key!r} ({value!r}) must be a path inside the bundle")
    return root / p


def read_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest of bundle folder ``root``; :class:`BundleError` naming the file
    and the field when anything is missing, of the wrong type, or inconsistent."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise BundleError(f"{root} {what}, so it is not a bundle folder: pass one written by "
                          "`cvret index -o`")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} has no manifest.json: it is not a cvretrieval bundle "
                          "(make one with `cvret index`)")
    m = read_json_manifest(path)
    if m.get("format") != FORMAT:
        raise BundleError(f"{path} is not a cvretrieval bundle manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{root} has bundle format {m.get('format_version')!r}; this "
                          f"cvretrieval reads {FORMAT_VERSION}: rebuild it with `cvret index`")
    _field(m, path, "generation", int, "an integer")
    next_id = _field(m, path, "next_id", int, "a non-negative integer")
    if next_id < 0:
        raise BundleError(f"{path}: field 'next_id' must be >= 0, got {next_id}")
    emb = _field(m, path, "embedder", dict, "an object")
    for key, kind, what in (("name", str, "a string"), ("params", dict, "an object"),
                            ("dim", int, "an integer"), ("dir", str, "a string"),
                            ("checksums", dict, "an object")):
        if not isinstance(emb.get(key), kind) or isinstance(emb.get(key), bool):
            raise BundleError(f"{path}: field 'embedder.{key}' must be {what}, got "
                              f"{emb.get(key)!r:.60}")
    _relative(root, path, "embedder.dir", emb["dir"])
    index = _field(m, path, "index", dict, "an object")
    if not isinstance(index.get("spec"), str):
        raise BundleError(f"{path}: field 'index.spec' must be a string")
    if index.get("kind", "faiss") not in ("faiss", "sparse", "items"):
        raise BundleError(f"{path}: field 'index.kind' is {index.get('kind')!r}; it must be "
                          "faiss, sparse or items")
    metric = _field(m, path, "metric", str, "'ip' or 'l2'")
    if metric not in METRICS:
        raise BundleError(f"{path}: field 'metric' is {metric!r}; it must be 'ip' or 'l2'")
    _relative(root, path, "catalog", _field(m, path, "catalog", str, "a file name"))
    options = _field(m, path, "options", dict, "an object")
    if options.get("whitening") is not None:
        _relative(root, path, "options.whitening", str(options["whitening"]))
    if m.get("max_side") is not None:
        _field(m, path, "max_side", int, "an integer or null")
    segments = _field(m, path, "segments", list, "a list")
    last, total = -1, 0
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict):
            raise BundleError(f"{path}: segments[{i}] must be an object")
        for key in ("number", "n", "first_id", "last_id"):
            v = seg.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (-1 if key == "last_id"
                                                                     else 0):
                raise BundleError(f"{path}: field 'segments[{i}].{key}' must be a non-negative "
                                  f"integer, got {v!r:.40}")
        if seg["n"] and (seg["first_id"] <= last or seg["last_id"] < seg["first_id"]
                         or seg["last_id"] >= next_id):
            raise BundleError(f"{path}: segments[{i}] ids {seg['first_id']}..{seg['last_id']} "
                              f"overlap another segment or pass next_id {next_id}")
        last = max(last, seg["last_id"])
        total += seg["n"]
    counts = _field(m, path, "counts", dict, "an object")
    if counts.get("vectors") != total:
        raise BundleError(f"{path}: field 'counts.vectors' is {counts.get('vectors')!r} but the "
                          f"segments hold {total} vectors: the manifest is damaged")
    return m
