"""Download public retrieval benchmarks: resumable, checksum-verified, safely extracted.

:func:`fetch_dataset` reads the registry ``cvretrieval/data/datasets.json`` (name ->
files: URL, published checksum, archive kind, where its content goes) and, for
each file:

1. downloads it into ``TO/.cvret-fetch/downloads/`` with
   :class:`ResumableDownloader`: bytes go to ``<file>.part`` and an interrupted
   download continues where it stopped (an HTTP ``Range`` request);
2. lets `pooch <https://www.fatiando.org/pooch/>`_ check the hash (the file only
   gets its final name when the hash matches; a mismatch deletes it) and cache
   it (a verified archive already there is not downloaded again);
3. extracts it with :func:`extract_archive`, which refuses any member that would
   land outside its folder (absolute path, ``..``, a link pointing outside)
   before writing anything.

Nothing is written outside ``TO``. When the registry has no published checksum
for a file (``"sha256": null``), fetching refuses unless ``allow_unverified=True``;
the SHA-256 of what was then downloaded is logged and recorded in
``TO/.cvret-fetch/<name>.json``.

``base_url`` (or the environment variable ``CVRET_FETCH_BASE_URL``) replaces the
scheme and host of every URL, e.g. to use a mirror or a local test server.

Examples
--------
>>> sorted(load_registry())
['caltech101', 'holidays', 'roxford5k', 'rparis6k', 'ukbench']
>>> rebase_url("https://www.robots.ox.ac.uk/~vgg/a.tgz", "http://127.0.0.1:8000/mirror")
'http://127.0.0.1:8000/mirror/~vgg/a.tgz'
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from cvretrieval._json import write_json_atomic
from cvretrieval.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_BASE_URL",
    "ResumableDownloader",
    "SafeExtract",
    "dataset_info",
    "extract_archive",
    "fetch_dataset",
    "list_datasets",
    "load_registry",
    "rebase_url",
]

ENV_BASE_URL = "CVRET_FETCH_BASE_URL"
"""Environment variable read when ``base_url`` is not given."""

WORK_DIR = ".cvret-fetch"
"""Folder inside ``to`` holding downloads, partial files and fetch records."""

_KINDS = ("file", "tar", "zip")
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}
_CHUNK = 1 << 16


# =========================================================================== registry
def load_registry(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Read the data set registry (name -> entry).

    Parameters
    ----------
    path : path-like, optional
        A registry JSON file; default the one shipped in ``cvretrieval/data``.

    Returns
    -------
    dict
        ``{name: entry}``; see ``cvretrieval/data/datasets.json`` for the keys.

    Raises
    ------
    DatasetError
        If the file is missing or not a registry.
    """
    if path is None:
        from importlib.resources import files

        text = files("cvretrieval").joinpath("data/datasets.json").read_text(encoding="utf-8")
        where = "cvretrieval/data/datasets.json"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"cannot read the registry {where!r}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"registry {where!r} is not valid JSON ({exc})") from exc
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(datasets, dict):
        raise DatasetError(f"registry {where!r} has no 'datasets' object")
    return datasets


def _check_relpath(value: Any, what: str) -> PurePosixPath:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{what} must be a non-empty relative path, got {value!r}")
    rel = _member_relpath(value)
    if rel is None:
        raise DatasetError(f"{what} {value!r} must be a relative path without '..'")
    return rel


def _known_hash(name: str, spec: Mapping[str, Any]) -> str | None:
    """The pooch-style hash of a file entry (``"md5:..."``, a bare sha256) or None."""
    given = [(alg, spec.get(alg)) for alg in ("sha256", "md5") if spec.get(alg)]
    if len(given) > 1:
        raise DatasetError(f"registry entry {name!r}: give sha256 or md5 for a file, not both")
    if not given:
        return None
    alg, value = given[0]
    value = str(value).lower()
    if not _HEX[alg].match(value):
        raise DatasetError(f"registry entry {name!r}: {alg} {value!r} is not a hex digest")
    return value if alg == "sha256" else f"{alg}:{value}"


