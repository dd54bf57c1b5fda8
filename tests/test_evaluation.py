"""Tests of cvretrieval.evaluation: hand-computed answers and an independent AP oracle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvretrieval.datasets import RetrievalDataset
from cvretrieval.errors import DatasetError
from cvretrieval.evaluation import (
    ap_at_k,
    average_precision,
    compute_ap,
    compute_map,
    compute_metrics,
    evaluate,
    evaluate_vectors,
    first_relevant_rank,
    format_metrics_table,
    gldv2_map_at_100,
    interpolated_precision,
    load_vectors_npz,
    mean_pr_curve,
    ns_score,
    precision_at_k,
    recall_at_k,
    revisited_metrics,
)


# --------------------------------------------------------------------------- an oracle
def oracle_ap(ranking, ok, junk=()):
    """AP as the area under a piecewise-linear precision/recall curve (np.trapezoid).

    Junk is removed from the list first; for the j-th hit (0-based) at 0-based
    position p the curve goes from (j/n, precision before the hit) to
    ((j+1)/n, precision after the hit), where the precision before the hit is j/p
    (1 at p == 0) and the precision after it is (j+1)/(p+1). Positives never
    found contribute nothing; n = number of positives.
    """
    ok = set(int(x) for x in ok)
    junk = set(int(x) for x in junk)
    n = len(ok)
    if n == 0:
        return math.nan
    cleaned = [int(x) for x in ranking if int(x) >= 0 and int(x) not in junk]
    xs, ys = [0.0], [1.0]
    hits = 0
    for p, item in enumerate(cleaned):
        if item in ok:
            before = 1.0 if p == 0 else hits / p
            after = (hits + 1) / (p + 1)
            xs += [hits / n, (hits + 1) / n]
            ys += [before, after]
            hits += 1
    area = 0.0
    for i in range(1, len(xs)):
        area += (xs[i] - xs[i - 1]) * (ys[i] + ys[i - 1]) / 2
    return area


def oracle_prs(ranking, ok, junk, kappa):
    """revisitop's precision quirk, from the 1-based positions after junk removal."""
    ok, junk = set(ok), set(junk)
    cleaned = [x for x in ranking if x >= 0 and x not in junk]
    pos = [i + 1 for i, x in enumerate(cleaned) if x in ok]
    if not pos:
        return 0.0
    kq = min(max(pos), kappa)
    return sum(1 for p in pos if p <= kq) / kq


