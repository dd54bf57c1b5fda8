"""Where a network runs: ``device='auto' | 'cpu' | 'cuda'`` for PyTorch and onnxruntime.

``auto`` picks the GPU when one is usable (PyTorch: ``torch.cuda.is_available()``;
onnxruntime: the ``CUDAExecutionProvider`` of ``onnxruntime-gpu`` and a session that
really starts on it), else the CPU. ``cuda`` without a usable GPU is a one-line
:class:`DeviceError` naming what is missing. Nothing here imports a framework at module
import time.

Examples
--------
>>> check_device("AUTO")
'auto'
>>> torch_device("cpu")
'cpu'
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import CVRetrievalError

logger = logging.getLogger(__name__)

#: the values ``device`` accepts
DEVICES = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "DEVICES",
    "DeviceError",
    "check_device",
    "check_onnx_session",
    "onnx_providers",
    "torch_device",
]


class DeviceError(CVRetrievalError, RuntimeError):
    """``device='cuda'`` was asked for but no GPU is usable (the message says what is missing)."""


def check_device(device: Any) -> str:
    """``device`` lower-cased if it is one of :data:`DEVICES`, else a ``ValueError``."""
    value = str(device).strip().lower() if isinstance(device, str) else device
    if value not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return str(value)


def torch_device(device: str, torch: Any = None) -> str:
    """The PyTorch device (``'cpu'`` or ``'cuda'``) that ``device`` stands for.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}
    torch : module, optional
        The imported :mod:`torch` (imported here when not given and needed).

    Raises
    ------
    DeviceError
        For ``'cuda'`` when PyTorch sees no GPU.
    """
    device = check_device(device)
    if device == "cpu":
        return "cpu"
    if torch is None:
        import torch  # noqa: PLC0415 - lazily: torch is an extra
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        build = getattr(torch.version, "cuda", None)
        why = (
            "it is a CPU-only build: install a CUDA build of torch"
            if not build
            else f"it is built for CUDA {build} but finds no GPU or driver"
        )
        raise DeviceError(
            f"device 'cuda': PyTorch {torch.__version__} sees no CUDA GPU ({why}); "
            "use --device cpu or auto"
        )
    return "cpu"


def onnx_providers(device: str, ort: Any) -> list[str]:
    """The onnxruntime execution providers for ``device`` (``ort``: the imported module).

    Raises
    ------
    DeviceError
        For ``'cuda'`` when this onnxruntime has no CUDA provider (``onnxruntime-gpu`` is
        not installed).
    """
    device = check_device(device)
    if device == "cpu":
        return [CPU_PROVIDER]
    available = list(ort.get_available_providers())
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise DeviceError(
            f"device 'cuda': onnxruntime {getattr(ort, '__version__', '?')} has no "
            f"{CUDA_PROVIDER} (it offers {', '.join(available) or 'none'}): install "
            "onnxruntime-gpu in place of onnxruntime, or use device cpu or auto"
        )
    return [CPU_PROVIDER]


def check_onnx_session(device: str, session: Any, path: str) -> str:
    """The device an onnxruntime ``session`` really runs on; for ``device='cuda'`` a
    :class:`DeviceError` when the CUDA provider could not start (no GPU visible)."""
    used = list(session.get_providers())
    on = "cuda" if used and used[0] == CUDA_PROVIDER else "cpu"
    if check_device(device) == "cuda" and on != "cuda":
        raise DeviceError(
            f"device 'cuda': onnxruntime-gpu is installed but could not start {CUDA_PROVIDER} "
            f"for {path} (no GPU visible, or CUDA/cuDNN libraries missing); use device cpu "
            "or auto"
        )
    logger.debug("%s runs on %s (%s)", path, on, ", ".join(used))
    return on
