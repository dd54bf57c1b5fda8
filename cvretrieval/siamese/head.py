"""The projection head trained on frozen base embeddings, and its ONNX export (needs PyTorch).

The default recipe is built to generalise to classes never seen in training:

* **residual**: ``h(x) = normalize(S x + MLP(x))`` where the skip ``S`` is a linear map
  initialised to the PCA projection of the training embeddings (the identity when the
  output keeps the input's dimension) and the MLP's last layer starts at zero, so the
  untrained head reproduces the base embedding's geometry and training only bends it;
* **centring**: the base embedding minus the mean of the training embeddings (chosen
  when it scores better on the held-out classes), as whitening studies advise [2]_;
* **learned whitening** (``init="lw"``, :mod:`cvretrieval.siamese.whiten`): the skip
  starts from the supervised whitening of the training classes; kept alone
  (``epochs=0``) it is the recipe that carries best to unseen classes in our benchmark;
* **mixing**: the exported model outputs ``[sqrt(1 - beta) b(x), sqrt(beta) h(x)]`` for
  the (centred) L2-normalised base embedding ``b(x)``, so cosine similarities are
  ``(1 - beta) cos_base + beta cos_head``; ``beta`` is chosen on held-out classes
  (``beta = 1``: the head alone; ``beta = 0``: the base alone).

References
----------
.. [1] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
       CVPR 2016 (identity shortcuts; zero-initialised last layers of residual branches:
       P. Goyal et al., "Accurate, Large Minibatch SGD", arXiv:1706.02677, 2017).
.. [2] H. Jégou, O. Chum, "Negative evidences and co-occurrences in image retrieval: the
       benefit of PCA and whitening", ECCV 2012.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._torch import F, nn, torch
from .whiten import lw_init, pca_init

logger = logging.getLogger(__name__)

__all__ = ["ProjectionHead", "SiameseModel", "embed_numpy", "lw_init", "parse_head",
           "pca_init"]

#: ONNX opset of exported heads (onnxruntime ≥ 1.10 runs it)


def parse_head(head: str | int | Sequence[int]) -> tuple[int, ...]:
    """Layer sizes from ``"512,256"``, ``256`` or ``(512, 256)``.

    Examples
    --------
    >>> parse_head("512, 256")
    (512, 256)
    """
    if isinstance(head, str):
        parts = [p for p in head.replace("x", ",").split(",") if p.strip()]
        try:
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"head {head!r} must be comma-separated layer sizes, e.g. 512,256"
            ) from None
    elif isinstance(head, int):
        sizes = (int(head),)
    else:
        sizes = tuple(int(h) for h in head)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"head {head!r} must list one or more positive layer sizes, e.g. 512,256")
    return sizes


class ProjectionHead(nn.Module):
    """MLP from the base embedding to the head's embedding, optionally residual.

    Parameters
    ----------
    in_dim : int
        Dimension of the base embedding.
    hidden : sequence of int
        Layer sizes, the last one the output dimension (``(512, 256)``: ``in → 512 → 256``),
        ReLU between layers.
    residual : bool, default True
        ``normalize(S x + MLP(x))`` with a linear skip ``S`` (see :meth:`init_skip`) and the
        MLP's last layer zero-initialised; else ``normalize(MLP(x))`` (a plain MLP).
    dropout : float, default 0.0
        Dropout before each hidden layer's activation (training only).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256), residual: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.residual = bool(residual)
        self.out_dim = self.hidden[-1]
        layers: list[Any] = []
        dims = [self.in_dim, *self.hidden]
        for i in range(len(self.hidden)):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(self.hidden) - 1:
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)
        self.skip = nn.Linear(self.in_dim, self.out_dim) if self.residual else None
        if self.residual:
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)  # the MLP ends with a linear layer
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            # identity when the dimension is kept, else a random orthonormal projection
            # (distance-preserving on average); fit code replaces it with pca_init
            w = torch.eye(self.out_dim, self.in_dim)
            if self.out_dim < self.in_dim:
                nn.init.orthogonal_(w)
            self.init_skip(w.numpy(), np.zeros(self.in_dim, np.float32))

    def init_skip(self, W: NDArray[np.floating], mean: NDArray[np.floating]) -> ProjectionHead:
        """Set the skip to ``x ↦ W (x - mean)`` (e.g. from :func:`pca_init`)."""
        if self.skip is None:
            raise ValueError("this head has no skip connection (residual=False)")
        Wt = torch.as_tensor(np.asarray(W, np.float32))
        mt = torch.as_tensor(np.asarray(mean, np.float32))
        if tuple(Wt.shape) != (self.out_dim, self.in_dim) or tuple(mt.shape) != (self.in_dim,):
            raise ValueError(
                f"skip init has W {tuple(Wt.shape)} and mean {tuple(mt.shape)}; expected "
                f"({self.out_dim}, {self.in_dim}) and ({self.in_dim},)"
            )
        with torch.no_grad():
            self.skip.weight.copy_(Wt)
            self.skip.bias.copy_(-(Wt @ mt))
        return self

    def forward(self, x: Any) -> Any:
        y = self.mlp(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return F.normalize(y, dim=1)


class SiameseModel(nn.Module):
    """What is exported: the base embedding in, the final (unnormalised) vector out.

    ``forward(x) = [sqrt(1 - beta) · b(x̂), sqrt(beta) · head(x̂)]`` with ``x̂`` the
    L2-normalised input and ``b(x̂) = normalize(x̂ - mean)`` (the centred base; ``x̂`` when
    ``mean`` is None); only ``head(x̂)`` when ``beta == 1`` and only ``b(x̂)`` when
    ``beta == 0``. Rows are unit vectors, so inner products are
    ``(1 - beta) cos_base + beta cos_head``.

    Parameters
    ----------
    head : ProjectionHead
    beta : float in [0, 1]
    mean : (in_dim,) array, optional
        Mean of the (L2-normalised) training embeddings, subtracted from the base part.
    """

    def __init__(self, head: ProjectionHead, beta: float = 1.0,
                 mean: NDArray[np.floating] | None = None):
        super().__init__()
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        self.head = head
        self.beta = float(beta)
        self.centered = mean is not None
        m = np.zeros(head.in_dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        if m.shape != (head.in_dim,):
            raise ValueError(f"mean has shape {m.shape}; expected ({head.in_dim},)")
        self.register_buffer("mean", torch.as_tensor(m))

    @property
    def in_dim(self) -> int:
        return self.head.in_dim

    @property
    def out_dim(self) -> int:
        if self.beta >= 1.0:
            return self.head.out_dim
        if self.beta <= 0.0:
            return self.head.in_dim
        return self.head.in_dim + self.head.out_dim

    def base_part(self, xn: Any) -> Any:
        return F.normalize(xn - self.mean, dim=1) if self.centered else xn

    def forward(self, x: Any) -> Any:
        xn = F.normalize(x, dim=1)  # the head was trained on unit vectors
        if self.beta >= 1.0:
            return self.head(xn)
        if self.beta <= 0.0:
            return self.base_part(xn)
        a, b = math.sqrt(1.0 - self.beta), math.sqrt(self.beta)
        return torch.cat([a * self.base_part(xn), b * self.head(xn)], dim=1)


def embed_numpy(model: Any, X: NDArray[np.floating], batch_size: int = 4096) -> NDArray[np.float32]:
    """Run a module on an array in eval mode without gradients; ``(n, out)`` float32."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(0)).device  # where the model lives
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            batch = torch.as_tensor(np.asarray(X[i : i + batch_size], np.float32))
            out.append(model(batch.to(device)).cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, getattr(model, "out_dim", 0)), np.float32)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
