"""The Streamlit web demo behind ``cvret serve`` (extra ``web``).

:func:`serve` checks the bundles, then runs ``python -m streamlit run app.py`` in a
subprocess bound to ``127.0.0.1`` by default and waits for it. The page searches
every bundle with an uploaded image or one of the bundle's own images, optionally
restricted to a box dragged or typed on the query, and shows the top K of each
bundle side by side; a second page shows a saved evaluation report.

Streamlit itself is imported only by the app script, so importing this package
is cheap and works without the extra.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from .core import DEFAULT_MAX_UPLOAD_MB, AppSettings, parse_app_args, read_manifest

__all__ = [
    "APP_PATH",
    "DEFAULT_MAX_UPLOAD_MB",
    "AppSettings",
    "parse_app_args",
    "require_web_extra",
    "serve",
    "streamlit_command",
]

logger = logging.getLogger(__name__)

APP_PATH = Path(__file__).resolve().with_name("app.py")
"""The Streamlit script ``serve`` runs."""

_EXTRA_MODULES = {"streamlit": "streamlit", "streamlit_cropper": "streamlit-cropper"}


def require_web_extra() -> None:
    """Raise :class:`MissingExtraError` unless streamlit and streamlit-cropper are installed."""
    missing = [pkg for mod, pkg in _EXTRA_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"the web demo needs {' and '.join(missing)}, which {verb} not installed: "
            "pip install 'cvretrieval[web]'"
        )


def streamlit_command(
    bundles: Sequence[str | os.PathLike[str]],
    host: str = "127.0.0.1",
    port: int = 8501,
    report: str | os.PathLike[str] | None = None,
    headless: bool = True,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
) -> list[str]:
    """The command line :func:`serve` runs (no checks; paths made absolute).

    Examples
    --------
    >>> cmd = streamlit_command(["/data/a.cvret"], port=9000)
    >>> cmd[1:4] == ["-m", "streamlit", "run"], cmd[cmd.index("--server.port") + 1]
    (True, '9000')
    >>> cmd[cmd.index("--") + 1:]
    ['--bundle', '/data/a.cvret', '--max-upload-mb', '20']
    """
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.address", str(host),
        "--server.port", str(int(port)),
        "--server.headless", "true" if headless else "false",
        "--server.maxUploadSize", str(int(max_upload_mb)),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--",
    ]
    for bundle in bundles:
        cmd += ["--bundle", str(Path(bundle).absolute())]
    if report is not None:
        cmd += ["--report", str(Path(report).absolute())]
    cmd += ["--max-upload-mb", str(int(max_upload_mb))]
    return cmd


def serve(
    bundles: Sequence[str | os.PathLike[str]],
    host: str = "127.0.0.1",
    port: int = 8501,
    report: str | os.PathLike[str] | None = None,
    headless: bool = True,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
) -> int:
    """Serve the web demo on ``http://host:port`` until it is stopped; return its exit code.

    Parameters
    ----------
    bundles : sequence of path
        One or more bundle folders (``cvret index -o``); their results appear side by side.
    host : str, default '127.0.0.1'
        Address to bind. The default keeps the demo private to this machine; use
        ``0.0.0.0`` only on a trusted network (there is no authentication).
    port : int, default 8501
    report : path, optional
        A folder with ``index.html`` from ``cvret eval --report``, shown on the second page.
    headless : bool, default True
        False lets Streamlit open a browser tab.
    max_upload_mb : int, default 20
        Largest accepted upload, in megabytes.

    Returns
    -------
    int
        The Streamlit process's exit code (0 after Ctrl-C).

    Raises
    ------
    MissingExtraError
        streamlit or streamlit-cropper is missing (``pip install 'cvretrieval[web]'``).
    BundleError
        A path is not a bundle folder.
    ValueError
        No bundle, a bad port or a bad upload limit.
    """
    require_web_extra()
    if not bundles:
        raise ValueError("give at least one bundle folder to serve (made by `cvret index -o`)")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    if int(max_upload_mb) < 1:
        raise ValueError(f"max_upload_mb must be a positive integer, got {max_upload_mb}")
    for bundle in bundles:
        read_manifest(bundle)
    if report is not None and not (Path(report) / "index.html").is_file():
        logger.warning("%s holds no index.html: the report page will say so", report)
    cmd = streamlit_command(bundles, host, port, report, headless, max_upload_mb)
    logger.info("serving %d bundle(s) on http://%s:%s", len(bundles), host, port)
    logger.debug("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd)
    previous = _stop_on_sigterm()
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too; let it shut down cleanly
        try:
            return _exit_code(proc.wait(timeout=10))
        except subprocess.TimeoutExpired:
            proc.terminate()
            return _exit_code(proc.wait())
    finally:
        if proc.poll() is None:  # never leave a server behind
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """While serving, turn SIGTERM into SystemExit so the ``finally`` stops the server.

    Returns the previous handler (None when not in the main thread, where Python
    cannot install handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def _raise(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _raise)


def _exit_code(code: int) -> int:
    """Stopping the demo with Ctrl-C is a normal end."""
    return 0 if code in (-signal.SIGINT, 130, -signal.SIGTERM) else code
