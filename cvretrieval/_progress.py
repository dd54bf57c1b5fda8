"""The one progress bar of the package (tqdm, a core dependency).

``enabled`` follows the command line's convention: ``None`` shows the bar when standard
error is a terminal, ``True`` always, ``False`` never (``-q`` and ``--json -``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "show_progress"]


def show_progress(enabled: bool | None) -> bool:
    """Whether a bar is shown: ``None`` -> when standard error is a terminal."""
    return sys.stderr.isatty() if enabled is None else bool(enabled)


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 desc: str | None = None, unit: str = "it", enabled: bool | None = None) -> Any:
    """A tqdm bar (a context manager and an iterable); silent unless :func:`show_progress`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show_progress(enabled))
