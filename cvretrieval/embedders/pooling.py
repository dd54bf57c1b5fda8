"""Pooling of CNN feature maps into one vector, and de-quantisation of integer outputs.

Small pure functions on numpy arrays, in the spirit of ``cirtorch.layers.functional``.
A feature map is ``(N, C, H, W)`` (``layout="nchw"``) or ``(N, H, W, C)``
(``layout="nhwc"``); a token sequence is ``(N, L, D)``.

References
----------
.. [1] Radenović, Tolias & Chum, "Fine-tuning CNN image retrieval with no human
       annotation", TPAMI 2018 (GeM pooling).
.. [2] Tolias, Sicre & Jégou, "Particular object retrieval with integral max-pooling of
       CNN activations", ICLR 2016 (MAC).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: pooling methods accepted by :func:`pool`; ``none`` flattens the output
POOLINGS = ("gap", "gem", "mac", "none")
LAYOUTS = ("nchw", "nhwc")


def gap(x: ArrayLike, axis: int | tuple[int, ...] = (2, 3)) -> NDArray[np.float32]:
    """Global average pooling over ``axis`` (default: the spatial axes of NCHW).

    Examples
    --------
    >>> gap(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
    [[1.5, 5.5]]
    """
    return np.asarray(x, np.float32).mean(axis=axis, dtype=np.float64).astype(np.float32)


def mac(x: ArrayLike, axis: int | tuple[int, ...] = (2, 3)) -> NDArray[np.float32]:
    """Maximum activation of convolutions: global max pooling over ``axis`` [2]_.

    Examples
    --------
    >>> mac(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
    [[3.0, 7.0]]
    """
    return np.asarray(x, np.float32).max(axis=axis)


def gem(
    x: ArrayLike, p: float = 3.0, axis: int | tuple[int, ...] = (2, 3), eps: float = 1e-6
) -> NDArray[np.float32]:
    """Generalised mean pooling ``(mean(clamp(x, eps) ** p)) ** (1 / p)`` over ``axis`` [1]_.

    ``p = 1`` is average pooling of the clamped activations; ``p -> inf`` tends to max pooling.

    Parameters
    ----------
    x : (N, C, H, W) array_like
        Activations (any layout; ``axis`` names the pooled axes).
    p : float, default 3
        The exponent, > 0.
    axis : int or tuple of int
        Axes to pool over.
    eps : float
        Activations are clamped to at least ``eps`` (as in cirtorch) so fractional
        powers stay real.

    Returns
    -------
    (N, C) ndarray of float32

    Examples
    --------
    >>> gem(np.array([[[[1.0, 8.0]]]]), p=1.0).tolist()
    [[4.5]]
    >>> round(float(gem(np.array([[[[1.0, 8.0]]]]), p=3.0)[0, 0]), 4)  # ((1 + 512) / 2) ** (1/3)
    6.3537
    """
    if not p > 0:
        raise ValueError(f"GeM needs p > 0, got p={p!r}")
    xc = np.maximum(np.asarray(x, np.float64), eps)
    # scale by the max so large p does not overflow: (mean((x/m)^p))^(1/p) * m
    m = xc.max(axis=axis, keepdims=True)
    pooled = np.mean((xc / m) ** p, axis=axis, keepdims=True) ** (1.0 / p) * m
    return np.squeeze(pooled, axis=axis).astype(np.float32)


def dequantize(
    q: ArrayLike,
    scale: float | Sequence[float] | NDArray[np.floating],
    zero_point: int | Sequence[int] | NDArray[np.integer],
    axis: int = -1,
) -> NDArray[np.float32]:
    """Real values of a quantised tensor: ``scale * (q - zero_point)``.

    Per-channel parameters (arrays longer than one) apply along ``axis``.

    Examples
    --------
    >>> dequantize(np.array([0, 128, 255], np.uint8), 0.5, 128).tolist()
    [-64.0, 0.0, 63.5]
    """
    qf = np.asarray(q).astype(np.float32)
    s = np.atleast_1d(np.asarray(scale, np.float32))
    z = np.atleast_1d(np.asarray(zero_point, np.float32))
    if s.size == 1 and z.size == 1:
        return (s[0] * (qf - z[0])).astype(np.float32)
    shape = [1] * qf.ndim
    shape[axis] = -1
    return (s.reshape(shape) * (qf - z.reshape(shape))).astype(np.float32)


def pool(
    y: ArrayLike, pooling: str = "gap", p: float = 3.0, layout: str = "nchw"
) -> NDArray[np.float32]:
    """One vector per row of a network output.

    ``(N, D)`` outputs are returned as they are; ``(N, C, H, W)`` / ``(N, H, W, C)``
    feature maps (per ``layout``) and ``(N, L, D)`` token sequences are pooled over
    their spatial / token axes; ``pooling="none"`` flattens whatever the shape.

    Returns
    -------
    (N, D) ndarray of float32

    Examples
    --------
    >>> pool(np.ones((2, 1, 1, 5)), "gap", layout="nhwc").shape
    (2, 5)
    """
    y = np.asarray(y, np.float32)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if y.ndim == 0:
        raise ValueError("the model returned a scalar, not a batch of vectors")
    if y.ndim == 1:
        return y[:, None]
    if pooling == "none" or y.ndim == 2:
        return y.reshape(y.shape[0], -1)
    if y.ndim == 3:
        axis: tuple[int, ...] = (1,)
    elif y.ndim == 4:
        axis = (2, 3) if layout == "nchw" else (1, 2)
    else:
        raise ValueError(
            f"cannot pool a {y.ndim}-d output of shape {y.shape}: expected (N, D), (N, L, D) "
            "or a 4-d feature map; pass pooling='none' to flatten it"
        )
    if pooling == "gap":
        return gap(y, axis)
    if pooling == "mac":
        return mac(y, axis)
    return gem(y, p, axis)
