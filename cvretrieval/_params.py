"""``get_params`` and ``repr`` from the ``__init__`` signature (the scikit-learn convention
without importing scikit-learn, whose import costs every worker process seconds)."""

from __future__ import annotations

import inspect
from typing import Any


class ParamsMixin:
    """Every ``__init__`` keyword is stored under its own name; ``get_params`` reads them."""

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` keyword arguments and their current values."""
        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
