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
['caltech101', 'holidays', 'revisitop1m', 'roxford5k', 'rparis6k', 'ukbench']
>>> rebase_url("https://www.robots.ox.ac.uk/~vgg/a.tgz", "http://127.0.0.1:8000/mirror")
'http://127.0.0.1:8000/mirror/~vgg/a.tgz'
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from cvretrieval._archive import SafeExtract, extract_archive, member_relpath
from cvretrieval._download import ResumableDownloader, rebase_url
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
    rel = member_relpath(value)
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


def _expand_shards(name: str, files: Any) -> list[Any]:
    """File specs with ``"shards": [first, last]`` become one spec per number ``{i}``.

    ``{i}`` in ``url``, ``fname`` and ``dest`` is replaced by each number of the
    inclusive range (revisitop1m: ``revisitop1m.{i}.tar.gz``, 1..100).
    """
    if not isinstance(files, list):
        return files
    out: list[Any] = []
    for k, spec in enumerate(files):
        if not isinstance(spec, Mapping) or "shards" not in spec:
            out.append(spec)
            continue
        rng = spec["shards"]
        if (
            not isinstance(rng, list)
            or len(rng) != 2
            or not all(type(v) is int for v in rng)
            or not 0 <= rng[0] <= rng[1]
        ):
            raise DatasetError(
                f"registry entry {name!r} file {k}: shards must be [first, last] with "
                f"0 <= first <= last, got {rng!r}"
            )
        if "{i}" not in str(spec.get("fname", "")):
            raise DatasetError(f"registry entry {name!r} file {k}: a sharded fname needs '{{i}}'")
        for i in range(rng[0], rng[1] + 1):
            one = {key: v for key, v in spec.items() if key != "shards"}
            for key in ("url", "fname", "dest"):
                if isinstance(one.get(key), str):
                    one[key] = one[key].replace("{i}", str(i))
            out.append(one)
    return out


def _check_entry(name: str, entry: Any) -> list[dict[str, Any]]:
    """Validate a registry entry; return its file specs (shards expanded)."""
    if not isinstance(entry, Mapping):
        raise DatasetError(f"registry entry {name!r} must be an object")
    files = _expand_shards(name, entry.get("files"))
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
        files = _expand_shards(name, e.get("files", []))
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
        A registry name: ``roxford5k``, ``rparis6k``, ``revisitop1m`` (their 1M
        distractors), ``holidays``, ``ukbench``, ``caltech101`` (see
        :func:`list_datasets`).
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
                dest=None if nested else to / str(member_relpath(spec["dest"])),
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
            dest = to / str(member_relpath(spec["dest"]))
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
