"""Re-ranking of search results: spatial verification and query expansion.

* :mod:`cvretrieval.rerank.spatial`: geometric verification of the top results;
* :mod:`cvretrieval.rerank.qe`: average / alpha query expansion and database-side
  augmentation, pure functions on numpy arrays.

Names are re-exported lazily (``from cvretrieval.rerank import requery``), so importing
this package loads neither module until a name is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_MODULES = ("qe", "spatial")


def _public(module: str) -> list[str]:
    return list(getattr(import_module(f".{module}", __name__), "__all__", []))


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    for module in _MODULES:
        if name in _public(module):
            return getattr(import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*_MODULES, *(n for m in _MODULES for n in _public(m))})
