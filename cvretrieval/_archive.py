"""Safe extraction of downloaded tar and zip archives (used by :mod:`cvretrieval.fetch`).

Every member is checked before anything is written, so an archive is extracted
entirely or not at all. Tar members go through :func:`tarfile.data_filter`
(Python 3.12, 3.11.4+, 3.10.12+...) both for that check and for the extraction;
where Python lacks it, the same rules are applied by hand (no absolute name, no
``..``, no link leaving the folder, no special file). Zip members are checked by
name and written one by one; zip symbolic links are skipped.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cvretrieval.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = ["SafeExtract", "extract_archive", "member_relpath"]

_CHUNK = 1 << 16


def member_relpath(name: str) -> PurePosixPath | None:
    """The normalised relative path of an archive member, or None if it would escape.

    Backslashes count as separators; absolute paths, drive letters and any
    ``..`` component are refused (None). ``"."`` and ``""`` give ``PurePosixPath(".")``.
    """
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _within(target: Path, root: Path) -> bool:
    target_r = os.path.realpath(target)
    root_r = os.path.realpath(root)
    return target_r == root_r or target_r.startswith(root_r.rstrip(os.sep) + os.sep)


def _matches(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(rel, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(rel, p) for p in exclude)


def _map_name(rel: PurePosixPath, strip_components: int, flatten: bool) -> PurePosixPath | None:
    if flatten:
        return PurePosixPath(rel.name) if rel.name else None
    parts = rel.parts[strip_components:]
    return PurePosixPath(*parts) if parts else None


def _link_escapes(member_rel: PurePosixPath, linkname: str, *, hard: bool) -> bool:
    """Whether a link's target leaves the extraction folder."""
    link = linkname.replace("\\", "/")
    if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
        return True
    base = [] if hard else list(member_rel.parent.parts)
    depth = len([p for p in base if p != "."])
    for part in link.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def _archive_kind(path: Path, kind: str | None) -> str:
    if kind in ("tar", "zip"):
        return kind
    if kind not in (None, "auto"):
        raise DatasetError(f"unknown archive kind {kind!r}; use 'tar' or 'zip'")
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DatasetError(f"{path} is neither a tar nor a zip archive")