# --------------------------------------------------------------------------- compute_ap / map
def test_compute_ap_hand_values():
    # positives at 0-based ranks 0 and 2 of 4, two positives:
    #   j=0, r=0: (1 + 1/1) / 2 * 1/2 = 1/2
    #   j=1, r=2: (1/2 + 2/3) / 2 * 1/2 = 7/24        -> AP = 19/24
    assert compute_ap([0, 2], 2) == pytest.approx(19 / 24, abs=1e-12)
    # a single positive at rank 1: (0/1 + 1/2) / 2 = 1/4 (not 1/2: trapezoids, not steps)
    assert compute_ap([1], 1) == pytest.approx(0.25, abs=1e-12)
    # one of two positives found, at the top: (1 + 1) / 2 * 1/2 = 1/2
    assert compute_ap([0], 2) == pytest.approx(0.5, abs=1e-12)
    assert compute_ap([], 3) == 0.0
    assert compute_ap([0, 1, 2], 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nres"):
        compute_ap([0], 0)


def test_compute_map_hand_example_and_oracle():
    # 4 gallery images, 3 queries; columns are rankings
    ranks = np.array(
        [
            [0, 3, 1],
            [1, 0, 2],
            [2, 1, 0],
            [3, 2, 3],
        ]
    )
    gnd = [
        {"ok": [0, 2]},  # ranking 0,1,2,3: ok at ranks 0 and 2 -> 19/24
        {"ok": [1], "junk": [0]},  # ranking 3,0,1,2: 0 is junk -> ok at rank 1 -> 1/4
        {"ok": []},  # no positives -> NaN, excluded
    ]
    m, aps, pr, prs = compute_map(ranks, gnd, kappas=[1, 5])
    assert aps[0] == pytest.approx(19 / 24)
    assert aps[1] == pytest.approx(0.25)
    assert math.isnan(aps[2])
    assert m == pytest.approx((19 / 24 + 0.25) / 2)
    # prs quirk: query 0, positives at 1-based 1 and 3: kappa 1 -> 1/1; kappa 5 -> kq=3 -> 2/3
    assert prs[0] == pytest.approx([1.0, 2 / 3])
    # query 1: positive at 1-based 2 (after junk): kappa 1 -> 0/1; kappa 5 -> kq=2 -> 1/2
    assert prs[1] == pytest.approx([0.0, 0.5])
    assert np.isnan(prs[2]).all()
    assert pr == pytest.approx([(1 + 0) / 2, (2 / 3 + 0.5) / 2])
    for i in range(2):
        assert aps[i] == pytest.approx(oracle_ap(ranks[:, i], gnd[i]["ok"], gnd[i].get("junk", ())))


def test_compute_map_junk_shifts_positives():
    # ranking x, j, a with a relevant and j junk: a moves from rank 2 to rank 1
    # AP with junk = 1/4 (as above); without junk: (0/2 + 1/3) / 2 = 1/6
    ranks = np.array([[5], [6], [7]])
    with_junk = compute_map(ranks, [{"ok": [7], "junk": [6]}])[0]
    without = compute_map(ranks, [{"ok": [7]}])[0]
    assert with_junk == pytest.approx(0.25)
    assert without == pytest.approx(1 / 6)


def test_prs_quirk_differs_from_plain_precision():
    # positives at 1-based positions 2 and 5 among 20: plain P@10 = 0.2, revisitop: kq = 5 -> 2/5
    ranking = np.arange(20)
    ranking[[1, 4]] = [100, 101]
    ranks = np.concatenate([ranking, [102, 103]])[:, None]
    _, _, _, prs = compute_map(ranks, [{"ok": [100, 101]}], kappas=[1, 5, 10])
    assert prs[0] == pytest.approx([0.0, 0.4, 0.4])
    assert precision_at_k(ranks[:, 0], [100, 101], 10) == pytest.approx(0.2)


def test_compute_map_truncated_ranking_with_no_positive_found():
    ranks = np.array([[3, 0], [4, 1], [-1, -1]])
    m, aps, pr, prs = compute_map(ranks, [{"ok": [0, 1]}, {"ok": [0, 9]}], kappas=[1, 5])
    assert aps[0] == 0.0  # revisitop would crash on max([]) for prs here
    assert prs[0] == pytest.approx([0.0, 0.0])
    # query 1: 0 found at rank 0, 9 never found: (1 + 1) / 2 * 1/2 = 1/2
    assert aps[1] == pytest.approx(0.5)
    assert m == pytest.approx(0.25)


def test_compute_map_all_empty_and_bad_shapes():
    m, aps, pr, _ = compute_map(np.zeros((3, 1), int), [{"ok": []}])
    assert math.isnan(m) and math.isnan(aps[0]) and np.isnan(pr).all()
    with pytest.raises(ValueError, match="columns"):
        compute_map(np.zeros((3, 2), int), [{"ok": [1]}])
    with pytest.raises(ValueError, match="2-D"):
        compute_map(np.zeros(3, int), [{"ok": [1]}])


def random_cases(seed, n_db, nq):
    """nq queries over n_db images: a random (possibly truncated) ranking, disjoint ok/junk."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(nq):
        ranking = rng.permutation(n_db)[: rng.integers(0, n_db + 1)]
        t_ok, t_junk = np.sort(rng.random(2))  # random proportions of ok / junk / neither
        u = rng.random(n_db)
        ok = np.flatnonzero(u < t_ok).tolist()
        junk = np.flatnonzero((u >= t_ok) & (u < t_junk)).tolist()
        cases.append((ranking, ok, junk))
    return cases


KAPPA_SETS = ([1], [1, 5, 10], [3])


def check_compute_map_case(seed):
    """One random case (sizes, kappas, rankings, ok/junk all fixed by ``seed``) vs the oracle."""
    n_db, nq, kappas = 1 + seed % 25, 1 + (seed // 25) % 4, KAPPA_SETS[(seed // 100) % 3]
    cases = random_cases(seed, n_db, nq)
    ranks = np.full((n_db, nq), -1, dtype=np.int64)
    gnd = []
    for i, (ranking, ok, junk) in enumerate(cases):
        ranks[: len(ranking), i] = ranking
        gnd.append({"ok": ok, "junk": junk})
    m, aps, pr, prs = compute_map(ranks, gnd, kappas)
    expected = [oracle_ap(ranks[:, i], g["ok"], g["junk"]) for i, g in enumerate(gnd)]
    valid = [e for e in expected if not math.isnan(e)]
    for i, e in enumerate(expected):
        if math.isnan(e):
            assert math.isnan(aps[i])
            continue
        assert abs(aps[i] - e) < 1e-9
        assert abs(average_precision(ranks[:, i], gnd[i]["ok"], gnd[i]["junk"]) - e) < 1e-9
        for j, kappa in enumerate(kappas):
            want = oracle_prs(ranks[:, i].tolist(), gnd[i]["ok"], gnd[i]["junk"], kappa)
            assert abs(prs[i, j] - want) < 1e-12
    if valid:
        assert abs(m - sum(valid) / len(valid)) < 1e-9
    else:
        assert math.isnan(m)


CASES_PER_EXAMPLE = 10


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**59 - 1))
def test_compute_map_matches_oracle(seed):
    # 200 draws x 10 consecutive seeds = 2000 random cases; one drawn integer fixes each
    # case entirely (sizes included), so Hypothesis' per-example overhead is paid 200 times
    for j in range(CASES_PER_EXAMPLE):
        check_compute_map_case(seed * CASES_PER_EXAMPLE + j)


# --------------------------------------------------------------------------- per query
RANKING = [7, 5, 9, 8, 3]
OK = [7, 9, 3]  # hits at 0-based positions 0, 2, 4


def test_average_precision_hand():
    # (1 + 1)/2 + (1/2 + 2/3)/2 + (2/4 + 3/5)/2 = 1 + 7/12 + 11/20 = 32/15; / 3 -> 32/45
    assert average_precision(RANKING, OK) == pytest.approx(32 / 45)
    # junk 5 removed: hits at 0, 1, 3 -> 1 + 1 + (2/3 + 3/4)/2 = 2 + 17/24 = 65/24; /3 -> 65/72
    assert average_precision(RANKING, OK, junk=[5]) == pytest.approx(65 / 72)
    assert math.isnan(average_precision(RANKING, []))
    # an index in both ok and junk: revisitop scores it as a positive at its position and,
    # as junk, moves the positives after it up: positives at 0 and 1 - 1 = 0 ->
    # (1 + 1)/2 + (1 + 2/1)/2 = 5/2; / 2 -> 5/4 (see test_ok_and_junk_scored_as_revisitop)
    assert average_precision([1, 2], ok=[1, 2], junk=[1]) == pytest.approx(1.25)
    # -1 padding is ignored
    assert average_precision([7, -1, -1], ok=[7]) == 1.0


def test_ap_at_k_hand():
    assert ap_at_k(RANKING, OK, 1) == pytest.approx(1.0)  # 1 / min(1, 3)
    assert ap_at_k(RANKING, OK, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert ap_at_k(RANKING, OK, 10) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert ap_at_k(RANKING, OK, 2, junk=[5]) == pytest.approx((1 + 1) / 2)
    assert ap_at_k([1, 2, 3], [9], 3) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        ap_at_k(RANKING, OK, 0)


def test_precision_recall_first_rank_hand():
    assert precision_at_k(RANKING, OK, 2) == pytest.approx(0.5)
    assert precision_at_k(RANKING, OK, 5) == pytest.approx(0.6)
    assert precision_at_k(RANKING, OK, 10) == pytest.approx(0.3)
    assert precision_at_k(RANKING, OK, 2, junk=[5]) == pytest.approx(1.0)
    assert recall_at_k(RANKING, OK, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, OK, 3) == pytest.approx(2 / 3)
    assert recall_at_k(RANKING, OK, 5) == pytest.approx(1.0)
    assert math.isnan(recall_at_k(RANKING, [], 5))
    assert first_relevant_rank(RANKING, [9]) == 3
    assert first_relevant_rank(RANKING, [9], junk=[7, 5]) == 1
    assert first_relevant_rank([1, 2], [9]) == 3  # none found: one past the end
    assert first_relevant_rank([1, 2, 4], [9], junk=[4]) == 3


def test_ns_score_counts_self():
    # query 0 in group {0, 1, 2, 3}; first four results 4, 0, 1, 7 -> 0 and 1
    assert ns_score([4, 0, 1, 7, 2], [0, 1, 2, 3]) == 2
    assert ns_score([0, 1, 2, 3, 4], [0, 1, 2, 3]) == 4
    assert ns_score([0, 1, 2, 3, 4], [0, 1, 2, 3], k=2) == 2
    assert ns_score([], [0, 1]) == 0


# --------------------------------------------------------------------------- compute_metrics
GND6 = [
    {"ok": [1, 2], "junk": [5]},  # query = gallery image 0
    {"ok": [4], "junk": []},  # query not in the gallery
    {"ok": [], "junk": []},  # query = gallery image 3, no positives
]
SELF6 = [0, None, 3]
RANKINGS6 = [
    np.array([0, 5, 3, 1, 4, 2]),
    np.array([4, 0, 1, 2, 3, 5]),
    np.array([3, 0, 1, 2, 4, 5]),
]


def test_compute_metrics_removes_self_and_junk():
    metrics, per_query = compute_metrics(RANKINGS6, GND6, SELF6, ks=(1, 5))
    # query 0: cleaned 3, 1, 4, 2 -> hits at 1 and 3:
    #   (0/1 + 1/2)/2 + (1/3 + 2/4)/2 = 1/4 + 5/12 = 2/3; / 2 -> 1/3
    q0, q1, q2 = per_query
    assert q0["ap"] == pytest.approx(1 / 3)
    assert q0["first_rank"] == 2
    assert q0["P@1"] == 0.0 and q0["R@5"] == pytest.approx(1.0)
    assert q0["ns"] == 2  # 0 (self) and 1 among 0, 5, 3, 1
    assert q0["top"] == [3, 1, 4, 2]
    assert q0["n_ok"] == 2
    assert q1["ap"] == 1.0 and q1["first_rank"] == 1 and q1["ns"] == 1
    assert q2["ap"] is None and q2["ns"] == 1 and q2["first_rank"] is None
    assert metrics["mAP"] == pytest.approx((1 / 3 + 1) / 2)
    assert metrics["n_queries"] == 3 and metrics["n_queries_evaluated"] == 2
    assert metrics["mean_rank"] == pytest.approx(1.5)
    assert metrics["median_rank"] == pytest.approx(1.5)
    assert metrics["ns_score"] == pytest.approx(4 / 3)
    assert metrics["P@1"] == pytest.approx(0.5)
    assert metrics["R@1"] == pytest.approx(0.5)  # q0: 0, q1: 1
    assert metrics["mAP@1"] == pytest.approx(0.5)
    for key in ("mAP@10", "mAP@50", "mAP@100", "P@5", "P@10", "R@5", "R@10"):
        assert key in metrics
    json.dumps(metrics, allow_nan=False)
    json.dumps(per_query, allow_nan=False)
    assert all(
        isinstance(v, (int, float)) and not isinstance(v, np.generic) for v in metrics.values()
    )


def test_compute_metrics_map_equals_compute_map():
    # the revisitop convention: the query's own image declared as junk
    gnd_self_junk = [
        {"ok": g["ok"], "junk": g["junk"] + ([s] if s is not None else [])}
        for g, s in zip(GND6, SELF6, strict=True)
    ]
    ranks = np.stack(RANKINGS6, axis=1)
    metrics, _ = compute_metrics(RANKINGS6, GND6, SELF6)
    assert metrics["mAP"] == pytest.approx(compute_map(ranks, gnd_self_junk)[0], abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 15), st.integers(1, 5))
def test_compute_metrics_map_equals_compute_map_random(seed, n_db, nq):
    rng = np.random.default_rng(seed)
    rankings, gnd, selfs = [], [], []
    for _ in range(nq):
        labels = rng.choice(np.array(list("onj")), size=n_db)
        s = None if rng.random() < 0.3 else int(rng.integers(0, n_db))
        ok = [i for i in range(n_db) if labels[i] == "o" and i != s]
        junk = [i for i in range(n_db) if labels[i] == "j" and i != s]
        rankings.append(rng.permutation(n_db))
        gnd.append({"ok": ok, "junk": junk})
        selfs.append(s)
    metrics, _ = compute_metrics(rankings, gnd, selfs)
    gnd_j = [
        {"ok": g["ok"], "junk": g["junk"] + ([s] if s is not None else [])}
        for g, s in zip(gnd, selfs, strict=True)
    ]
    ref = compute_map(np.stack(rankings, axis=1), gnd_j)[0]
    if math.isnan(ref):
        assert metrics["n_queries_evaluated"] == 0 and metrics["mAP"] == 0.0
    else:
        assert abs(metrics["mAP"] - ref) < 1e-9


def test_compute_metrics_self_in_ok_is_dropped():
    metrics, per_query = compute_metrics([np.array([0, 1, 2])], [{"ok": [0, 1]}], [0])
    assert per_query[0]["n_ok"] == 1
    assert metrics["mAP"] == 1.0


def test_compute_metrics_no_positives_anywhere():
    metrics, _ = compute_metrics([np.array([0, 1])], [{"ok": []}], [None])
    assert metrics["mAP"] == 0.0 and metrics["n_queries_evaluated"] == 0
    json.dumps(metrics, allow_nan=False)


def test_format_metrics_table():
    table = format_metrics_table({"mAP": 0.123456, "n_queries": 12, "nested": {"a": 1}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert "0.1235" in table and "12" in table and "nested" not in table
    # values start in the same column
    col = lines[2].index("0.1235")
    assert lines[3].index("12") == col


# --------------------------------------------------------------------------- evaluate
class FakeRetriever:
    """A catalog of paths; each query's results are given by a function of its path."""

    def __init__(self, paths, rank_fn, fail=()):
        self.paths = [Path(p) for p in paths]
        self.rank_fn = rank_fn
        self.fail = set(fail)
        self.calls = []

    def config(self):
        return {"embedder": "fake"}

    def search_many(self, queries, k, bboxes):
        self.calls.append((len(queries), k, list(bboxes)))
        m = len(queries)
        ids = np.full((m, k), -1, dtype=np.int64)
        failed = []
        for i, q in enumerate(queries):
            if Path(q).name in self.fail:
                failed.append(i)
                continue
            row = self.rank_fn(Path(q))[:k]
            ids[i, : len(row)] = row
        return np.zeros((m, k), np.float32), ids, failed


def _group_dataset(tmp_path, n_groups=3, size=4):
    """Gallery g{group}_{member}.png, every image a query, ok = the rest of the group."""
    names = [f"g{g}_{m}.png" for g in range(n_groups) for m in range(size)]
    gnd = []
    for i in range(len(names)):
        g = i // size
        gnd.append({"ok": [j for j in range(g * size, (g + 1) * size) if j != i], "junk": []})
    return RetrievalDataset(tmp_path, names, list(names), gnd, name="groups", format="json")


def test_evaluate_perfect_ranking(tmp_path):
    ds = _group_dataset(tmp_path)
    # the catalog lists the images in reverse order: ids must be mapped by path
    catalog = list(reversed(ds.image_paths()))
    cid = {p.name: i for i, p in enumerate(catalog)}

    def perfect(q):
        g = int(q.name[1])
        same = [p.name for p in catalog if p.name.startswith(f"g{g}_")]
        others = [p.name for p in catalog if not p.name.startswith(f"g{g}_")]
        order = [q.name] + [n for n in same if n != q.name] + others
        return [cid[n] for n in order]

    ret = FakeRetriever(catalog, perfect)
    report = evaluate(ret, ds, progress=False)
    m = report["metrics"]
    assert m["mAP"] == pytest.approx(1.0)
    assert m["ns_score"] == pytest.approx(4.0)
    assert m["P@1"] == 1.0 and m["R@10"] == 1.0 and m["mean_rank"] == 1.0
    assert report["failed"] == []
    assert ret.calls[0][1] == len(catalog)  # k = the whole catalog
    assert report["config"] == {"embedder": "fake"}
    assert report["dataset"]["images"] == 12 and report["dataset"]["name"] == "groups"
    json.dumps(report, allow_nan=False)


def test_evaluate_imperfect_and_failed(tmp_path):
    ds = _group_dataset(tmp_path, n_groups=2, size=2)  # a0 a1 | b0 b1 -> indices 0 1 | 2 3
    catalog = ds.image_paths()

    def rank(q):
        i = ds.imlist.index(q.name)
        partner = i ^ 1
        # self, then a stranger, then the partner, then the other stranger
        strangers = [j for j in range(4) if j not in (i, partner)]
        return [i, strangers[0], partner, strangers[1]]

    ret = FakeRetriever(catalog, rank, fail={"g1_1.png"})
    report = evaluate(ret, ds, progress=False, batch_size=3)  # the failure is in batch 2
    # partner at 0-based rank 1 once self is removed: (0/1 + 1/2)/2 = 1/4; the failed query: 0
    assert [q["ap"] for q in report["per_query"]] == pytest.approx([0.25, 0.25, 0.25, 0.0])
    assert report["metrics"]["mAP"] == pytest.approx(0.75 / 4)
    assert report["failed"] == [{"query": 3, "path": "g1_1.png"}]
    assert report["metrics"]["n_failed"] == 1
    assert report["per_query"][3]["first_rank"] == 5  # worst: past the 4-image gallery
    assert report["metrics"]["ns_score"] == pytest.approx((2 + 2 + 2 + 0) / 4)


def test_evaluate_distractors_and_truncation(tmp_path):
    ds = _group_dataset(tmp_path, n_groups=1, size=2)  # 0, 1 relevant to each other
    catalog = [tmp_path / "elsewhere" / "x.png", *ds.image_paths()]  # id 0 is a distractor

    def rank(q):
        own = 1 + ds.imlist.index(q.name)
        other = 3 - own
        return [own, 0, other]  # self, distractor, partner

    ret = FakeRetriever(catalog, rank)
    report = evaluate(ret, ds, progress=False)
    assert report["metrics"]["mAP"] == pytest.approx(0.25)
    assert report["per_query"][0]["top"] == [None, 1]
    # truncated to k=2: the partner is never found
    report = evaluate(ret, ds, k=2, progress=False)
    assert report["metrics"]["mAP"] == 0.0 and report["k"] == 2


def test_evaluate_wrong_retriever(tmp_path):
    ds = _group_dataset(tmp_path, n_groups=1, size=2)
    ret = FakeRetriever([tmp_path / "other" / "a.png"], lambda q: [0])
    with pytest.raises(DatasetError, match="not built on this data set"):
        evaluate(ret, ds, progress=False)


def test_evaluate_passes_bboxes(tmp_path):
    ds = RetrievalDataset(
        tmp_path, ["a.png", "b.png"], ["q.png"], [{"ok": [1], "bbx": [1, 2, 30, 40]}]
    )
    ret = FakeRetriever(ds.image_paths(), lambda q: [1, 0])
    report = evaluate(ret, ds, progress=False)
    assert ret.calls[0][2] == [(1.0, 2.0, 30.0, 40.0)]
    assert report["metrics"]["mAP"] == 1.0


# --------------------------------------------------------------------------- PR curve
def test_interpolated_precision_hand():
    # hits at ranks 1 and 3: precision 1 at recall 1/2, 2/3 at recall 1
    r, p = interpolated_precision([7, 5, 9, 8], ok=[7, 9])
    assert r.tolist() == pytest.approx([i / 10 for i in range(11)])
    assert p.tolist() == pytest.approx([1.0] * 6 + [2 / 3] * 5)
    # interpolation looks right: hits at ranks 2, 3, 6 of 3 positives give raw precisions
    # 1/2 (recall 1/3), 2/3 (recall 2/3), 1/2 (recall 1); interpolated: max over recall >= r
    _, p = interpolated_precision([10, 1, 2, 11, 12, 3], ok=[1, 2, 3])
    assert p.tolist() == pytest.approx([2 / 3] * 7 + [1 / 2] * 4)  # 0.6 < 2/3 -> still 2/3
    # 10 positives, the 4th after a miss: at recall 0.3 (the 3rd hit) the precision is still 1
    ranking = [0, 1, 2, 99, 3, 4, 5, 6, 7, 8, 9]
    _, p = interpolated_precision(ranking, ok=range(10))
    assert p[3] == pytest.approx(1.0)  # linspace gives 0.30000000000000004: no off-by-one
    assert p[4] == pytest.approx(10 / 11)
    # truncated ranking: recall 1 never reached -> 0 there; junk removed first
    _, p = interpolated_precision([5, 7], ok=[7, 9], junk=[5], n_points=3)
    assert p.tolist() == pytest.approx([1.0, 1.0, 0.0])
    _, p = interpolated_precision([1, 2], ok=[], n_points=101)
    assert p.shape == (101,) and not p.any()
    with pytest.raises(ValueError, match="n_points"):
        interpolated_precision([1], ok=[1], n_points=1)


def test_mean_pr_curve_hand():
    # query 0 as above (1 up to recall 0.5, then 2/3); query 1: one positive at rank 3 -> 1/3
    # everywhere; query 2 without positives is left out; query 3 failed -> 0 everywhere
    rankings = [np.array([7, 5, 9, 8]), np.array([1, 2, 3]), np.array([1]), np.array([3])]
    gnd = [{"ok": [7, 9]}, {"ok": [3]}, {"ok": []}, {"ok": [3]}]
    curve = mean_pr_curve(rankings, gnd, failed=[3])
    assert curve["recall"] == pytest.approx([i / 10 for i in range(11)])
    assert curve["precision"] == pytest.approx([(1 + 1 / 3) / 3] * 6 + [(2 / 3 + 1 / 3) / 3] * 5)


def test_compute_metrics_top_raw_keeps_junk():
    _, per_query = compute_metrics(RANKINGS6, GND6, SELF6)
    # query 0: raw 0, 5, 3, 1, 4, 2 with self 0 and junk 5
    assert per_query[0]["top"] == [3, 1, 4, 2]
    assert per_query[0]["top_raw"] == [5, 3, 1, 4, 2]
    assert per_query[1]["top_raw"] == per_query[1]["top"] == [4, 0, 1, 2, 3, 5]
    assert per_query[2]["top_raw"] == [0, 1, 2, 4, 5]


# --------------------------------------------------------------------------- revisited E/M/H
def test_evaluate_revisited_protocols_hand(tmp_path):
    from cvretrieval.datasets import revisitop_protocols

    raw = [
        {"easy": [0], "hard": [1], "junk": [2]},
        {"easy": [4, 5], "hard": [], "junk": []},
    ]
    protocols = revisitop_protocols(raw)
    names = [f"im{i}.jpg" for i in range(6)]
    ds = RetrievalDataset(
        tmp_path,
        names,
        ["q0.jpg", "q1.jpg"],
        protocols["medium"],
        name="rox",
        format="revisitop",
        protocols=protocols,
        protocol="medium",
    )
    order = {"q0.jpg": [1, 2, 3, 0, 4, 5], "q1.jpg": [5, 0, 1, 2, 3, 4]}
    ret = FakeRetriever(ds.image_paths(), lambda q: order[q.name])
    report = evaluate(ret, ds, progress=False)
    m = report["metrics"]
    # Easy   q0: ok 0, junk 2+1 -> 3,0,4,5: AP (0/1 + 1/2)/2 = 1/4
    #        q1: ok 4,5 at ranks 0, 5: 1 + (1/5 + 2/6)/2 = 19/15 -> /2 = 19/30
    #        mAP = (1/4 + 19/30) / 2 = 53/120
    # Medium q0: ok 0,1, junk 2 -> 1,3,0,4,5: 1 + (1/2 + 2/3)/2 = 19/12 -> /2 = 19/24
    #        q1: as Easy, 19/30;  mAP = (19/24 + 19/30) / 2 = 57/80
    # Hard   q0: ok 1, junk 2+0 -> 1,3,4,5: AP 1; q1 has no hard positive: left out -> 1
    assert m["mAP (E)"] == pytest.approx(53 / 120)
    assert m["mAP (M)"] == pytest.approx(57 / 80)
    assert m["mAP (H)"] == pytest.approx(1.0)
    # revisitop's mP@k: kq = min(max(pos), k), share of positives within kq
    # Easy   q0 pos [2]: k=1 -> 0, k=5,10 -> 1/2;  q1 pos [1, 6]: 1, 1/5, 2/6
    # Medium q0 pos [1, 3]: 1, 2/3, 2/3;          q1 as Easy
    # Hard   q0 pos [1]: 1, 1, 1
    assert [m[f"mP@{k} (E)"] for k in (1, 5, 10)] == pytest.approx([0.5, 0.35, 5 / 12])
    assert [m[f"mP@{k} (M)"] for k in (1, 5, 10)] == pytest.approx([1.0, 13 / 30, 0.5])
    assert [m[f"mP@{k} (H)"] for k in (1, 5, 10)] == pytest.approx([1.0, 1.0, 1.0])
    assert m["mAP"] == pytest.approx(57 / 80)  # gnd is the medium protocol
    assert report["protocols"]["hard"]["ap"] == [1.0, None]
    assert report["protocols"]["easy"]["n_queries_evaluated"] == 2
    assert report["dataset"]["protocol"] == "medium"
    json.dumps(report, allow_nan=False)
    table = format_metrics_table(m)
    assert "mAP (H)" in table and "mP@10 (E)" in table


def test_revisited_metrics_treats_self_as_junk():
    # query = gallery image 0, ok 0 (itself) and 2; ranking 0, 1, 2 -> self dropped: 1, 2
    out = revisited_metrics([np.array([0, 1, 2])], {"p": [{"ok": [0, 2]}]}, [0], kappas=[1])
    # ok = [2] at rank 1 after removing self: (0/1 + 1/2) / 2 = 1/4
    assert out["p"]["mAP"] == pytest.approx(0.25)
    assert out["p"]["mP@1"] == 0.0


# --------------------------------------------------------------------------- GLDv2
def test_gldv2_map_at_100_hand():
    solution = {
        "q1": ["a", "b"],
        "q2": ["c"],
        "q3": ["d", "e"],  # never predicted -> 0
        "q5": [f"r{i}" for i in range(150)],
        "q6": ["f"],
        "q7": [],  # no solution: left out of the mean
    }
    predictions = {
        "q1": ["a", "x", "b"],  # (1/1 + 2/3) / 2 = 5/6
        "q2": ["x", "c", "c"],  # c at rank 2 -> 1/2; the repeat is skipped
        "q5": [f"r{i}" for i in range(150)],  # 100 hits / min(150, 100) = 1
        "q6": ["x"] * 100 + ["f"],  # the hit is at rank 101: beyond the cut-off -> 0
        "q4": ["a"],  # not in the solution: ignored (Kaggle's Ignored images)
    }
    assert gldv2_map_at_100(predictions, solution) == pytest.approx((5 / 6 + 1 / 2 + 1) / 5)
    # a repeat keeps its rank: c, c, d with c, d relevant -> (1/1 + 2/3) / 2, not (1 + 2/2) / 2
    assert gldv2_map_at_100({"q": ["c", "c", "d"]}, {"q": ["c", "d"]}) == pytest.approx(5 / 6)
    assert gldv2_map_at_100({"q": ["a"]}, {"q": ["a", "b"]}, max_predictions=1) == 1.0
    assert gldv2_map_at_100({}, {"q": []}) == 0.0


def test_evaluate_reports_gldv2_metric(tmp_path):
    index = [f"index/{c}/{c}/{c}/{c * 3}{i}.jpg" for i, c in enumerate("abc")]
    ds = RetrievalDataset(
        tmp_path,
        index,
        ["test/t/t/t/ttt1.jpg", "test/u/u/u/uuu2.jpg"],
        [{"ok": [0, 2]}, {"ok": [1]}],
        format="gldv2",
    )
    extra = tmp_path / "elsewhere" / "zzz9.jpg"  # a distractor outside the data set
    ret = FakeRetriever([*ds.image_paths(), extra], lambda q: [3, 0, 1, 2])
    report = evaluate(ret, ds, progress=False)
    # ttt1: distractor, a (hit, 1/2), b, c (hit, 2/4) -> (1/2 + 1/2) / 2 = 1/2
    # uuu2: distractor, a, b (hit, 1/3) -> 1/3
    assert report["metrics"]["mAP@100 (GLDv2)"] == pytest.approx((1 / 2 + 1 / 3) / 2)


# --------------------------------------------------------------------------- evaluate extras
def test_evaluate_pr_curve_and_top_raw(tmp_path):
    ds = _group_dataset(tmp_path, n_groups=2, size=2)
    catalog = ds.image_paths()

    def rank(q):
        i = ds.imlist.index(q.name)
        strangers = [j for j in range(4) if j not in (i, i ^ 1)]
        return [i, strangers[0], i ^ 1, strangers[1]]

    report = evaluate(
        FakeRetriever(catalog, rank, fail={"g1_1.png"}), ds, progress=False, pr_points=101
    )
    # each query that ran: its one positive at rank 2 -> precision 1/2 at every recall level;
    # the failed query: 0 everywhere -> mean 3/8
    assert len(report["pr_curve"]["recall"]) == 101
    assert report["pr_curve"]["precision"] == pytest.approx([3 / 8] * 101)
    assert report["per_query"][0]["top_raw"] == [2, 1, 3]  # self removed, nothing else
    assert report["per_query"][3]["top_raw"] == []
    with pytest.raises(ValueError, match="n_points"):
        evaluate(FakeRetriever(catalog, rank), ds, progress=False, pr_points=1)


# --------------------------------------------------------------------------- vectors
def _vector_dataset(tmp_path):
    return RetrievalDataset(tmp_path, ["a", "b", "c"], ["q"], [{"ok": [0]}], name="vec")


def test_evaluate_vectors_ip_and_l2(tmp_path):
    ds = _vector_dataset(tmp_path)
    gallery = np.array([[1, 0], [3, 0], [0, 1]], dtype=np.float64)
    queries = np.array([[1, 0]])
    # ip: scores 1, 3, 0 -> ranking b, a, c: the positive at rank 2 -> AP 1/4
    ip = evaluate_vectors(gallery, queries, ds)
    assert ip["per_query"][0]["top"] == [1, 0, 2]
    assert ip["metrics"]["mAP"] == pytest.approx(0.25)
    assert ip["config"] == {"vectors": "arrays", "metric": "ip", "dim": 2, "index": "Flat"}
    # l2: distances 0, 2, sqrt(2) -> a, c, b -> AP 1
    l2 = evaluate_vectors(gallery, queries, ds, metric="l2", source="v.npz")
    assert l2["per_query"][0]["top"] == [0, 2, 1]
    assert l2["metrics"]["mAP"] == 1.0 and l2["config"]["vectors"] == "v.npz"
    assert set(ip) >= {"config", "dataset", "k", "metrics", "per_query", "failed", "pr_curve"}
    assert ip["failed"] == [] and ip["k"] == 3
    # truncated to k=1 under ip: the positive is never found
    assert evaluate_vectors(gallery, queries, ds, k=1)["metrics"]["mAP"] == 0.0
    json.dumps(ip, allow_nan=False)


def test_evaluate_vectors_removes_self(tmp_path):
    ds = RetrievalDataset(tmp_path, ["a", "b", "c"], ["a", "b"], [{"ok": [2]}, {"ok": [0]}])
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    r = evaluate_vectors(gallery, gallery[:2], ds)
    # query a: a (self, removed), c, b -> hit first; query b: b (self), c, a -> hit second
    assert [q["top"] for q in r["per_query"]] == [[2, 1], [2, 0]]
    assert r["metrics"]["mAP"] == pytest.approx((1 + 0.25) / 2)


def test_evaluate_vectors_errors(tmp_path):
    ds = _vector_dataset(tmp_path)
    g, q = np.eye(3, 2), np.ones((1, 2))
    with pytest.raises(DatasetError, match="gallery has 2 vectors .* 3 gallery images"):
        evaluate_vectors(g[:2], q, ds)
    with pytest.raises(DatasetError, match="queries has 2 vectors"):
        evaluate_vectors(g, np.ones((2, 2)), ds)
    with pytest.raises(DatasetError, match="dimension 2 but query vectors 3"):
        evaluate_vectors(g, np.ones((1, 3)), ds)
    bad = g.copy()
    bad[1, 0] = np.nan
    with pytest.raises(DatasetError, match="row 1"):
        evaluate_vectors(bad, q, ds)
    with pytest.raises(DatasetError, match="2-D"):
        evaluate_vectors(g, np.ones(2), ds)
    with pytest.raises(ValueError, match="metric"):
        evaluate_vectors(g, q, ds, metric="cosine")


def test_load_vectors_npz(tmp_path):
    ds = _vector_dataset(tmp_path)
    path = tmp_path / "vecs.npz"
    np.savez(path, gallery=np.eye(3, 2), queries=np.ones((1, 2)), metric="L2")
    g, q, metric = load_vectors_npz(path, ds)
    assert g.dtype == np.float32 and g.flags.c_contiguous and g.shape == (3, 2)
    assert q.shape == (1, 2) and metric == "l2"
    plain = tmp_path / "plain.npz"
    np.savez(plain, gallery=np.eye(3, 2), queries=np.ones((1, 2)))
    assert load_vectors_npz(plain)[2] is None
    report = evaluate_vectors(*load_vectors_npz(plain)[:2], ds, metric="ip")
    assert report["metrics"]["n_queries"] == 1


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"gallery": np.eye(3, 2)}, "no queries array"),
        ({"gallery": np.ones(3), "queries": np.ones((1, 2))}, "2-D"),
        ({"gallery": np.eye(3, 2), "queries": np.ones((1, 4))}, "dimension 2 but query vectors 4"),
        ({"gallery": np.eye(2, 2), "queries": np.ones((1, 2))}, "gallery has 2 vectors"),
        ({"gallery": np.eye(3, 2), "queries": np.ones((1, 2)), "metric": "cos"}, "unknown metric"),
        ({"gallery": np.eye(3, 2), "queries": np.ones((1, 2)), "metric": 3}, "'ip' or 'l2'"),
        ({"gallery": np.array([["a", "b"]] * 3), "queries": np.ones((1, 2))}, "numbers"),
        (
            {"gallery": np.array([[1, None]] * 3, dtype=object), "queries": np.ones((1, 2))},
            "cannot read vectors",
        ),
    ],
)
def test_load_vectors_npz_errors(tmp_path, arrays, match):
    path = tmp_path / "v.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=match):
        load_vectors_npz(path, _vector_dataset(tmp_path))


