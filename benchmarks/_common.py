"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
OUT = HERE / "out"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import cv2
    import faiss
    import numpy as np

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "faiss": getattr(faiss, "__version__", "?"),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    from cvretrieval.demo import markdown_table as table

    return table(rows, columns)
