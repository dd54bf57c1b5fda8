"""A ``.npy`` file that grows by appended rows (private helper of the on-disk stores)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format
from numpy.typing import NDArray

__all__ = ["GrowingNpy"]


class GrowingNpy:
    """A ``.npy`` file whose first dimension grows as rows are appended.

    The header is written by :func:`numpy.lib.format.write_array_header_1_0`, which
    pads it so that the first dimension can grow to 21 digits without changing its
    length; :meth:`finish` rewrites it in place with the final shape.
    """

    def __init__(
        self,
        path: Path,
        dtype: np.dtype,
        tail: tuple[int, ...],
        rows: int = 0,
        resume: bool = False,
    ) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.tail = tuple(tail)
        self.rows = int(rows)
        if resume:
            self.fh: BinaryIO = open(path, "r+b")
            self.header_len = self._header_len()
            self.fh.truncate(self.header_len + self.rows * self.row_bytes)
            self.fh.seek(0, os.SEEK_END)
        else:
            self.fh = open(path, "wb")
            self._write_header()
            self.header_len = self.fh.tell()

    @property
    def row_bytes(self) -> int:
        return int(self.dtype.itemsize * int(np.prod(self.tail, dtype=np.int64)))

    def _header_len(self) -> int:
        self.fh.seek(0)
        version = npy_format.read_magic(self.fh)
        if version == (1, 0):
            npy_format.read_array_header_1_0(self.fh)
        else:
            npy_format.read_array_header_2_0(self.fh)
        return self.fh.tell()

    def _write_header(self) -> None:
        header = {
            "descr": npy_format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.tail),
        }
        npy_format.write_array_header_1_0(self.fh, header)

    def write(self, rows: NDArray[Any]) -> None:
        arr = np.ascontiguousarray(rows, dtype=self.dtype)
        if arr.shape[1:] != self.tail:
            raise ValueError(
                f"rows of shape {arr.shape[1:]} appended to {self.path.name}, "
                f"whose rows have shape {self.tail}"
            )
        self.fh.write(arr.tobytes())
        self.rows += arr.shape[0]

    def finish(self) -> None:
        self.fh.flush()
        self.fh.seek(0)
        self._write_header()
        if self.fh.tell() != self.header_len:  # pragma: no cover - NumPy pads for growth
            raise RuntimeError(f"the header of {self.path} changed length; the file is corrupt")
        self.fh.close()

    def abort(self) -> None:
        self.fh.close()
