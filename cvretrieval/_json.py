"""Reading and writing the small JSON files that describe a saved object (private).

Every saved object (index, vocabulary, assigner, whitening, feature store,
embedder...) is a folder with a JSON manifest next to its arrays. The manifest is
read with :func:`read_json_manifest` (the same checks and messages everywhere) and
written with :func:`write_json_atomic`; :func:`atomic_write` replaces any file
through a temporary name, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ._files import FileProblem, one_line, read_regular_file, shown
from .errors import BundleError

__all__ = [
    "atomic_write",
    "check_format_version",
    "read_json",
    "read_json_manifest",
    "write_json_atomic",
]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], *, fsync: bool = False) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``.

    ``fsync`` flushes the data to the disk before the rename. The temporary file
    is removed when ``write`` fails.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(
    path: Path,
    doc: Any,
    *,
    indent: int = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Write ``doc`` as indented UTF-8 JSON (with a final newline) with :func:`atomic_write`.

    The text is made before the disk is touched, so an unserialisable ``doc``
    leaves the old file in place.
    """
    text = json.dumps(doc, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


_FIX = "fix or recreate the file"


def _error(message: str, hint: str | None) -> BundleError:
    return BundleError(f"{message}; {hint}" if hint else message)


def check_format_version(
    doc: dict[str, Any], path: Path, format_version: int, *, hint: str | None = None
) -> None:
    """Raise :class:`BundleError` unless ``doc["format_version"] == format_version``."""
    version = doc.get("format_version")
    if version != format_version:
        raise _error(
            f"{shown(path)} has format_version {version!r}, but this cvretrieval reads "
            f"{format_version}",
            hint,
        )


def read_json(
    path: Path,
    *,
    error: type[Exception] = BundleError,
    hint: str | None = None,
) -> Any:
    """Read any JSON value from a regular file; ``error`` (one line, naming the file) when unusable.

    Never blocks (a FIFO or device is refused before it is opened) and never lets a
    RecursionError, a too-long number or a decoding error through.

    Parameters
    ----------
    path : Path
    error : exception class, default BundleError
        Raised for every problem (:class:`~cvretrieval.errors.DatasetError` for a
        ground-truth file, for example).
    hint : str, optional
        What to do, appended after ``"; "``; default: fix or recreate the file.
    """
    hint = hint or _FIX
    name = shown(path)
    try:
        data = read_regular_file(path, what="a JSON file")
    except FileProblem as exc:
        raise error(f"cannot read {name}: {exc.reason}") from None
    try:
        return json.loads(data.decode("utf-8-sig"))
    except RecursionError:
        raise error(f"{name} is nested too deeply to read as JSON; {hint}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise error(f"{name} is not valid JSON ({one_line(exc)}); {hint}") from None
    except MemoryError:
        raise error(f"{name} is too large to read as JSON; {hint}") from None


def read_json_manifest(
    path: Path,
    *,
    format_version: int | None = None,
    missing: str | None = None,
    hint: str | None = None,
) -> dict[str, Any]:
    """Read a JSON manifest that must hold an object; :class:`BundleError` when unusable.

    Parameters
    ----------
    path : Path
    format_version : int, optional
        Checked with :func:`check_format_version` when given.
    missing : str, optional
        What a missing file means (``"{path} is missing: {missing}"``). When None
        the caller has checked that the file is there.
    hint : str, optional
        What to do about an unreadable file or another version, appended to those
        messages after ``"; "``.

    Returns
    -------
    dict
    """
    if missing is not None and not os.path.lexists(path):
        raise BundleError(f"{shown(path)} is missing: {missing}")
    doc = read_json(path, hint=hint)
    if not isinstance(doc, dict):
        raise _error(f"{shown(path)} must hold a JSON object, got {type(doc).__name__}",
                     hint or _FIX)
    if format_version is not None:
        check_format_version(doc, path, format_version, hint=hint)
    return doc
