"""Reading only regular files, and listing image files with the reasons others are skipped.

Private; the public names are re-exported by :mod:`cvretrieval.io`. Nothing here opens
anything but a regular file: FIFOs, sockets and devices are refused before any
``open`` (a FIFO would block until a writer appears), and the file is opened with
``O_NONBLOCK`` and checked again with ``fstat``, so a path swapped for a FIFO between
the check and the ``open`` is still refused instead of hanging.

Listing rules (:func:`scan_images`)
-----------------------------------
* Names starting with ``.`` (files and folders) are ignored, as are files whose
  suffix is not an image suffix: neither is reported.
* A symbolic link to a regular file is followed wherever it points; the path listed
  is the link's own path.
* A symbolic link to a folder is not descended into (that is how loops and a second
  path to the same images are avoided) and is reported as skipped.
* Broken links and link loops, FIFOs, sockets and devices with an image suffix (or
  links with no suffix) are reported as skipped with the reason. A folder named like
  an image (``x.jpg/``) is a folder: it is descended into, never listed as an image.
* A sub-folder that cannot be read (permission denied) is reported as skipped.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FileProblem", "list_images", "read_regular_file", "scan_images"]

logger = logging.getLogger(__name__)

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class FileProblem(OSError):
    """A path that is not a readable regular file; ``reason`` is a short phrase for messages."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{shown(path)}: {reason}")
        self.path = path
        self.reason = reason


def one_line(err: BaseException) -> str:
    """``'TypeName: message'`` with all whitespace (newlines included) collapsed."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as text safe for a one-line message: control characters and undecodable
    bytes are written as escapes (``a\\nb.png``), everything printable is kept."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _not_regular(kind: str, what: str) -> str:
    if kind == "a directory":
        return f"it is a directory, not {what}; give the path of a file"
    return f"it is {kind}, not a regular file; only regular files are read: copy it to a file"


def _open_error(path: str | Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "it is a symbolic link loop; fix or remove the link"
    if err.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"it is a broken symbolic link (to {os.readlink(path)}); fix or remove the link"
        return "file does not exist; check the path"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; check the file's permissions"
    return one_line(err)


def read_regular_file(path: str | Path, *, what: str = "a file") -> bytes:
    """All bytes of ``path`` if it is a regular file (links followed), without ever blocking.

    Parameters
    ----------
    path : Path
    what : str
        What the file should be, for the directory message (``"an image file"``).

    Raises
    ------
    FileProblem
        Missing, a directory, a FIFO/socket/device, a broken link or loop, permission
        denied, or any other OSError; ``reason`` says which, on one line.
    """
    try:
        kind = kind_of(os.stat(path).st_mode)
    except OSError as err:
        raise FileProblem(path, _open_error(path, err)) from None
    if kind is not None:
        raise FileProblem(path, _not_regular(kind, what))
    try:
        fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: a FIFO swapped in now cannot block us
    except OSError as err:
        raise FileProblem(path, _open_error(path, err)) from None
    # plain os.read on the descriptor: a buffered file object around it cost as much
    # as the read itself for the small files of a large collection (12 of 28 us)
    try:
        st = os.fstat(fd)
        kind = kind_of(st.st_mode)
        if kind is not None:
            raise FileProblem(path, _not_regular(kind, what))
        parts = []
        want = max(st.st_size, 0) + 1  # one byte more: a file that grew is read to its end
        while True:
            try:
                chunk = os.read(fd, want)
            except OSError as err:
                raise FileProblem(path, one_line(err)) from None
            if not chunk:
                break
            parts.append(chunk)
            if len(chunk) < want:  # a regular file reads short only at its end: no
                break  # second read to learn it (one syscall fewer per image)
            want = 1 << 20
        return parts[0] if len(parts) == 1 else b"".join(parts)  # b"" when empty
    finally:
        os.close(fd)


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """Lower-case suffixes with a leading dot."""
    if isinstance(extensions, str):
        extensions = [extensions]
    out = set()
    for ext in extensions:
        ext = ext.lower()
        out.add(ext if ext.startswith(".") else "." + ext)
    return frozenset(out)


_LINKED_FOLDER = "it is a link to a folder, which is not followed: pass that folder itself"


def _entry_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a candidate entry (image suffix) is not a readable regular file, else None."""
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError as err:
        return _open_error(Path(entry.path), err)
    kind = kind_of(mode)
    if kind is None:
        return None
    if kind == "a directory":
        return _LINKED_FOLDER if entry.is_symlink() else ""
    return _not_regular(kind, "an image file")


