"""TEMPORARY: the index protocol over Faiss / scipy, until index.py implements it."""

from __future__ import annotations

import json
from typing import Any

import faiss
import numpy as np

from .index import resolve_factory


class StopgapIndex:
    def __init__(self, spec="flat", metric="ip", *, nprobe=None, ef_search=None, random_state=0,
                 max_memory=None):
        self.spec, self.metric, self.nprobe, self.ef_search = spec, metric, nprobe, ef_search
        self.random_state = random_state
        self.factory = None
        self.index = None
        self.removed: set[int] = set()

    @property
    def higher_is_better(self):
        return self.metric == "ip"

    def train(self, sample, n_total=None):
        sample = np.ascontiguousarray(sample, np.float32)
        d = sample.shape[1]
        spec = "flat" if self.spec == "auto" else self.spec
        self.factory = resolve_factory(spec, n_total or len(sample), d)
        m = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        base = faiss.index_factory(d, self.factory, m)
        if not base.is_trained:
            base.train(sample)
        self.index = faiss.IndexIDMap2(base)
        return self

    @property
    def ntotal(self):
        return int(self.index.ntotal) - len(self.removed)

    @property
    def d(self):
        return int(self.index.d)

    def config(self):
        return {"spec": self.spec, "factory": self.factory, "metric": self.metric}

    def add_with_ids(self, xb, ids):
        self.index.add_with_ids(np.ascontiguousarray(xb, np.float32), np.asarray(ids, np.int64))

    def remove_ids(self, ids):
        self.removed |= {int(i) for i in ids}
        return len(ids)

    def search(self, xq, k):
        k = int(k)
        xq = np.ascontiguousarray(xq, np.float32)
        kk = min(k + len(self.removed), max(int(self.index.ntotal), 1))
        D, I = self.index.search(xq, kk)  # noqa: E741
        outD = np.full((len(xq), k), np.nan, np.float32)
        outI = np.full((len(xq), k), -1, np.int64)
        for r in range(len(xq)):
            keep = [(d, i) for d, i in zip(D[r], I[r], strict=True)
                    if i >= 0 and int(i) not in self.removed][:k]
            outD[r, : len(keep)] = [d for d, _ in keep]
            outI[r, : len(keep)] = [i for _, i in keep]
        return outD, outI

    def empty_copy(self):
        new = StopgapIndex(self.spec, self.metric, nprobe=self.nprobe, ef_search=self.ef_search,
                           random_state=self.random_state)
        new.factory = self.factory
        new.index = faiss.clone_index(self.index)
        new.index.reset()
        return new

    def merge_from(self, other):
        n = int(other.index.ntotal)
        if n:
            ids = faiss.vector_to_array(other.index.id_map).astype(np.int64)
            xb = np.vstack([other.index.reconstruct(int(i)) for i in ids])
            self.add_with_ids(xb, ids)

    def needs_retrain(self, n):
        return False

    def save(self, path):
        with open(path, "wb") as f:
            np.savez(f, index=faiss.serialize_index(self.index),
                     cfg=np.frombuffer(json.dumps(self.config()).encode(), np.uint8))

    @classmethod
    def load(cls, path):
        z = np.load(path)
        cfg = json.loads(z["cfg"].tobytes().decode())
        new = cls(cfg["spec"], cfg["metric"])
        new.factory = cfg["factory"]
        new.index = faiss.deserialize_index(z["index"])
        return new


class StopgapSparse:
    def __init__(self, n_words):
        self.n_words = n_words
        self.rows = None
        self.ids = np.zeros(0, np.int64)
        self.removed: set[int] = set()

    higher_is_better = True

    def train(self, sample, n_total=None):
        return self

    @property
    def ntotal(self):
        return len(self.ids) - len(self.removed)

    @property
    def d(self):
        return self.n_words

    def config(self):
        return {"spec": "sparse"}

    def add_with_ids(self, xb, ids):
        import scipy.sparse as sp

        xb = sp.csr_matrix(xb, dtype=np.float32)
        self.rows = xb if self.rows is None else sp.vstack([self.rows, xb]).tocsr()
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])

    def remove_ids(self, ids):
        self.removed |= {int(i) for i in ids}
        return len(ids)

    def search(self, xq, k):
        import scipy.sparse as sp

        S = (sp.csr_matrix(xq) @ self.rows.T).toarray()
        if self.removed:
            S[:, np.isin(self.ids, list(self.removed))] = -np.inf
        k = int(k)
        outD = np.full((S.shape[0], k), -np.inf, np.float32)
        outI = np.full((S.shape[0], k), -1, np.int64)
        for r in range(S.shape[0]):
            order = np.lexsort((self.ids, -S[r]))[:k]
            order = [o for o in order if S[r, o] > 0]
            outD[r, : len(order)] = S[r, order]
            outI[r, : len(order)] = self.ids[order]
        return outD, outI

    def empty_copy(self):
        return StopgapSparse(self.n_words)

    def merge_from(self, other):
        if other.rows is not None:
            self.add_with_ids(other.rows, other.ids)

    def needs_retrain(self, n):
        return False

    def save(self, path):
        import scipy.sparse as sp

        rows = self.rows if self.rows is not None else sp.csr_matrix((0, self.n_words),
                                                                     dtype=np.float32)
        with open(path, "wb") as f:
            np.savez(f, data=rows.data, indices=rows.indices, indptr=rows.indptr,
                     shape=np.array(rows.shape), ids=self.ids, n_words=self.n_words)

    @classmethod
    def load(cls, path):
        import scipy.sparse as sp

        z = np.load(path)
        new = cls(int(z["n_words"]))
        new.rows = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        new.ids = z["ids"]
        return new

    def config_(self):
        return {}


def __getattr__(name: str) -> Any:  # pragma: no cover
    raise AttributeError(name)