def test_load_vectors_npz_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_vectors_npz(tmp_path / "nope.npz")
    np.save(tmp_path / "single.npy", np.eye(2))
    with pytest.raises(DatasetError, match="single .npy"):
        load_vectors_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read vectors"):
        load_vectors_npz(tmp_path / "junk.npz")


def test_evaluate_vectors_agrees_with_retriever_on_real_data(ukbench_dir):
    # the same HOG vectors scored through a flat-index Retriever and as precomputed vectors
    import cvretrieval as cvr
    from cvretrieval.datasets import load_dataset

    ds = load_dataset(ukbench_dir)
    ret = cvr.Retriever("hog", index="flat", n_jobs=1, max_side=160)
    ret.build(ds.image_paths(), progress=False)
    vectors, rows, errors = ret.embed_queries(ds.image_paths())
    assert rows == list(range(56)) and not any(errors)
    a = evaluate(ret, ds, progress=False)
    b = evaluate_vectors(vectors, vectors, ds, metric="ip")
    for key in ("mAP", "mAP@10", "P@1", "R@10", "ns_score", "mean_rank"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-9), key
    assert [q["top"] for q in b["per_query"]] == [q["top"] for q in a["per_query"]]
    assert b["pr_curve"]["precision"] == pytest.approx(a["pr_curve"]["precision"])
    assert b["metrics"]["ns_score"] > 1.5  # chance is about 3 * 3/55 + 1 = 1.16
