"""``torch``, ``nn`` and ``F`` for the training modules: imported through
:func:`cvretrieval.siamese.require_torch`, so that a missing extra raises
:class:`~cvretrieval.errors.MissingExtraError` naming it, and typed for mypy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import require_torch

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
    from torch import nn
else:
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

__all__ = ["F", "nn", "torch"]
