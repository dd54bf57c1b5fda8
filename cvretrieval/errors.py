"""The exceptions cvretrieval raises; every one says the bad value and what to do."""

from __future__ import annotations


class CVRetrievalError(Exception):
    """Base class of every error the library raises on purpose."""


class ImageReadError(CVRetrievalError, ValueError):
    """An image file or buffer could not be decoded (missing, empty, truncated, not an image)."""


class NotFittedError(CVRetrievalError, ValueError, AttributeError):
    """A method needing fitted state was called before ``fit``.

    Like scikit-learn's ``NotFittedError`` it is both a ``ValueError`` and an
    ``AttributeError`` (importing scikit-learn here would slow every ``cvret`` start).
    """


class IndexTrainingError(CVRetrievalError, ValueError):
    """A Faiss index could not be trained (usually too few vectors for its parameters)."""


class BundleError(CVRetrievalError):
    """A bundle folder or vocabulary folder is missing, corrupt or inconsistent."""


class DatasetError(CVRetrievalError, ValueError):
    """A data set layout or ground-truth file is malformed."""


class MissingExtraError(CVRetrievalError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ModelError(CVRetrievalError, ValueError):
    """A model file is missing, is not a model, or does not fit the embedder's options."""