def _check_entry(name: str, entry: Any) -> list[dict[str, Any]]:
    """Validate a registry entry; return its file specs."""
    if not isinstance(entry, Mapping):
        raise DatasetError(f"registry entry {name!r} must be an object")
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise DatasetError(f"registry entry {name!r} has no 'files' list")
    _check_relpath(entry.get("path", "."), f"registry entry {name!r}: path")
    out = []
    for i, spec in enumerate(files):
        where = f"registry entry {name!r} file {i}"
        if not isinstance(spec, Mapping):
            raise DatasetError(f"{where} must be an object")
        for key in ("url", "fname"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise DatasetError(f"{where} needs a {key!r} string")
        if "/" in spec["fname"] or "\\" in spec["fname"] or spec["fname"] in (".", ".."):
            raise DatasetError(f"{where}: fname {spec['fname']!r} must be a plain file name")
        kind = spec.get("kind", "file")
        if kind not in _KINDS:
            raise DatasetError(f"{where}: kind {kind!r} is not one of {_KINDS}")
        if spec.get("nested"):
            if kind == "file":
                raise DatasetError(f"{where}: only an archive can have 'nested' members")
            for j, inner in enumerate(spec["nested"]):
                _check_relpath(inner.get("member"), f"{where} nested {j}: member")
                _check_relpath(inner.get("dest"), f"{where} nested {j}: dest")
                if inner.get("kind", "tar") not in ("tar", "zip"):
                    raise DatasetError(f"{where} nested {j}: kind must be tar or zip")
        else:
            _check_relpath(spec.get("dest"), f"{where}: dest")
        _known_hash(name, spec)
        out.append(dict(spec))
    return out


def list_datasets(registry: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One summary row per registered data set, sorted by name.

    Returns
    -------
    list of dict
        ``name``, ``title``, ``images``, ``queries``, ``approx_size``, ``format``,
        ``verified`` (every file has a published checksum) and ``homepage``.
    """
    reg = load_registry() if registry is None else registry
    rows = []
    for name in sorted(reg):
        e = reg[name]
        files = e.get("files", [])
        rows.append(
            {
                "name": name,
                "title": e.get("title", name),
                "images": e.get("images"),
                "queries": e.get("queries"),
                "approx_size": e.get("approx_size"),
                "format": e.get("format"),
                "verified": bool(files) and all(_known_hash(name, f) for f in files),
                "homepage": e.get("homepage"),
            }
        )
    return rows


def dataset_info(name: str, registry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The registry entry of ``name`` (a copy); DatasetError naming the known names if absent."""
    reg = load_registry() if registry is None else registry
    if name not in reg:
        raise DatasetError(
            f"unknown data set {name!r}; known: {', '.join(sorted(reg)) or '(none)'}"
        )
    return copy.deepcopy(dict(reg[name]))


# =========================================================================== URLs
def rebase_url(url: str, base_url: str | None) -> str:
    """Replace the scheme and host of ``url`` by ``base_url`` (its path is kept as a prefix).

    Parameters
    ----------
    url : str
        The official URL.
    base_url : str or None
        ``scheme://host[:port][/prefix]``; ``None`` or ``""`` returns ``url`` unchanged.

    Examples
    --------
    >>> rebase_url("ftp://ftp.example.org/pub/a.tar.gz?x=1", "http://localhost:9")
    'http://localhost:9/pub/a.tar.gz?x=1'
    """
    if not base_url:
        return url
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise DatasetError(
            f"base URL {base_url!r} must look like scheme://host[:port][/prefix], "
            "e.g. http://127.0.0.1:8000"
        )
    parts = urlsplit(url)
    out = base_url.rstrip("/") + (parts.path or "/")
    if parts.query:
        out += "?" + parts.query
    return out


# =========================================================================== download
class ResumableDownloader:
    """A pooch downloader that resumes interrupted HTTP(S) downloads.

    Bytes are appended to ``part_path``; when that file already exists the
    request asks for the rest only (``Range: bytes=<size>-``). A server that
    ignores the range (status 200) makes the download restart from zero. When
    the transfer is complete the ``.part`` file is renamed to the temporary file
    pooch hands over, so pooch's hash check decides whether it becomes final.
    ``ftp://`` URLs are handed to :class:`pooch.FTPDownloader` (no resuming).

    Parameters
    ----------
    part_path : path-like
        Where the partial download lives (same folder as the final file).
    progress : bool
        Show a tqdm progress bar (only when stderr is a terminal).
    timeout : float
        Seconds to wait for the server to connect or send the next bytes.
    chunk_size : int
        Bytes read per step.

    Notes
    -----
    Called by pooch as ``downloader(url, output_file, pooch, check_only=False)``.
    """

    def __init__(
        self,
        part_path: str | os.PathLike[str],
        *,
        progress: bool = True,
        timeout: float = 60.0,
        chunk_size: int = _CHUNK,
    ) -> None:
        self.part_path = Path(part_path)
        self.progress = progress
        self.timeout = timeout
        self.chunk_size = chunk_size

    def __call__(
        self, url: str, output_file: Any, pooch: Any, check_only: bool = False
    ) -> bool | None:
        if urlsplit(url).scheme == "ftp":
            import pooch as _pooch

            return _pooch.FTPDownloader(progressbar=bool(self.progress))(
                url, output_file, pooch, check_only=check_only
            )
        import requests

        if check_only:
            r = requests.head(url, allow_redirects=True, timeout=self.timeout)
            return bool(r.ok)
        self._download(url, restart_allowed=True)
        os.replace(self.part_path, output_file)
        return None

    def _download(self, url: str, *, restart_allowed: bool) -> None:
        import requests
        import urllib3

        part = self.part_path
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if offset and r.status_code == 416:
                # nothing left to send: complete if the server's size is ours
                m = re.match(r"bytes \*/(\d+)", r.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == offset:
                    logger.info("%s was already complete (%d bytes)", part.name, offset)
                    return
                logger.warning("%s is larger than the remote file; starting again", part.name)
                part.unlink()
                if restart_allowed:
                    self._download(url, restart_allowed=False)
                    return
            r.raise_for_status()
            mode = "wb"
            if offset:
                start = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                if r.status_code == 206 and start and int(start.group(1)) == offset:
                    mode = "ab"
                    logger.info("resuming %s at byte %d", part.name, offset)
                else:
                    logger.info("server ignored the range request; downloading %s again", url)
                    offset = 0
            length = r.headers.get("Content-Length")
            total = int(length) + offset if length and length.isdigit() else None
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[: -len(".part")] if part.name.endswith(".part") else part.name,
                disable=None if self.progress else True,
                leave=False,
            )
            try:
                with open(part, mode) as fh:
                    # raw reads: the bytes as sent (no content decoding, so offsets stay
                    # valid for the next Range request) and a short read is kept, not lost
                    while True:
                        chunk = r.raw.read(self.chunk_size, decode_content=False)
                        if not chunk:
                            break
                        fh.write(chunk)
                        bar.update(len(chunk))
            except urllib3.exceptions.HTTPError as exc:
                raise DatasetError(
                    f"download of {url} broke off after {part.stat().st_size} bytes ({exc}); "
                    "run the same command again to resume"
                ) from exc
            finally:
                bar.close()
        size = part.stat().st_size
        if total is not None and size != total:
            raise DatasetError(
                f"download of {url} stopped at {size} of {total} bytes; run the same "
                "command again to resume"
            )


# =========================================================================== extraction
def _member_relpath(name: str) -> PurePosixPath | None:
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
outside the target folder (absolute path or '..'); refusing to extract this archive
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
    rel = _member_relpath(name)
    if rel is None:
        raise _escape_error(archive, name, "absolute path or '..'")
    return rel


def _checked_target(archive: Path, dest: Path, name: str, new: PurePosixPath) -> Path:
    """``dest / new``; refuse it when a link already in ``dest`` leads it outside."""
    target = dest / new
    if dest.exists() and not _within(target, dest):
        raise _escape_error(archive, name, "through an existing link in the target")
    return target


def _extract_tar(archive: Path, dest: Path, select: _Selection, progress: bool) -> list[Path]:
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"cannot open {archive} as a tar archive: {exc}") from exc
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} is a corrupt tar archive: {exc}") from exc
        selected: list[tarfile.TarInfo] = []
        written: list[Path] = []
        # 1. check everything before writing anything
        for m in members:
            rel = _checked_relpath(archive, m.name)
            if m.issym() or m.islnk():
                if _link_escapes(rel, m.linkname, hard=m.islnk()):
                    kind = "hard link" if m.islnk() else "symbolic link"
                    raise _escape_error(archive, m.name, f"{kind} to {m.linkname!r}")
            if not select.picks(rel):
                continue
            if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                logger.warning("%s: skipping special member %r", archive.name, m.name)
                continue
            new = select.rename(rel)
            if new is None or (select.renaming and not m.isfile()):
                if m.issym() or m.islnk():
                    logger.debug("%s: link %r skipped when renaming", archive.name, m.name)
                continue
            target = _checked_target(archive, dest, m.name, new)
            if new.as_posix() != m.name:
                m = (
                    m.replace(name=new.as_posix(), deep=False)
                    if hasattr(m, "replace")
                    else (_renamed(m, new.as_posix()))
                )
            selected.append(m)
            if m.isfile():
                written.append(target)
        # 2. extract
        dest.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if hasattr(tarfile, "data_filter"):
            kwargs["filter"] = "data"
        try:
            for m in _bar(selected, archive, progress):
                tar.extract(m, dest, **kwargs)
        except tarfile.FilterError as exc:  # pragma: no cover - caught by the checks above
            name = getattr(getattr(exc, "tarinfo", None), "name", "?")
            raise _escape_error(archive, name, str(exc)) from exc
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
                member = scratch / str(_member_relpath(str(inner["member"])))
                if not member.is_file():
                    raise DatasetError(
                        f"{Path(fname).name} has no member {inner['member']!r}; the archive "
                        "changed upstream: update the registry"
                    )
                extract_archive(
                    member,
                    self.root / str(_member_relpath(str(inner["dest"]))),
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


# =========================================================================== fetch
def _dests(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("nested"):
        return [str(n["dest"]) for n in spec["nested"]]
    return [str(spec["dest"])]


def _record_path(to: Path, name: str) -> Path:
    return to / WORK_DIR / f"{name}.json"


def _already_fetched(to: Path, name: str, files: Iterable[Mapping[str, Any]]) -> bool:
    rec = _record_path(to, name)
    if not rec.is_file():
        return False
    try:
        doc = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not doc.get("complete"):
        return False
    done = {f.get("fname") for f in doc.get("files", [])}
    return all(
        spec["fname"] in done and all((to / d).exists() for d in _dests(spec)) for spec in files
    )


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's own INFO messages (it logs to stderr); ours say the same."""
    import pooch

    plog = pooch.get_logger()
    level = plog.level
    plog.setLevel(logging.WARNING)
    try:
        yield
    finally:
        plog.setLevel(level)


def fetch_dataset(
    name: str,
    to: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    progress: bool = True,
    registry: Mapping[str, Any] | None = None,
    allow_unverified: bool = False,
    keep_archives: bool = False,
    force: bool = False,
) -> Path:
    """Download, verify and extract a registered data set into ``to``.

    Parameters
    ----------
    name : str
        A registry name: ``roxford5k``, ``rparis6k``, ``holidays``, ``ukbench``,
        ``caltech101`` (see :func:`list_datasets`).
    to : path-like
        The folder that receives everything (created). Downloads and partial
        files live in ``to/.cvret-fetch/``; nothing is written elsewhere.
    base_url : str, optional
        Replace the scheme and host of every URL (a mirror, a local server);
        default the environment variable ``CVRET_FETCH_BASE_URL``, else none.
    progress : bool
        Progress bars (tqdm) for downloads, shown only on a terminal.
    registry : mapping, optional
        ``{name: entry}`` to use instead of the shipped registry.
    allow_unverified : bool
        Download files for which no checksum is published; their SHA-256 is
        logged and written to ``to/.cvret-fetch/<name>.json``. Without it such a
        data set is refused before any byte is downloaded.
    keep_archives : bool
        Keep the downloaded archives in ``to/.cvret-fetch/downloads`` (default:
        deleted once extracted).
    force : bool
        Fetch again even if ``to/.cvret-fetch/<name>.json`` says it is done.

    Returns
    -------
    Path
        The folder (or file) to give :func:`cvretrieval.datasets.load_dataset`:
        ``to / entry["path"]``.

    Raises
    ------
    DatasetError
        Unknown name, no checksum and ``allow_unverified`` false, a checksum
        mismatch (the bad file is deleted), a network failure (the partial file
        is kept: running again resumes), an archive member escaping its folder.

    Examples
    --------
    >>> fetch_dataset("caltech101", "data")          # doctest: +SKIP
    PosixPath('data/caltech101/101_ObjectCategories')
    """
    import pooch
    import requests

    reg = load_registry() if registry is None else registry
    entry = dataset_info(name, reg)
    files = _check_entry(name, entry)
    to = Path(to)
    result = to / str(_check_relpath(entry.get("path", "."), f"registry entry {name!r}: path"))
    if base_url is None:
        base_url = os.environ.get(ENV_BASE_URL) or None

    if not force and _already_fetched(to, name, files):
        logger.info("%s is already in %s (delete %s to fetch again)", name, to, WORK_DIR)
        return result
    unverified = [f["fname"] for f in files if _known_hash(name, f) is None]
    if unverified and not allow_unverified:
        raise DatasetError(
            f"no published checksum for {', '.join(unverified)} of data set {name!r}, so the "
            "download cannot be verified; pass allow_unverified=True (cvret: "
            "--allow-unverified) to download it anyway: its SHA-256 will be logged and "
            f"recorded in {to / WORK_DIR / (name + '.json')}"
        )

    downloads = to / WORK_DIR / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    records = []
    for spec in files:
        fname = spec["fname"]
        known = _known_hash(name, spec)
        url = rebase_url(spec["url"], base_url)
        downloader = ResumableDownloader(downloads / (fname + ".part"), progress=progress)
        kind = spec.get("kind", "file")
        processor = None
        if kind != "file":
            nested = list(spec.get("nested") or ())
            processor = SafeExtract(
                dest=None if nested else to / str(_member_relpath(spec["dest"])),
                kind=kind,
                include=tuple(spec.get("include", ())),
                exclude=tuple(spec.get("exclude", ())),
                strip_components=int(spec.get("strip_components", 0)),
                flatten=bool(spec.get("flatten", False)),
                nested=nested,
                root=to,
                scratch=to / WORK_DIR / f"scratch-{fname}",
                progress=progress,
            )
        logger.info("fetching %s (%s)", fname, url)
        t0 = time.perf_counter()
        try:
            with _quiet_pooch():
                pooch.retrieve(
                    url,
                    known_hash=known,
                    fname=fname,
                    path=downloads,
                    downloader=downloader,
                    processor=processor,
                )
        except DatasetError:
            raise
        except requests.exceptions.RequestException as exc:
            raise DatasetError(
                f"could not download {url}: {exc}; check the network (or base URL) and run "
                "again: the partial download is kept and resumed"
            ) from exc
        except ValueError as exc:
            if "hash" in str(exc).lower():
                raise DatasetError(
                    f"checksum mismatch for {fname} from {url}: expected {known}; the file "
                    "was deleted. The download was corrupted or the file changed upstream: "
                    f"run again, or report it if it persists ({exc})"
                ) from exc
            raise
        except OSError as exc:
            raise DatasetError(f"could not download {url}: {exc}") from exc
        archive = downloads / fname
        rec: dict[str, Any] = {"fname": fname, "url": url, "verified": known is not None}
        if known is None and archive.exists():
            digest = pooch.file_hash(str(archive), alg="sha256")
            rec["sha256"] = digest
            logger.warning(
                "%s has no published checksum; downloaded file has SHA-256 %s", fname, digest
            )
        elif known is not None:
            rec["hash"] = known
        if kind == "file":
            dest = to / str(_member_relpath(spec["dest"]))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if keep_archives:
                shutil.copy2(archive, dest)
            else:
                os.replace(archive, dest)
        elif not keep_archives and archive.exists():
            archive.unlink()
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        records.append(rec)

    record = {
        "name": name,
        "path": str(result.relative_to(to)),
        "format": entry.get("format"),
        "complete": True,
        "files": records,
    }
    rec_path = _record_path(to, name)
    write_json_atomic(rec_path, record, indent=1)
    logger.info("%s ready in %s (read it with load_dataset(%r))", name, result, str(result))
    return result