def scan_images(
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    extensions: Iterable[str],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``root`` and the entries skipped, with why (see the module notes)."""
    root = Path(root)
    suffixes = normalise_extensions(extensions)
    try:
        kind = kind_of(os.stat(root).st_mode)
    except OSError as err:
        if err.errno == errno.ENOENT and not os.path.islink(root):
            raise FileNotFoundError(
                f"cannot list images: {root} does not exist; pass an existing folder or image file"
            ) from None
        return [], [(root, _open_error(root, err))]
    if kind is None:
        return ([root] if root.suffix.lower() in suffixes else []), []
    if kind != "a directory":
        return [], [(root, _not_regular(kind, "an image folder"))]

    found: list[tuple[str, Path]] = []
    skipped: list[tuple[str, Path, str]] = []
    pending = [(root, "")]  # (folder, its path relative to root with a trailing "/")
    while pending:
        folder, prefix = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            skipped.append((prefix.rstrip("/"), folder,
                            f"cannot list this folder: {_open_error(folder, err)}"))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = prefix + name
            is_link = entry.is_symlink()
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    pending.append((folder / name, rel + "/"))
                continue
            suffix = os.path.splitext(name)[1].lower()
            suffix = "" if suffix == "." else suffix  # as Path("a.").suffix
            is_image_name = suffix in suffixes
            if not (is_image_name or is_link):
                continue
            # a regular file by the directory entry's own type needs no stat (100,000
            # files: 1.3 s -> 0.5 s); links and unknown types are looked at
            regular = not is_link and entry.is_file(follow_symlinks=False)
            problem = None if regular else _entry_problem(entry)
            if problem is None:
                if is_image_name:
                    found.append((rel, folder / name))
            elif problem == _LINKED_FOLDER:
                if recursive:
                    skipped.append((rel, folder / name, problem))
            elif problem and (is_image_name or suffix == ""):
                skipped.append((rel, folder / name, problem))
    found.sort(key=lambda item: item[0])
    skipped.sort(key=lambda item: item[0])
    for _, path, reason in skipped:
        logger.info("skipped %s: %s", path, reason)
    logger.debug("found %d image files under %s (%d skipped)", len(found), root, len(skipped))
    return [p for _, p in found], [(p, r) for _, p, r in skipped]


def list_images(
    root: str | os.PathLike[str], *, recursive: bool = True, extensions: Iterable[str]
) -> list[Path]:
    """The paths of :func:`scan_images`, without the skipped entries."""
    return scan_images(root, recursive=recursive, extensions=extensions)[0]


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a folder's entries to the disk (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def resolve_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """``str(Path(p).resolve())`` of every path, each folder resolved once: one ``lstat``
    per file instead of one per path component (10,000 files: 0.66 s -> a few ms of the
    main process when they are in a few folders); a file that is a link is resolved whole.

    >>> resolve_paths(["x/../a.jpg"]) == [str(Path("a.jpg").resolve())]
    True
    """
    folders: dict[str, str] = {}
    out = []
    for p in map(os.fspath, paths):  # strings, not Path objects: 1.1 -> 0.6 s at 100,000
        head, name = os.path.split(p)
        if name in ("", ".", ".."):
            out.append(str(Path(p).resolve()))
            continue
        folder = folders.get(head)
        if folder is None:
            folder = folders[head] = str(Path(head or ".").resolve())
        q = os.path.join(folder, name)
        try:
            if stat.S_ISLNK(os.lstat(q).st_mode):
                q = str(Path(q).resolve())
        except OSError:  # missing or unreadable: what resolve() gives
            q = str(Path(p).resolve())
        out.append(q)
    return out
