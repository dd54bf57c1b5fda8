"""Query expansion (AQE, alpha-QE) and database-side augmentation: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvretrieval.rerank.qe import (
    alpha_query_expansion,
    average_query_expansion,
    database_augmentation,
    exact_knn,
    requery,
)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _search(xb):
    """Brute-force inner-product search in numpy (an oracle independent of Faiss)."""

    def search(xq, k):
        S = np.asarray(xq, np.float64) @ np.asarray(xb, np.float64).T
        I = np.argsort(-S, axis=1, kind="stable")[:, :k]  # noqa: E741
        return np.take_along_axis(S, I, axis=1), I

    return search


def _deg(a):
    return math.radians(a)


# The query is e1. Two positives lie in the (e1, e2) plane at 40 and 70 degrees from it;
# three distractors lie in the (e1, e3) plane at 60, 62 and 65 degrees.
#   cosines to q: P1 .766, D1 .500, D2 .469, D3 .423, P2 .342  -> P2 is 5th
# AQE with k=1: q' = (e1 + P1) / |.| = (cos 20, sin 20, 0) (the bisector)
#   cosines to q': P1 cos20 = .940, P2 cos50 = .643, D1 cos60 cos20 = .470, ... -> P2 is 2nd
Q = np.array([[1.0, 0.0, 0.0]])
P1 = [math.cos(_deg(40)), math.sin(_deg(40)), 0.0]
P2 = [math.cos(_deg(70)), math.sin(_deg(70)), 0.0]
DS = [[math.cos(_deg(c)), 0.0, math.sin(_deg(c))] for c in (60, 62, 65)]
XB = np.array([DS[0], P2, DS[1], P1, DS[2]])  # positions: P1 = 3, P2 = 1
POSITIVES = {1, 3}


def test_aqe_brings_second_positive_from_rank_5_to_top_2():
    D, I = _search(XB)(Q, 5)  # noqa: E741
    assert I[0].tolist() == [3, 0, 2, 4, 1]  # P1, D1, D2, D3, P2
    q2 = average_query_expansion(Q, XB, I, k=1)
    np.testing.assert_allclose(q2, [[math.cos(_deg(20)), math.sin(_deg(20)), 0.0]], atol=1e-6)
    _, I2 = _search(XB)(q2, 5)
    assert set(I2[0, :2].tolist()) == POSITIVES
    # the same through requery (search, expand, search again)
    _, I3 = requery(_search(XB), Q, XB, 5, qe_k=1)
    assert I3[0].tolist() == I2[0].tolist()


def test_k0_leaves_vectors_and_ranking_unchanged():
    rng = np.random.default_rng(0)
    xb = _unit(rng.normal(size=(30, 8)))
    xq = _unit(rng.normal(size=(4, 8)))
    D, I = _search(xb)(xq, 5)  # noqa: E741
    np.testing.assert_allclose(average_query_expansion(xq, xb, I, k=0), xq, atol=1e-6)
    np.testing.assert_allclose(alpha_query_expansion(xq, xb, I, D, k=0), xq, atol=1e-6)
    _, I0 = requery(_search(xb), xq, xb, 10, qe_k=0)
    assert np.array_equal(I0, _search(xb)(xq, 10)[1])
    # un-normalised queries: k=0 only rescales them, so the ranking stays the same
    q3 = average_query_expansion(3.0 * xq, xb, I, k=0)
    assert np.array_equal(_search(xb)(q3, 10)[1], _search(xb)(xq, 10)[1])


def test_aqe_is_the_mean_of_query_and_top_k():
    rng = np.random.default_rng(1)
    xb = _unit(rng.normal(size=(20, 5)))
    xq = _unit(rng.normal(size=(3, 5)))
    _, I = _search(xb)(xq, 6)  # noqa: E741
    out = average_query_expansion(xq, xb, I, k=4)
    for i in range(3):
        m = (xq[i] + xb[I[i, 0]] + xb[I[i, 1]] + xb[I[i, 2]] + xb[I[i, 3]]) / 5
        np.testing.assert_allclose(out[i], m / np.linalg.norm(m), atol=1e-6)


def test_alpha_zero_equals_aqe():
    rng = np.random.default_rng(2)
    xb = _unit(rng.normal(size=(25, 6)))
    xq = _unit(rng.normal(size=(5, 6)))
    D, I = _search(xb)(xq, 7)  # noqa: E741  (some similarities are negative)
    np.testing.assert_allclose(
        alpha_query_expansion(xq, xb, I, D, k=7, alpha=0.0),
        average_query_expansion(xq, xb, I, k=7),
        atol=1e-6,
    )


def test_alpha_qe_weights_by_hand():
    D, I = _search(XB)(Q, 5)  # noqa: E741
    out = alpha_query_expansion(Q, XB, I, D, k=3, alpha=3.0)
    # top 3: P1 (cos40), D1 (cos60), D2 (cos62), weights cos^3
    c40, c60, c62 = (math.cos(_deg(a)) for a in (40, 60, 62))
    v = Q[0] + c40**3 * np.array(P1) + c60**3 * np.array(DS[0]) + c62**3 * np.array(DS[1])
    np.testing.assert_allclose(out[0], v / np.linalg.norm(v), atol=1e-6)
    # the same from squared L2 distances (2 - 2 cos for unit vectors)
    out_l2 = alpha_query_expansion(Q, XB, I, 2 - 2 * D, k=3, alpha=3.0, metric="l2")
    np.testing.assert_allclose(out_l2, out, atol=1e-6)


def test_negative_similarities_get_no_weight_and_missing_results_are_ignored():
    xb = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0]])
    # the second neighbour has cosine -1: clipped to 0, so it must not pull the query
    out = alpha_query_expansion(q, xb, [[0, 1]], [[1.0, -1.0]], k=2, alpha=1.0)
    np.testing.assert_allclose(out, [[1.0, 0.0]], atol=1e-7)
    # -1 in I (fewer results than k) is skipped: mean of q and xb[2] only
    out = average_query_expansion(q, xb, [[2, -1, -1]], k=3)
    np.testing.assert_allclose(out, _unit([[1.0, 1.0]]), atol=1e-6)


def test_dba_by_hand():
    # three unit vectors; nearest neighbour (excluding itself): 0 <-> 1, 2 -> 1
    xb = _unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    out = database_augmentation(xb, k=1)
    expected = _unit([xb[0] + xb[1], xb[1] + xb[0], xb[2] + xb[1]])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the same from explicit k-NN arrays, with the self-match not in first place
    I = np.array([[1, 0], [1, 0], [1, 2]])  # noqa: E741
    np.testing.assert_allclose(database_augmentation(xb, I, k=1), expected, atol=1e-6)
    # k = 0 leaves the database alone
    np.testing.assert_allclose(database_augmentation(xb, k=0), xb, atol=1e-7)


def test_alpha_dba_by_hand():
    xb = _unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    D, I = _search(xb)(xb, 3)  # noqa: E741  (self first)
    out = database_augmentation(xb, I, D, k=2, alpha=2.0)
    S = xb @ xb.T
    for i in range(3):
        others = [j for j in I[i] if j != i][:2]
        v = xb[i] + sum(max(S[i, j], 0.0) ** 2 * xb[j] for j in others)
        np.testing.assert_allclose(out[i], v / np.linalg.norm(v), atol=1e-6)
    with pytest.raises(ValueError, match="scores D"):
        database_augmentation(xb, I, k=2, alpha=2.0)


def test_exact_knn_matches_numpy():
    rng = np.random.default_rng(3)
    xb = _unit(rng.normal(size=(40, 6))).astype(np.float32)
    xq = _unit(rng.normal(size=(5, 6))).astype(np.float32)
    D, I = exact_knn(xq, xb, 4)  # noqa: E741
    Dn, In = _search(xb)(xq, 4)
    assert np.array_equal(I, In)
    np.testing.assert_allclose(D, Dn, atol=1e-5)
    D2, I2 = exact_knn(xq, xb, 4, metric="l2")
    assert np.array_equal(I2, In)  # unit vectors: same order
    np.testing.assert_allclose(D2, 2 - 2 * Dn, atol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: average_query_expansion(Q, XB, [[7]], k=1), "positions"),
        (lambda: average_query_expansion(Q, XB, [[0], [1]], k=1), "one row per query"),
        (lambda: average_query_expansion(Q, XB, [[0]], k=-1), "non-negative"),
        (lambda: average_query_expansion(Q, XB[:, :2], [[0]], k=1), "dimension"),
        (lambda: alpha_query_expansion(Q, XB, [[0, 1]], [[1.0]], k=1), "same search"),
        (lambda: alpha_query_expansion(Q, XB, [[0]], [[1.0]], k=1, alpha=-1), "alpha"),
        (lambda: alpha_query_expansion(Q, XB, [[0]], [[1.0]], k=1, metric="cos"), "metric"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lazy_reexport_from_package():
    import cvretrieval.rerank as rerank

    assert rerank.average_query_expansion is average_query_expansion
    assert "database_augmentation" in dir(rerank)
    with pytest.raises(AttributeError):
        rerank.no_such_name  # noqa: B018
