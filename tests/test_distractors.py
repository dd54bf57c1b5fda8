"""Evaluation with distractors (cvretrieval.distractors): merging, and the +1M protocol's rules."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import cli_run, textured_image

from cvretrieval.datasets import load_dataset
from cvretrieval.distractors import WithDistractors, merge_topk
from cvretrieval.evaluation import evaluate
from cvretrieval.metrics import compute_ap, hit_positions
from cvretrieval.retriever import Retriever


# --------------------------------------------------------------------------- merge_topk
def test_merge_topk_hand():
    D, res = merge_topk(np.array([[0.9, 0.5, 0.1]]), np.array([[4, 7, -1]]),
                      np.array([[0.6, 0.5]]), np.array([[0, 1]]), 4, offset=10)
    assert res.tolist() == [[4, 10, 11, 7]]  # the tie at 0.5 goes to the distractor (11)
    assert D[0].tolist() == pytest.approx([0.9, 0.6, 0.5, 0.5])
    # l2: smaller first; padding when there are fewer than k results
    D, res = merge_topk(np.array([[1.0]]), np.array([[0]]), np.array([[0.5]]), np.array([[-1]]),
                      3, metric="l2", offset=5)
    assert res.tolist() == [[0, -1, -1]] and np.isnan(D[0, 1:]).all()
    with pytest.raises(ValueError, match="metric"):
        merge_topk(D, res, D, res, 1, metric="cos")


@pytest.mark.parametrize("seed", range(20))
def test_merge_topk_equals_one_sort(seed):
    rng = np.random.default_rng(seed)
    m, n1, n2, k = 3, 8, 6, int(rng.integers(1, 15))
    s1 = rng.integers(0, 5, size=(m, n1)).astype(float)  # many ties
    s2 = rng.integers(0, 5, size=(m, n2)).astype(float)
    o1 = np.argsort(-s1, axis=1, kind="stable")
    o2 = np.argsort(-s2, axis=1, kind="stable")
    D, res = merge_topk(np.take_along_axis(s1, o1, 1), o1, np.take_along_axis(s2, o2, 1), o2,
                      k, offset=n1)
    for q in range(m):
        # one list: distractors (ids n1..) before gallery images on equal scores
        allscores = np.concatenate([s1[q], s2[q]])
        ids = np.arange(n1 + n2)
        expected = np.lexsort((ids, ids < n1, -allscores))[: min(k, n1 + n2)]
        got = res[q][res[q] >= 0]
        assert got.tolist() == expected.tolist()
        assert D[q][: got.size].tolist() == allscores[expected].tolist()


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """3 classes x 3 noisy variants of one textured image each, and 6 unrelated distractors."""
    root = tmp_path_factory.mktemp("dis")
    rng = np.random.default_rng(0)
    for c in range(3):
        base = textured_image(100 + c, size=(96, 128))
        (root / "data" / f"c{c}").mkdir(parents=True)
        for i in range(3):
            noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "data" / f"c{c}" / f"{i}.png"), noisy)
    (root / "other").mkdir()
    for i in range(6):
        cv2.imwrite(str(root / "other" / f"d{i}.png"), textured_image(500 + i, size=(96, 128)))
    return root


def _built(root):
    data = load_dataset(root / "data", format="class-folders")
    ret = Retriever("hog", n_jobs=1).build(data.image_paths())
    return data, ret


def test_distractors_can_only_lower_map(small_set):
    data, ret = _built(small_set)
    plain = evaluate(ret, data, progress=False)
    with_d = evaluate(WithDistractors(ret, small_set / "other"), data, progress=False)
    assert with_d["config"]["distractors"]["n"] == 6
    assert with_d["metrics"]["mAP"] <= plain["metrics"]["mAP"] + 1e-12
    for a, b in zip(with_d["per_query"], plain["per_query"], strict=True):
        assert a["ap"] <= b["ap"] + 1e-12
    # distractors are never relevant and show as None in the top lists
    assert any(None in q["top"] for q in with_d["per_query"])


def test_identical_distractors_push_positives_down(small_set, tmp_path):
    data, ret = _built(small_set)
    copies = tmp_path / "copies"
    shutil.copytree(small_set / "data", copies)  # a copy of every gallery image
    wrapped = WithDistractors(ret, copies)
    report = evaluate(wrapped, data, progress=False)
    n = len(data.imlist)
    _, ranked, _ = ret.search_many(data.query_paths(), n)
    self_index = data.query_self_index()
    for q, entry in enumerate(report["per_query"]):
        g = data.gnd[q]
        pos, _ = hit_positions(ranked[q], g["ok"], (), self_index[q])
        ok = [i for i in g["ok"] if i != self_index[q]]
        # each image's copy ties with it and goes first; the copy of the query itself tops the
        # list: a positive at cleaned position p moves to 2p + 2
        assert entry["ap"] == pytest.approx(compute_ap(2 * pos + 2, len(ok)), abs=1e-9)


def test_distractor_that_is_a_dataset_image_is_dropped(small_set, tmp_path, caplog):
    caplog.set_level("WARNING")  # a CLI test run before may have raised the root level
    data, ret = _built(small_set)
    # the distractor folder is the data set itself: every distractor is dropped
    wrapped = WithDistractors(ret, small_set / "data",
                              exclude=[*data.image_paths(), *data.query_paths()])
    assert wrapped.config()["distractors"] == {"source": str(small_set / "data"), "n": 0,
                                              "dropped": 9}
    assert "dropped" in caplog.text
    a = evaluate(wrapped, data, progress=False)["metrics"]["mAP"]
    assert a == pytest.approx(evaluate(ret, data, progress=False)["metrics"]["mAP"], abs=1e-12)


def test_distractor_bundle_is_reused(small_set, tmp_path):
    data, ret = _built(small_set)
    bundle = Retriever("hog", n_jobs=1).build(small_set / "other").save(tmp_path / "d.cvret")
    from_dir = evaluate(WithDistractors(ret, small_set / "other"), data, progress=False)
    from_bundle = evaluate(WithDistractors(ret, bundle), data, progress=False)
    assert from_bundle["metrics"]["mAP"] == pytest.approx(from_dir["metrics"]["mAP"], abs=1e-6)
    other = Retriever("hog", metric="l2", n_jobs=1).build(small_set / "other")
    with pytest.raises(ValueError, match="metric"):
        WithDistractors(ret, other.save(tmp_path / "l2.cvret"))


def test_cli_eval_with_distractors(small_set, tmp_path):
    out = tmp_path / "r.json"
    cli_run("eval", small_set / "data", "--format", "class-folders", "--features", "hog",
            "--n-jobs", 1, "--distractors", small_set / "other", "--json", out, "-q")
    report = json.loads(out.read_text())
    assert report["config"]["distractors"]["n"] == 6
    res = cli_run("eval", small_set / "data", "--vectors", __file__, "--distractors",
                  small_set / "other", ok=False)
    assert res.exit_code != 0


def test_distractors_with_sparse_bovw(small_set):
    from cvretrieval.embedders import make_embedder

    data = load_dataset(small_set / "data", format="class-folders")
    emb = make_embedder("bovw-orb", n_words=16, n_features=200, random_state=0)
    ret = Retriever(emb, index="sparse", n_jobs=1).build(data.image_paths())
    assert ret.sparse
    plain = evaluate(ret, data, progress=False)
    with_d = evaluate(WithDistractors(ret, small_set / "other"), data, progress=False)
    assert with_d["config"]["distractors"]["n"] == 6
    assert with_d["metrics"]["mAP"] <= plain["metrics"]["mAP"] + 1e-12
