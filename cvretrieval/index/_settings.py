"""The search-time settings of :class:`~cvretrieval.index.Index`, checked when set:
``nprobe`` (IVF), ``ef_search`` (HNSW) and ``refine`` (the exact re-rank)."""

from __future__ import annotations

import numpy as np

from ._factory import auto_refine
from ._faiss import check_positive_int

__all__ = ["SearchSettings"]


class SearchSettings:
    """Validated search-time settings; ``None`` means the index's default."""

    _refine: int | None
    _nprobe: int | None
    _ef_search: int | None
    spec: str
    metric: str
    factory_: str

    def _fitted(self) -> bool:  # pragma: no cover - Index defines it
        raise NotImplementedError

    @property
    def refine(self) -> int | None:
        """Candidates re-ranked exactly at search (None: chosen with the factory)."""
        return self._refine

    @refine.setter
    def refine(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < 0):
            raise ValueError(f"refine must be a non-negative integer or None, got {value!r}")
        self._refine = None if value is None else int(value)

    @property
    def refine_(self) -> int:
        """The candidates :meth:`search` re-ranks when given the exact vectors (0: none)."""
        if self._refine is not None:
            return self._refine
        if self._fitted() and self.spec.strip().lower() == "auto":
            return auto_refine(self.factory_)
        return 0

    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per query (IVF indexes); None means the default."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        self._nprobe = None if value is None else check_positive_int(value, "nprobe")

    @property
    def ef_search(self) -> int | None:
        """HNSW ``efSearch``; None means ``max(64, 2 * k)``."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = None if value is None else check_positive_int(value, "ef_search")

    def _check_refine(self, lsh: bool, factory: str) -> None:
        """ValueError for a re-rank asked of LSH, whose scores are Hamming distances."""
        if self._refine and lsh:
            raise ValueError(
                f"refine re-scores candidates by {self.metric}, but {factory} ranks by Hamming "
                "distance: use refine=0 (or None) with LSH, or another index"
            )
