"""Bounded-memory scoring (cvretrieval.scoring) against full rankings, revisitop and sklearn.

The oracles here are written from the papers' and the reference code's definitions,
independently of cvretrieval.metrics:

* ``revisitop_map``: revisitop's ``compute_map`` loop (python/evaluate.py), transcribed
  statement by statement (while loops over ``pos`` and ``junk``);
* sklearn's ``ndcg_score`` for NDCG;
* full rankings by ``np.argsort(-scores, kind="stable")`` for the block-wise evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from cvretrieval.datasets import RetrievalDataset
from cvretrieval.evaluation import (
    average_precision,
    compute_map,
    compute_metrics,
    evaluate,
    evaluate_vectors,
    ndcg_at_k,
    revisited_metrics,
    vector_scores,
)


# --------------------------------------------------------------------------- oracles
def revisitop_ap(ranks, nres):
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def revisitop_map(ranks, gnd):
    """revisitop's compute_map, loop for loop; returns per-query AP (NaN without positives)."""
    aps = []
    for i in range(len(gnd)):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps.append(float("nan"))
            continue
        qgndj = np.array(gnd[i].get("junk", []))
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        aps.append(revisitop_ap(pos, len(qgnd)))
    return np.array(aps)


# --------------------------------------------------------------------------- issue 13 #9
def test_ok_and_junk_scored_as_revisitop():
    # image 1 is both positive and junk: revisitop scores it as a positive at 0 and, as
    # junk, moves positive 2 from 1 to 0 -> (1+1)/2/2 + (1+2)/2/2 = 5/4
    ranks = np.array([[1], [2], [3]])
    gnd = [{"ok": [1, 2], "junk": [1]}]
    assert revisitop_map(ranks, gnd)[0] == pytest.approx(1.25)
    assert compute_map(ranks, gnd)[1][0] == pytest.approx(1.25)
    assert average_precision([1, 2, 3], [1, 2], [1]) == pytest.approx(1.25)
    metrics, _ = compute_metrics([np.array([1, 2, 3])], gnd, [None])
    assert metrics["mAP"] == pytest.approx(1.25)


