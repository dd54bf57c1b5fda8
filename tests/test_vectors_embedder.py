"""The vectors:FILE.npz embedder: rows by position or by path, and `cvret eval` through it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli_run

from cvretrieval.datasets import RetrievalDataset
from cvretrieval.embedders import available_embedders, make_embedder, parse_spec
from cvretrieval.embedders.vectors import VectorsEmbedder
from cvretrieval.errors import DatasetError
from cvretrieval.evaluation import evaluate_embedder, evaluate_vectors


def _dataset(tmp_path):
    names = ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    gnd = [{"ok": [1]}, {"ok": [0]}, {"ok": [3]}, {"ok": [2]}]
    return RetrievalDataset(tmp_path, names, list(names), gnd, format="json")


def _vectors():
    g = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    return g, g.copy()


def test_spec_and_registry(tmp_path):
    assert parse_spec("vectors:x.npz") == ("vectors", {"path": "x.npz"})
    assert available_embedders()["vectors"].startswith("ok")
    with pytest.raises(DatasetError, match="does not exist"):
        make_embedder(f"vectors:{tmp_path / 'missing.npz'}")


def test_rows_by_position_equal_evaluate_vectors(tmp_path):
    ds = _dataset(tmp_path)
    g, q = _vectors()
    np.savez(tmp_path / "v.npz", gallery=g, queries=q)
    emb = make_embedder(f"vectors:{tmp_path / 'v.npz'}")
    assert isinstance(emb, VectorsEmbedder) and emb.takes_paths
    r = evaluate_embedder(emb, ds)
    ref = evaluate_vectors(g, q, ds)
    assert r["metrics"] == ref["metrics"] and r["metrics"]["mAP"] == 1.0
    assert emb.dim == 2
    assert r["config"]["embedder"]["name"] == "vectors"
    with pytest.raises(TypeError, match="not images"):
        emb.extract(np.zeros((4, 4, 3), np.uint8))


def test_rows_by_path_in_any_order(tmp_path):
    ds = _dataset(tmp_path)
    g, q = _vectors()
    perm = np.array([3, 0, 2, 1])
    # rows shuffled, one extra image, query paths absolute
    names = np.array(ds.imlist)[perm].tolist() + ["c/extra.png"]
    gallery = np.vstack([g[perm], [[5, 5]]]).astype(np.float32)
    qpaths = [str(tmp_path / p) for p in ds.qimlist]
    np.savez(tmp_path / "v.npz", gallery=gallery, queries=q, gallery_paths=names,
             query_paths=qpaths, metric="ip")
    r = evaluate_embedder(make_embedder(f"vectors:{tmp_path / 'v.npz'}"), ds)
    assert r["metrics"]["mAP"] == 1.0  # by position the shuffled rows score less
    by_position = evaluate_vectors(g[perm], q, ds)["metrics"]["mAP"]
    assert by_position < 1.0
    np.savez(tmp_path / "w.npz", gallery=gallery, queries=q, gallery_paths=names[:3] + ["zz", "yy"])
    with pytest.raises(DatasetError, match="no row for"):
        evaluate_embedder(VectorsEmbedder(tmp_path / "w.npz"), ds)


def test_cli_features_vectors_and_alias_agree(tmp_path):
    ds_root = tmp_path / "ds"
    ds_root.mkdir()
    gt = {"imlist": ["a/0.png", "a/1.png", "b/0.png", "b/1.png"],
          "qimlist": ["a/0.png", "b/0.png"],
          "gnd": [{"ok": [1], "graded": [[1, 2], [3, 1]]}, {"ok": [3]}]}
    (ds_root / "gt.json").write_text(json.dumps(gt))
    for p in gt["imlist"]:
        (ds_root / p).parent.mkdir(parents=True, exist_ok=True)
        (ds_root / p).write_bytes(b"")
    g, _ = _vectors()
    np.savez(tmp_path / "v.npz", gallery=g, queries=g[[0, 2]])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli_run("eval", ds_root / "gt.json", "--features", f"vectors:{tmp_path / 'v.npz'}",
            "--json", a, "-q")
    cli_run("eval", ds_root / "gt.json", "--vectors", tmp_path / "v.npz", "--json", b, "-q",
            "--ndcg-gain", "exponential")
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["metrics"]["mAP"] == rb["metrics"]["mAP"] == 1.0
    assert "NDCG@10" in ra["metrics"] and "NDCG@10" in rb["metrics"]
    res = cli_run("eval", ds_root / "gt.json", "--vectors", tmp_path / "v.npz")
    assert "NDCG@5" in res.output


def test_bench_scores_vectors_without_building(tmp_path):
    from cvretrieval.bench import run_bench

    ds = _dataset(tmp_path)  # its image files do not exist: nothing may read them
    g, q = _vectors()
    q = q[[1, 0, 3, 2]]  # query vectors in another order than the gallery
    np.savez(tmp_path / "v.npz", gallery=g, queries=q)
    result = run_bench(ds, [f"vectors:{tmp_path / 'v.npz'}"], progress=False)
    row = result["rows"][0]
    assert row["mAP"] == pytest.approx(evaluate_vectors(g, q, ds)["metrics"]["mAP"])
    assert row["index_s"] == 0.0 and row["skipped"] == 0
