"""Resumable HTTP(S) downloads for :mod:`cvretrieval.fetch` (a pooch downloader), and mirrors."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cvretrieval.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = ["ResumableDownloader", "rebase_url"]

_CHUNK = 1 << 16


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


