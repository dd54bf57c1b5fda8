"""Memory sizes: ``parse_size("4G")`` for budgets, ``format_size`` for messages."""

from __future__ import annotations

import math
import re
from numbers import Integral
from typing import Any

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: Any) -> int:
    """Bytes from a memory size: ``"4G"``, ``"500M"``, ``"1.5GB"``, ``"2GiB"``, ``"100k"``, an int.

    Units are binary (``K`` = 1024, ``M`` = 1024**2, ``G`` = 1024**3, ``T`` =
    1024**4) with or without a trailing ``B``/``iB``; a bare number is bytes.

    Raises
    ------
    ValueError
        One line naming the value, for anything else (negative, empty, unknown unit).

    Examples
    --------
    >>> parse_size("4G"), parse_size("500M"), parse_size("1.5GB"), parse_size(2048)
    (4294967296, 524288000, 1610612736, 2048)
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid memory size {value!r}: use a number of bytes or e.g. 4G, 500M")
    if isinstance(value, Integral):
        if value <= 0:
            raise ValueError(f"memory size must be positive, got {value}")
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([kmgt]?)(i?b)?", text)
    if not m or (m.group(3) == "ib" and not m.group(2)):
        raise ValueError(
            f"invalid memory size {value!r}: use a number of bytes or a number with a unit "
            "K, M, G or T (binary), e.g. 4G, 500M, 1.5GB"
        )
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return size


def format_size(n_bytes: float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (for log messages)."""
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
