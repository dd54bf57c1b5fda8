"""Google Landmarks TFRecords (``image/encoded`` + ``image/class/label``), extracted to a cache."""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any

from cvretrieval._json import atomic_write
from cvretrieval.errors import DatasetError, MissingExtraError

from .base import RetrievalDataset, class_ground_truth, log_problems, problem

logger = logging.getLogger(__name__)

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
TFRECORD_SHARD_RE = re.compile(r"^[A-Za-z0-9_.-]+-\d{5}-of-\d{5}$")

# --------------------------------------------------------------------------- GLD TFRecords
def tfrecord_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [
        p
        for p in sorted(path.iterdir())
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in TFRECORD_SUFFIXES or TFRECORD_SHARD_RE.match(p.name))
    ]
    return files


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ""


def _safe_name(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]", "_", text).strip(".") or "x"


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def _import_tfrecord() -> tuple[Any, Any]:
    """``tfrecord.example_pb2`` and ``tfrecord.reader.tfrecord_iterator``, imported lazily.

    ``tfrecord/__init__.py`` also imports its optional PyTorch data loader, hence
    all of torch (seconds) whenever torch is installed; the reader needs none of
    it, so that one optional submodule is masked while the package is first
    imported (``tfrecord`` skips it on ImportError) and unmasked right after.
    """
    masked = "tfrecord" not in sys.modules and "tfrecord.torch" not in sys.modules
    if masked:
        sys.modules["tfrecord.torch"] = None  # type: ignore[assignment]
    try:
        from tfrecord import example_pb2
        from tfrecord.reader import tfrecord_iterator
    except ImportError as exc:
        raise MissingExtraError(
            f"reading TFRecords needs the tfrecord package ({exc}); "
            "install it with: pip install 'cvretrieval[gld]'"
        ) from None
    finally:
        if masked and sys.modules.get("tfrecord.torch", 0) is None:
            del sys.modules["tfrecord.torch"]
    return example_pb2, tfrecord_iterator


def read_gld_tfrecord(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    *,
    max_records: int | None = None,
) -> RetrievalDataset:
    """Extract Google Landmarks TFRecords into ``cache_dir`` and group images by landmark.

    Every record is a ``tf.train.Example`` with ``image/encoded`` (the image file's
    bytes) and ``image/class/label`` (int64 landmark id), optionally ``image/id``
    (the GLD image id), as written by the DELF ``build_image_dataset.py`` script.
    They are read with the ``tfrecord`` package (extra ``gld``), without
    TensorFlow. Images are written to ``cache_dir/images/<label>/<id>.<ext>``
    (never anywhere else; unchanged files are not rewritten, so a second call
    resumes) and the ground truth to ``cache_dir/gt.json``, so
    ``load_dataset(cache_dir)`` reads it back without the TFRecords.

    Every image is a query; the other images of its landmark are its positives.
    Records without an image or a label, undecodable records and truncated files
    are listed in ``problems`` and skipped.

    Parameters
    ----------
    path : path-like
        A TFRecord file, or a folder of them (``*.tfrecord``, ``*.tfrec``,
        ``*.tfrecords`` or ``<name>-NNNNN-of-NNNNN``).
    cache_dir : path-like
        Folder to extract the images into (created when needed). Required.
    max_records : int, optional
        Stop after this many records in total (for a quick look).

    Returns
    -------
    RetrievalDataset
        ``format="gld-tfrecord"``, ``root = cache_dir``, ``qimlist == imlist``.

    Raises
    ------
    DatasetError
        No ``cache_dir``, no TFRecord file, or no usable record.
    MissingExtraError
        If the ``tfrecord`` package is not installed.

    References
    ----------
    .. [1] T. Weyand et al., "Google Landmarks Dataset v2", CVPR 2020.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data set path {str(path)!r} does not exist; check the path")
    if cache_dir is None:
        raise DatasetError(
            "reading TFRecords extracts their images: give a cache folder "
            "(cache_dir=..., or --cache DIR on the command line)"
        )
    if max_records is not None and max_records < 1:
        raise ValueError(f"max_records must be a positive integer, got {max_records!r}")
    example_pb2, tfrecord_iterator = _import_tfrecord()
    from google.protobuf.message import DecodeError

    files = tfrecord_files(path)
    if not files:
        raise DatasetError(
            f"no TFRecord file in {str(path)!r} (*.tfrecord, *.tfrec, *.tfrecords or "
            "name-NNNNN-of-NNNNN)"
        )
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    problems: list[dict] = []
    entries: list[tuple[str, int]] = []  # (path relative to cache, label)
    used: set[str] = set()
    n_read = 0
    for file in files:
        records = tfrecord_iterator(str(file))
        i = -1
        while max_records is None or n_read < max_records:
            try:
                raw = next(records)
            except StopIteration:
                break
            except (RuntimeError, OSError, struct.error) as exc:
                problem(
                    problems,
                    "truncated",
                    file.name,
                    f"unreadable after record {i + 1} ({exc}); the rest of the file is skipped",
                )
                break
            i += 1
            n_read += 1
            where = f"{file.name}#{i}"
            try:
                example = example_pb2.Example.FromString(bytes(raw))
            except DecodeError as exc:
                problem(problems, "bad-record", where, f"not a tf.train.Example ({exc})")
                continue
            feats = example.features.feature
            if "image/encoded" not in feats or not feats["image/encoded"].bytes_list.value:
                problem(problems, "bad-record", where, "no image/encoded bytes; skipped")
                continue
            if "image/class/label" not in feats or not feats["image/class/label"].int64_list.value:
                problem(problems, "bad-record", where, "no int64 image/class/label; skipped")
                continue
            data = bytes(feats["image/encoded"].bytes_list.value[0])
            label = int(feats["image/class/label"].int64_list.value[0])
            ids = feats["image/id"].bytes_list.value if "image/id" in feats else []
            image_id = _safe_name(ids[0].decode("utf-8", "replace")) if ids else ""
            image_id = image_id or f"{_safe_name(file.stem)}-{i:06d}"
            suffix = _image_suffix(data)
            if not suffix:
                problem(problems, "bad-record", where, "image/encoded is not JPEG/PNG/GIF/WebP")
                suffix = ".bin"
            rel = f"images/{label}/{image_id}{suffix}"
            if rel in used:
                rel = f"images/{label}/{image_id}-{_safe_name(file.stem)}-{i}{suffix}"
            used.add(rel)
            _write_if_changed(cache / rel, data)
            entries.append((rel, label))
        records.close()
    if not entries:
        raise DatasetError(
            f"no usable record in {len(files)} TFRecord file(s) under {str(path)!r} "
            f"({len(problems)} problems)"
        )
    entries.sort()
    imlist = [rel for rel, _ in entries]
    labels = [label for _, label in entries]
    gnd = class_ground_truth(labels)
    for i, n_ok in enumerate(gnd.n_positives()):
        if not n_ok:
            problem(problems, "no-positives", imlist[i], f"landmark {labels[i]} has one image")
    ds = RetrievalDataset(
        cache,
        imlist,
        list(imlist),
        gnd,
        name=path.stem if path.is_file() else path.name,
        format="gld-tfrecord",
        problems=problems,
    )
    ds.to_json(cache / "gt.json")
    log_problems(problems, path)
    logger.info(
        "extracted %d images of %d landmarks from %d TFRecord file(s) into %s",
        len(imlist),
        len(set(labels)),
        len(files),
        cache,
    )
    return ds


