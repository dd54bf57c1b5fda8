"""cvretrieval: classical and deep image retrieval with one evaluation harness.

>>> import cvretrieval as cvr
>>> cvr.make_embedder("hog").dim
8100
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that owns it (imported on first use, so `import cvretrieval` is light)
_EXPORTS = {
    "read_image": "io",
    "list_images": "io",
    "ImageReadError": "errors",
    "CVRetrievalError": "errors",
    "BundleError": "errors",
    "DatasetError": "errors",
    "make_embedder": "embedders",
    "load_embedder": "embedders",
    "available_embedders": "embedders",
    "Embedder": "embedders",
    "Index": "index",
    "Retriever": "retriever",
    "Hit": "retriever",
    "RetrievalDataset": "datasets",
    "load_dataset": "datasets",
    "evaluate": "evaluation",
    "compute_map": "evaluation",
    "extract_local_features": "features.local",
    "LocalFeatures": "features.local",
    "hog": "features.hog",
    "fetch_dataset": "fetch",
    "check_dataset": "datasets",
    "evaluate_vectors": "evaluation",
    "load_vectors_npz": "evaluation",
    "write_report": "report",
    "make_copies": "copies",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cvretrieval' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
