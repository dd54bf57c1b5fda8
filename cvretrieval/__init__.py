"""cvretrieval: classical and deep image retrieval with one evaluation harness.

>>> import cvretrieval as cvr
>>> cvr.make_embedder("hog").dim
8100
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that owns it (imported on first use, so `import cvretrieval` is light)
_EXPORTS = {
    "read_image": "io",
    "list_images": "io",
    "scan_images": "io",
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
    "find_duplicates": "dedup",
    "ndcg_at_k": "metrics",
    "WithDistractors": "distractors",
    "SparseIndex": "sparse",
    "SpatialVerifier": "rerank.spatial",
    "embed_paths": "pipeline",
    "Pipeline": "pipeline",
    "Bundle": "bundle",
    "fetch_model": "models",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