@pytest.mark.parametrize("seed", range(40))
def test_every_ap_matches_revisitop_with_overlapping_ok_and_junk(seed):
    rng = np.random.default_rng(seed)
    n, nq = int(rng.integers(3, 25)), int(rng.integers(1, 5))
    ranks = np.stack([rng.permutation(n) for _ in range(nq)], axis=1)
    gnd = []
    for _ in range(nq):
        ok = sorted(rng.choice(n, size=int(rng.integers(0, n // 2 + 1)), replace=False).tolist())
        junk = sorted(rng.choice(n, size=int(rng.integers(0, n // 2 + 1)), replace=False).tolist())
        gnd.append({"ok": ok, "junk": junk})  # ok and junk overlap at random
    ref = revisitop_map(ranks, gnd)
    _, aps, _, _ = compute_map(ranks, gnd)
    np.testing.assert_allclose(aps, ref, atol=1e-12, equal_nan=True)
    for i in range(nq):
        ap = average_precision(ranks[:, i], gnd[i]["ok"], gnd[i]["junk"])
        assert (math.isnan(ap) and math.isnan(ref[i])) or ap == pytest.approx(ref[i], abs=1e-12)
    _, per_query = compute_metrics(list(ranks.T), gnd, [None] * nq)
    for i in range(nq):
        got = per_query[i]["ap"]
        assert (got is None and math.isnan(ref[i])) or got == pytest.approx(ref[i], abs=1e-12)


# --------------------------------------------------------------------------- NDCG
@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("gain", ["linear", "exponential"])
def test_ndcg_matches_sklearn(seed, gain):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    grades = rng.integers(0, 4, size=n).astype(float)
    grades[rng.integers(0, n)] = float(rng.integers(1, 4))  # at least one positive grade
    ranking = rng.permutation(n)
    scores = np.empty(n)
    scores[ranking] = np.arange(n, 0, -1)  # distinct scores giving this ranking
    graded = [[i, g] for i, g in enumerate(grades) if g > 0 or rng.random() < 0.5]
    truth = grades if gain == "linear" else 2.0**grades - 1
    for k in (1, 3, 5, 10, 100):
        ref = ndcg_score(truth[None, :], scores[None, :], k=k)
        assert ndcg_at_k(ranking, graded, k, gain) == pytest.approx(ref, abs=1e-12)


def test_ndcg_leaves_out_self_and_junk():
    # the query (3) and junk (5) are removed first: the ranking becomes 1, 2
    graded = [[1, 1], [2, 2], [3, 3]]
    ref = ndcg_score([[1, 2]], [[2, 1]], k=2)
    assert ndcg_at_k([3, 5, 1, 2], graded, 2, junk=[5], self_index=3) == pytest.approx(ref)
    assert math.isnan(ndcg_at_k([0, 1], [[1, 0]], 2))  # no positive grade
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k([0, 1], [[1, 1]], 2, gain="cubic")
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k([0, 1], [[1, -1]], 2)


# --------------------------------------------------------------------------- bounded == full
def _random_case(rng, n=None, nq=None, graded=True, protocols=True):
    n = int(rng.integers(5, 40)) if n is None else n
    nq = int(rng.integers(1, 12)) if nq is None else nq
    names = [f"im{i}.png" for i in range(n)]
    # some queries are gallery images (their own image is removed), some are not
    qnames = [names[i] if rng.random() < 0.5 else f"q{j}.png" for j, i in
              enumerate(rng.integers(0, n, size=nq))]
    gnd = []
    for _ in range(nq):
        labels = rng.choice(np.array(list("onnjb")), size=n)  # b = both ok and junk
        ok = [i for i in range(n) if labels[i] in "ob"]
        junk = [i for i in range(n) if labels[i] in "jb"]
        g = {"ok": ok, "junk": junk}
        if graded:
            g["graded"] = [[i, int(rng.integers(0, 4))] for i in range(n) if rng.random() < 0.4]
        gnd.append(g)
    prots = {}
    if protocols:
        for name in ("easy", "medium", "hard"):
            prots[name] = [{"ok": [i for i in g["ok"] if rng.random() < 0.7],
                            "junk": [i for i in g["junk"] if rng.random() < 0.7]} for g in gnd]
    ds = RetrievalDataset(".", names, qnames, gnd, name="r", format="json", protocols=prots)
    # small integer vectors: exact scores and many ties
    d = int(rng.integers(1, 4))
    xb = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    xq = rng.integers(-2, 3, size=(nq, d)).astype(np.float32)
    return ds, xb, xq


def _full_rankings(xq, xb, metric):
    S = vector_scores(xq, xb, metric)
    return [np.argsort(-row, kind="stable") for row in S]


def _assert_same(bounded, metrics, per_query):
    for key, value in metrics.items():
        assert bounded["metrics"][key] == pytest.approx(value, abs=1e-9), key
    for got, ref in zip(bounded["per_query"], per_query, strict=True):
        for key in ("ap", "first_rank", "ns", "top", "top_raw", "P@1", "P@5", "R@10", "NDCG@5",
                    "NDCG@10", "NDCG@100"):
            if ref.get(key) is None:
                assert got.get(key) is None, key
            else:
                assert got[key] == pytest.approx(ref[key], abs=1e-9), key


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_blockwise_vectors_equal_full_rankings(seed, metric):
    rng = np.random.default_rng(seed)
    ds, xb, xq = _random_case(rng)
    rankings = _full_rankings(xq, xb, metric)
    gain = "exponential" if seed % 2 else "linear"
    k = None if seed % 3 else int(rng.integers(1, xb.shape[0] + 1))
    if k is not None:
        rankings = [r[:k] for r in rankings]
    metrics, per_query = compute_metrics(rankings, ds, ndcg_gain=gain)
    # blocks of 1 to 3 queries: several blocks per evaluation
    bounded = evaluate_vectors(xb, xq, ds, metric=metric, k=k, ndcg_gain=gain,
                               max_block=int(rng.integers(1, 4)) * xb.shape[0])
    _assert_same(bounded, metrics, per_query)
    # revisitop's protocols, by compute_map on the full rankings
    prot = revisited_metrics(rankings, ds.protocols, ds.query_self_index())
    for name, letter in (("easy", "E"), ("medium", "M"), ("hard", "H")):
        assert bounded["metrics"][f"mAP ({letter})"] == pytest.approx(prot[name]["mAP"], abs=1e-9)
        for kappa in (1, 5, 10):
            assert bounded["metrics"][f"mP@{kappa} ({letter})"] == pytest.approx(
                prot[name][f"mP@{kappa}"], abs=1e-9
            )
        assert bounded["protocols"][name]["ap"] == pytest.approx(prot[name]["ap"], abs=1e-9)
    # NDCG: the mean over the queries with a positive grade of ndcg_at_k on full rankings
    self_index = ds.query_self_index()
    for kk in (5, 10, 100):
        values = [ndcg_at_k(r, g["graded"], kk, gain, junk=g["junk"], self_index=s)
                  for r, g, s in zip(rankings, ds.gnd, self_index, strict=True)]
        values = [v for v in values if not math.isnan(v)]
        expected = float(np.mean(values)) if values else 0.0
        assert bounded["metrics"][f"NDCG@{kk}"] == pytest.approx(expected, abs=1e-9)


def test_blockwise_with_all_scores_tied():
    # every score equal: the ranking is the gallery order; self removed
    names = [f"{i}.png" for i in range(6)]
    gnd = [{"ok": [4, 5], "junk": [0]}, {"ok": [1]}]
    ds = RetrievalDataset(".", names, ["2.png", "x.png"], gnd, format="json")
    r = evaluate_vectors(np.zeros((6, 2)), np.zeros((2, 2)), ds)
    # query 0: ranking 0 1 2 3 4 5 -> minus junk 0 and self 2: 1 3 4 5 -> hits at 2, 3
    assert r["per_query"][0]["ap"] == pytest.approx(((0 + 1 / 3) / 2 + (1 / 3 + 2 / 4) / 2) / 2)
    assert r["per_query"][0]["top"] == [1, 3, 4, 5]
    assert r["per_query"][0]["top_raw"] == [0, 1, 3, 4, 5]
    assert r["per_query"][1]["ap"] == pytest.approx(0.25) and r["per_query"][1]["ns"] == 1


class _RankingRetriever:
    """Returns precomputed full rankings through the retriever protocol."""

    def __init__(self, paths, rankings):
        self.paths, self.rankings, self.ks, self.next = paths, rankings, [], 0

    def config(self):
        return {"embedder": "fixed"}

    def search_many(self, queries, k, bboxes):
        self.ks.append(len(queries))  # queries come in order, batch after batch
        rows = [self.rankings[self.next + i][:k] for i in range(len(queries))]
        self.next += len(queries)
        return np.zeros((len(rows), k)), np.stack(rows), []


@pytest.mark.parametrize("seed", range(10))
def test_evaluate_in_batches_equals_full_rankings(seed):
    rng = np.random.default_rng(100 + seed)
    ds, xb, xq = _random_case(rng, nq=9, protocols=False)
    rankings = _full_rankings(xq, xb, "ip")
    ret = _RankingRetriever(ds.image_paths(), rankings)
    metrics, per_query = compute_metrics(rankings, ds)
    n = len(ds.imlist)
    report = evaluate(ret, ds, progress=False, max_block=2 * n)  # 2 queries per batch
    assert ret.ks == [2, 2, 2, 2, 1]
    _assert_same(report, metrics, per_query)


def test_ndcg_reported_only_with_grades():
    names = ["a.png", "b.png", "c.png"]
    plain = RetrievalDataset(".", names, ["q.png"], [{"ok": [1]}], format="json")
    r = evaluate_vectors(np.eye(3), [[0, 1, 0]], plain)
    assert not any(key.startswith("NDCG") for key in r["metrics"])
    graded = RetrievalDataset(".", names, ["q.png"],
                              [{"ok": [1], "graded": [[1, 1], [2, 3]]}], format="json")
    r = evaluate_vectors(np.eye(3), [[0, 1, 0.5]], graded)  # ranking 1, 2, 0
    ideal = 3 + 1 / np.log2(3)
    assert r["metrics"]["NDCG@5"] == pytest.approx((1 + 3 / np.log2(3)) / ideal)
    r = evaluate_vectors(np.eye(3), [[0, 1, 0.5]], graded, ndcg_gain="exponential")
    ideal = 7 + 1 / np.log2(3)
    assert r["metrics"]["NDCG@10"] == pytest.approx((1 + 7 / np.log2(3)) / ideal)