def extract_archive(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    kind: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    strip_components: int = 0,
    flatten: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing escapes.

    Every member is checked before anything is written: an absolute name, a
    ``..`` component, or a symbolic/hard link whose target leaves ``dest``
    raises :class:`DatasetError` naming the member. Tar members are then
    extracted with :mod:`tarfile`'s ``'data'`` filter where Python has it; zip
    members are written one by one (zip symlinks are skipped).

    Parameters
    ----------
    archive : path-like
        The archive file.
    dest : path-like
        The folder to extract into (created).
    kind : {"tar", "zip"}, optional
        Default: detected from the content.
    include, exclude : sequence of str
        ``fnmatch`` patterns on the member path (POSIX, normalised): only members
        matching an ``include`` pattern (all when empty) and no ``exclude``
        pattern are extracted.
    strip_components : int
        Drop this many leading folders from each member path (like ``tar
        --strip-components``); members left empty are skipped.
    flatten : bool
        Put every file directly in ``dest`` (folders dropped; links skipped).
    progress : bool
        A tqdm progress bar over the members (shown only on a terminal).

    Returns
    -------
    list of Path
        The files written (regular files only).

    Raises
    ------
    DatasetError
        A member escapes ``dest``, the archive is corrupt or of an unknown kind.

    Examples
    --------
    >>> import io, tarfile, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with tarfile.open(d / "a.tar", "w") as t:
    ...     info = tarfile.TarInfo("../evil.txt"); info.size = 2
    ...     t.addfile(info, io.BytesIO(b"hi"))
    >>> extract_archive(d / "a.tar", d / "out")
    Traceback (most recent call last):
    ...
    cvretrieval.errors.DatasetError: archive a.tar: member '../evil.txt' would be written \
outside the target folder ('..' leads out of it); refusing to extract this archive
    """
    archive = Path(archive)
    dest = Path(dest)
    if strip_components < 0:
        raise ValueError(f"strip_components must be >= 0, got {strip_components}")
    k = _archive_kind(archive, kind)
    select = _Selection(include, exclude, strip_components, flatten)
    extract = _extract_tar if k == "tar" else _extract_zip
    return extract(archive, dest, select, progress)


@dataclass(frozen=True)
class _Selection:
    """Which archive members :func:`extract_archive` writes, and under which name."""

    include: Sequence[str]
    exclude: Sequence[str]
    strip: int
    flatten: bool

    @property
    def renaming(self) -> bool:
        return bool(self.strip) or self.flatten

    def picks(self, rel: PurePosixPath) -> bool:
        return _matches(rel.as_posix(), self.include, self.exclude)

    def rename(self, rel: PurePosixPath) -> PurePosixPath | None:
        return _map_name(rel, self.strip, self.flatten) if self.renaming else rel


def _bar(items: Sequence[Any], archive: Path, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        items,
        desc=f"extract {archive.name}",
        unit="file",
        disable=None if progress else True,
        leave=False,
    )


def _escape_error(archive: Path, member: str, why: str) -> DatasetError:
    return DatasetError(
        f"archive {archive.name}: member {member!r} would be written outside the target "
        f"folder ({why}); refusing to extract this archive"
    )


def _checked_relpath(archive: Path, name: str) -> PurePosixPath:
    """The member's normalised relative path; refuse an absolute path or a ``..``."""
    rel = member_relpath(name)
    if rel is None:
        raise _escape_error(archive, name, "absolute path or '..'")
    return rel


def _checked_target(archive: Path, dest: Path, name: str, new: PurePosixPath) -> Path:
    """``dest / new``; refuse it when a link already in ``dest`` leads it outside."""
    target = dest / new
    if dest.exists() and not _within(target, dest):
        raise _escape_error(archive, name, "through an existing link in the target")
    return target


def _filtered(archive: Path, dest: Path, m: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """``m`` as :func:`tarfile.data_filter` would extract it; None for a special file.

    The filter refuses absolute links, members or links leading outside ``dest``
    (existing links in ``dest`` included), and device/FIFO members; it makes an
    absolute name relative, as GNU tar does.
    """
    try:
        return tarfile.data_filter(m, str(dest))
    except tarfile.SpecialFileError:
        logger.warning("%s: skipping special member %r", archive.name, m.name)
        return None
    except tarfile.FilterError as exc:
        link = f"link to {m.linkname!r}"
        why = {
            "OutsideDestinationError": "'..' leads out of it",
            "AbsolutePathError": "absolute path",
            "LinkOutsideDestinationError": link,
            "AbsoluteLinkError": f"absolute {link}",
        }.get(type(exc).__name__, type(exc).__name__)
        raise _escape_error(archive, m.name, why) from None


def _checked_by_hand(archive: Path, dest: Path, m: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The checks :func:`_filtered` does, for Pythons without ``tarfile.data_filter``."""
    rel = _checked_relpath(archive, m.name)
    if m.issym() or m.islnk():
        if _link_escapes(rel, m.linkname, hard=m.islnk()):
            kind = "hard link" if m.islnk() else "symbolic link"
            raise _escape_error(archive, m.name, f"{kind} to {m.linkname!r}")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        logger.warning("%s: skipping special member %r", archive.name, m.name)
        return None
    _checked_target(archive, dest, m.name, rel)
    return m


def _extract_tar(archive: Path, dest: Path, select: _Selection, progress: bool) -> list[Path]:
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"cannot open {archive} as a tar archive: {exc}") from exc
    has_filter = hasattr(tarfile, "data_filter")
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} is a corrupt tar archive: {exc}") from exc
        selected: list[tarfile.TarInfo] = []
        written: list[Path] = []
        # 1. check every member before writing anything (all or nothing)
        for m in members:
            check = _filtered if has_filter else _checked_by_hand
            checked = check(archive, dest, m)
            if checked is None:
                continue
            rel = _checked_relpath(archive, checked.name)
            if not select.picks(rel):
                continue
            new = select.rename(rel)
            if new is None or (select.renaming and not checked.isfile()):
                if checked.issym() or checked.islnk():
                    logger.debug("%s: link %r skipped when renaming", archive.name, m.name)
                continue
            if new.as_posix() != m.name:
                m = m.replace(name=new.as_posix(), deep=False) if hasattr(m, "replace") else (
                    _renamed(m, new.as_posix())
                )
            selected.append(m)
            if m.isfile():
                written.append(dest / new)
        # 2. extract (through the same filter where Python has it)
        dest.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"filter": "data"} if has_filter else {}
        try:
            for m in _bar(selected, archive, progress):
                tar.extract(m, dest, **kwargs)
        except tarfile.FilterError as exc:  # a link created between the two passes
            name = getattr(getattr(exc, "tarinfo", None), "name", "?")
            raise _escape_error(archive, name, type(exc).__name__) from exc
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} could not be extracted: {exc}") from exc
    logger.info("extracted %d files from %s into %s", len(written), archive.name, dest)
    return written


def _renamed(m: tarfile.TarInfo, name: str) -> tarfile.TarInfo:  # pragma: no cover - old Pythons
    new = copy.copy(m)
    new.name = name
    return new


def _extract_zip(archive: Path, dest: Path, select: _Selection, progress: bool) -> list[Path]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"cannot open {archive} as a zip archive: {exc}") from exc
    with zf:
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in zf.infolist():
            rel = _checked_relpath(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8", "replace")
                if _link_escapes(rel, link, hard=False):
                    raise _escape_error(archive, info.filename, f"symbolic link to {link!r}")
                logger.warning("%s: skipping symbolic link member %r", archive.name, info.filename)
                continue
            if not select.picks(rel):
                continue
            if info.is_dir():
                continue  # folders are made for the files they hold
            new = select.rename(rel)
            if new is None or new == PurePosixPath("."):
                continue
            target = _checked_target(archive, dest, info.filename, new)
            plan.append((info, target))
        dest.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        seen: set[Path] = set()
        try:
            for info, target in _bar(plan, archive, progress):
                if target in seen:
                    logger.warning("%s: %s written twice (names collide)", archive.name, target)
                seen.add(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not _within(target, dest):  # a link created meanwhile
                    raise _escape_error(archive, info.filename, "through a link")
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written.append(target)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DatasetError(f"{archive} could not be extracted: {exc}") from exc
    logger.info("extracted %d files from %s into %s", len(written), archive.name, dest)
    return written


@dataclass
class SafeExtract:
    """A pooch processor that extracts a downloaded archive with :func:`extract_archive`.

    Parameters
    ----------
    dest : Path
        The folder to extract into.
    kind : {"tar", "zip"}, optional
    include, exclude, strip_components, flatten
        As in :func:`extract_archive`.
    nested : sequence of dict
        Archives inside this one to extract instead of it: each ``{"member",
        "kind", "dest", "include", "exclude", "strip_components", "flatten"}``
        with ``dest`` relative to ``root``. The member is first extracted to
        ``scratch`` (deleted afterwards).
    root : Path, optional
        What nested ``dest`` paths are relative to.
    scratch : Path, optional
        A temporary folder for nested archives.
    """

    dest: Path | None
    kind: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    strip_components: int = 0
    flatten: bool = False
    nested: Sequence[Mapping[str, Any]] = ()
    root: Path | None = None
    scratch: Path | None = None
    progress: bool = False

    def __call__(self, fname: str, action: str, pooch: Any) -> str:
        if not self.nested:
            assert self.dest is not None
            extract_archive(
                fname,
                self.dest,
                kind=self.kind,
                include=self.include,
                exclude=self.exclude,
                strip_components=self.strip_components,
                flatten=self.flatten,
                progress=self.progress,
            )
            return str(self.dest)
        assert self.root is not None and self.scratch is not None
        scratch = self.scratch
        try:
            members = [str(n["member"]) for n in self.nested]
            extract_archive(fname, scratch, kind=self.kind, include=members)
            for inner in self.nested:
                member = scratch / str(member_relpath(str(inner["member"])))
                if not member.is_file():
                    raise DatasetError(
                        f"{Path(fname).name} has no member {inner['member']!r}; the archive "
                        "changed upstream: update the registry"
                    )
                extract_archive(
                    member,
                    self.root / str(member_relpath(str(inner["dest"]))),
                    kind=inner.get("kind", "tar"),
                    include=tuple(inner.get("include", ())),
                    exclude=tuple(inner.get("exclude", ())),
                    strip_components=int(inner.get("strip_components", 0)),
                    flatten=bool(inner.get("flatten", False)),
                    progress=self.progress,
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return str(self.root)


