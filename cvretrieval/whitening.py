"""PCA-whitening of global image vectors (any embedder: BoVW, VLAD, deep).

Whitening learned on a set of image vectors decorrelates their dimensions and gives
each principal direction unit variance, which down-weights the directions shared by
many images (co-occurring, "bursty" visual words, frequent background patterns) and
so improves cosine ranking; reducing to the leading components at the same time also
compresses the vectors [1]_. The recipe is the plain, unsupervised one of [1]_:

    ``y = diag(lambda_reg) ** -1/2 @ P.T @ (x - mean)``, then ``y / ||y||``

where ``P`` holds the leading eigenvectors of the covariance of the training
vectors and ``lambda`` its eigenvalues. Options:

* ``shrinkage`` regularises small eigenvalues, whose inverse square root would blow up
  noise: ``lambda_reg = (1 - s) * lambda + s * mean(lambda)`` (a shrinkage of the
  covariance towards a scaled identity). ``s = 0`` is full whitening, ``s = 1`` a plain
  PCA projection (rotation + dimensionality reduction without whitening).
* ``power`` applies a signed power normalisation after whitening and before the
  final L2 normalisation, as the "RN" post-processing of [3]_.

Radenović et al. [2]_ learn the whitening from matching pairs instead (supervised);
the unsupervised PCA-whitening here needs no labels and is what one can fit on any
indexed collection.

``n_components`` larger than the training data supports (``min(n - 1, d)`` for ``n``
vectors of dimension ``d``: centring removes one degree of freedom, and directions
of zero variance cannot be whitened) is **clamped with a warning** rather than
refused, so that ``--pca-whiten 256`` still works on a small gallery; the number
actually kept is ``n_components_``.

References
----------
.. [1] H. Jégou and O. Chum, "Negative evidences and co-occurrences in image retrieval:
   the benefit of PCA and whitening", ECCV 2012.
.. [2] F. Radenović, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no human
   annotation", IEEE TPAMI 41(7), 2019 (arXiv 2018).
.. [3] H. Jégou and A. Zisserman, "Triangulation embedding and democratic aggregation for
   image search", CVPR 2014.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._json import read_json_manifest, write_json_atomic
from ._params import ParamsMixin
from .errors import BundleError, NotFittedError

__all__ = ["PCAWhitening", "fit_whitening_on"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "whitening.json"
_ARRAYS = ("mean", "components", "explained_variance")
#: eigenvalues below this fraction of the largest are treated as zero (rank deficiency)
_RANK_RTOL = 1e-10


def _as_matrix(x: ArrayLike, what: str) -> NDArray[np.floating]:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, d) array of vectors, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or infinite values: check the vectors")
    return a


class PCAWhitening(ParamsMixin):
    """Learned PCA-whitening (and dimensionality reduction) of global vectors [1]_.

    Parameters
    ----------
    n_components : int or None, default None
        Dimensions kept. ``None``: as many as the data supports (``min(n - 1, d)``
        minus directions of zero variance). Larger values are clamped, with a warning.
    whiten : bool, default True
        Divide each component by the square root of its (regularised) eigenvalue;
        ``False`` gives a plain PCA projection.
    power : float or None, default None
        Signed power normalisation ``sign(y) |y| ** power`` after whitening [3]_.
    shrinkage : float, default 0.0
        In ``[0, 1]``: eigenvalue regularisation, ``lambda_reg = (1 - s) lambda + s mean(lambda)``.
    random_state : int or None, default None
        Seed of scikit-learn's randomised SVD (used for large inputs with few components).

    Attributes
    ----------
    mean_ : (d,) float32
        Mean of the training vectors.
    components_ : (n_components_, d) float32
        Principal directions (unit rows), largest variance first.
    explained_variance_ : (n_components_,) float32
        Their eigenvalues (variance along each direction, ``n - 1`` denominator).
    n_components_ : int
        Number of components actually kept.
    n_features_in_ : int
        ``d``.

    References
    ----------
    .. [1] H. Jégou and O. Chum, "Negative evidences and co-occurrences in image
       retrieval: the benefit of PCA and whitening", ECCV 2012.
    .. [2] F. Radenović, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no
       human annotation", TPAMI 2019.
    .. [3] H. Jégou and A. Zisserman, "Triangulation embedding and democratic aggregation
       for image search", CVPR 2014.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 8)) * np.arange(1, 9)
    >>> w = PCAWhitening(n_components=4).fit(X)
    >>> w.transform(X).shape
    (100, 4)
    """

    def __init__(
        self,
        n_components: int | None = None,
        whiten: bool = True,
        power: float | None = None,
        shrinkage: float = 0.0,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.power = power
        self.shrinkage = shrinkage
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.n_components is not None and int(self.n_components) < 1:
            raise ValueError(
                f"n_components must be a positive integer or None, got {self.n_components}"
            )
        if not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        if self.power is not None and not float(self.power) > 0:
            raise ValueError(
                f"power must be positive (0.5 = signed square root) or None, got {self.power}"
            )

    # --- fitting ----------------------------------------------------------------------
    def fit(self, X: ArrayLike) -> PCAWhitening:
        """Learn the mean, principal directions and eigenvalues of ``X``.

        Parameters
        ----------
        X : (n, d) array_like of float
            Training vectors, ``n >= 2`` (typically the indexed images' vectors).

        Returns
        -------
        self
        """
        from sklearn.decomposition import PCA

        self._check_params()
        x = _as_matrix(X, "X")
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCA-whitening needs at least 2 training vectors, got {n}")
        if np.all(x == x[0]):
            raise ValueError("the training vectors are all identical: there is nothing to whiten")
        if x.dtype != np.float32 and n * d > 2**25:  # keep big inputs in float32 (memory)
            x = x.astype(np.float32)
        limit = min(n - 1, d)
        wanted = limit if self.n_components is None else int(self.n_components)
        if wanted > limit:
            logger.warning(
                "n_components=%d is more than %d vectors of dimension %d support: keeping %d "
                "(fit on more vectors to keep more)",
                wanted, n, d, limit,
            )
            wanted = limit
        pca = PCA(n_components=wanted, svd_solver="auto", random_state=self.random_state).fit(x)
        var = np.asarray(pca.explained_variance_, np.float64)
        keep = int(np.count_nonzero(var > _RANK_RTOL * max(float(var.max(initial=0.0)), 0.0)))
        if keep == 0:
            raise ValueError("the training vectors are all identical: there is nothing to whiten")
        if keep < wanted:
            logger.warning(
                "only %d of the %d requested directions have non-zero variance: keeping %d",
                keep, wanted, keep,
            )
        self.mean_ = np.asarray(pca.mean_, np.float32)
        self.components_ = np.ascontiguousarray(pca.components_[:keep], dtype=np.float32)
        self.explained_variance_ = var[:keep].astype(np.float32)
        self.n_components_ = keep
        self.n_features_in_ = d
        logger.info(
            "PCA-whitening: %d -> %d dimensions from %d vectors (%.1f%% of the variance kept)",
            d, keep, n, 100.0 * float(np.sum(pca.explained_variance_ratio_[:keep])),
        )
        return self

    def fit_transform(self, X: ArrayLike) -> NDArray[np.float32]:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    # --- applying ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "components_", None) is None:
            raise NotFittedError(
                "this PCAWhitening is not fitted: call fit(X) on training vectors, or "
                "PCAWhitening.load(directory), before transform"
            )

    def scales(self) -> NDArray[np.float64]:
        """Per-component multipliers ``lambda_reg ** -1/2`` (ones when ``whiten=False``)."""
        self._check_fitted()
        lam = self.explained_variance_.astype(np.float64)
        if not self.whiten:
            return np.ones_like(lam)
        s = float(self.shrinkage)
        lam_reg = (1.0 - s) * lam + s * lam.mean()
        return 1.0 / np.sqrt(np.maximum(lam_reg, np.finfo(np.float64).tiny))

    def transform(self, X: ArrayLike) -> NDArray[np.float32]:
        """Project, whiten, optionally power-normalise, and L2-normalise vectors.

        Parameters
        ----------
        X : (m, d) array_like of float
            Vectors of the dimension the whitening was fitted on; ``m`` may be 0.

        Returns
        -------
        (m, n_components_) float32 ndarray
            C-contiguous, unit L2 norm rows (a row that projects to zero stays zero).
        """
        self._check_fitted()
        x = np.asarray(X)
        if x.ndim == 1 and x.size == 0:
            x = x.reshape(0, self.n_features_in_)
        x = _as_matrix(x, "X")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} dimensions but the whitening was fitted on "
                f"{self.n_features_in_}-d vectors: use the same embedder for both"
            )
        y = (x.astype(np.float64) - self.mean_) @ self.components_.T.astype(np.float64)
        y *= self.scales()
        if self.power is not None and self.power != 1:
            y = np.sign(y) * np.abs(y) ** float(self.power)
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        y /= np.maximum(norms, 1e-12)
        return np.ascontiguousarray(y, dtype=np.float32)

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``mean.npy``, ``components.npy``, ``explained_variance.npy`` and
        ``whitening.json`` (written last) into ``directory`` (created if needed)."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / META_FILE
        if meta_path.exists():
            meta_path.unlink()
        np.save(d / "mean.npy", self.mean_, allow_pickle=False)
        np.save(d / "components.npy", self.components_, allow_pickle=False)
        np.save(d / "explained_variance.npy", self.explained_variance_, allow_pickle=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "pca-whitening",
            "params": self.get_params(),
            "n_components_": int(self.n_components_),
            "n_features_in_": int(self.n_features_in_),
        }
        write_json_atomic(meta_path, meta)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PCAWhitening:
        """Read a whitening written by :meth:`save`; :class:`BundleError` when unusable."""
        d = Path(directory)
        meta_path = d / META_FILE
        meta = read_json_manifest(
            meta_path,
            format_version=FORMAT_VERSION,
            missing=f"{d} holds no saved whitening",
            hint="fit the whitening again",
        )
        try:
            obj = cls(**meta["params"])
            m, n_in = int(meta["n_components_"]), int(meta["n_features_in_"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{meta_path} lacks or garbles a field ({exc})") from None
        arrays = {}
        for name in _ARRAYS:
            path = d / f"{name}.npy"
            try:
                arrays[name] = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise BundleError(f"{path} is missing: the saved whitening is incomplete") from None
            except (OSError, ValueError) as exc:
                raise BundleError(f"{path} cannot be read ({exc})") from None
        expected = {"mean": (n_in,), "components": (m, n_in), "explained_variance": (m,)}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise BundleError(
                    f"{d / (name + '.npy')} has shape {arrays[name].shape}, but {META_FILE} "
                    f"implies {shape}: the saved whitening is inconsistent"
                )
        obj.mean_ = arrays["mean"].astype(np.float32)
        obj.components_ = np.ascontiguousarray(arrays["components"], dtype=np.float32)
        obj.explained_variance_ = arrays["explained_variance"].astype(np.float32)
        obj.n_components_ = m
        obj.n_features_in_ = n_in
        return obj


def fit_whitening_on(
    embedder: Any,
    paths: Sequence[str | os.PathLike[str]],
    *,
    n_components: int | None = None,
    shrinkage: float = 0.5,
    power: float | None = None,
    max_images: int | None = 5000,
    max_side: int | None = 640,
    batch_size: int = 32,
    random_state: int | None = 0,
) -> PCAWhitening:
    """Learn a PCA-whitening of ``embedder``'s vectors on a separate training set of images.

    Whitening learned on the indexed collection itself over-fits it when the collection is
    small, and on class-level collections it removes the directions that the classes share
    (see ``docs/notes/asmk.md``, "Whitening"): learning it on other images of the same kind
    (``cvret index --whiten-on DIR``) is the recipe of Jégou & Chum [1]_.

    Parameters
    ----------
    embedder : Embedder
        Fitted (vocabulary, idf...) and producing fixed-size vectors (``embed``).
    paths : sequence of paths
        Training images; unreadable ones are skipped with a warning.
    n_components, shrinkage, power :
        See :class:`PCAWhitening` (shrinkage 0.5 by default, as the Retriever's).
    max_images : int or None, default 5000
        A random sample of at most this many paths is used.
    max_side : int or None, default 640
        Images are downscaled as for indexing.
    batch_size : int, default 32
        Images embedded per call.
    random_state : int or None, default 0

    Returns
    -------
    PCAWhitening
        Fitted; apply it with ``transform`` to gallery and query vectors alike.

    Raises
    ------
    ValueError
        When fewer than two training images could be embedded.
    """
    from .io import read_image

    paths = list(paths)
    if max_images is not None and len(paths) > int(max_images):
        rng = np.random.default_rng(random_state)
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), int(max_images), False))]
    vectors: list[NDArray[np.float32]] = []
    failed = 0
    for lo in range(0, len(paths), int(batch_size)):
        images = []
        for p in paths[lo : lo + int(batch_size)]:
            try:
                images.append(read_image(p, max_side=max_side))
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the fit
                failed += 1
                logger.warning("whitening: skipping %s (%s)", p, exc)
        if images:
            vectors.append(np.asarray(embedder.embed(images), np.float32))
    if failed:
        logger.warning("whitening: %d of %d training images could not be read", failed,
                       len(paths))
    x = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
    if len(x) < 2:
        raise ValueError(
            f"whitening needs at least 2 readable training images, got {len(x)}: "
            "point --whiten-on at a folder of images"
        )
    white = PCAWhitening(n_components=n_components, shrinkage=shrinkage, power=power,
                         random_state=random_state)
    return white.fit(x)
