"""cvret bench, eval --vectors/--report and the datasets commands, through CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli_run

from cvretrieval.datasets import load_dataset


@pytest.fixture
def copies(tmp_path, make_textured):
    """A copy-detection set made by the CLI from 8 synthetic photos (3 queries, 4 copies)."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        cv2.imwrite(str(photos / f"p{i}.png"), make_textured(300 + i))
    out = tmp_path / "copies"
    res = cli_run("datasets", "make-copies", photos, out, "--queries", 3, "--distractors", 5,
                  "--seed", 1, "--json", "-")
    info = json.loads(res.stdout)
    assert info["gt"] == str(out / "gt.json")
    return out / "gt.json"


def test_make_copies_writes_a_readable_benchmark(copies):
    data = load_dataset(copies)
    assert len(data.qimlist) == 3
    assert len(data.imlist) == 3 * 4 + 5
    assert all(len(g["ok"]) == 4 for g in data.gnd)


def test_make_copies_is_reproducible(tmp_path, copies):
    again = tmp_path / "again"
    cli_run("datasets", "make-copies", tmp_path / "photos", again, "--queries", 3,
            "--distractors", 5, "--seed", 1, "-q")
    assert (again / "gt.json").read_text() == copies.read_text()


def test_bench_compares_configurations_and_shares_features(tmp_path, copies):
    cache = tmp_path / "cache"
    res = cli_run("bench", copies, "--features", "hog,bovw-orb", "--n-jobs", 1, "--cache", cache,
                  "--json", tmp_path / "bench.json")
    assert "| hog" in res.output and "| bovw-orb" in res.output
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["features"] for r in result["rows"]] == ["hog", "bovw-orb"]
    for row in result["rows"]:
        assert 0.0 <= row["mAP"] <= 1.0 and row["query_ms"] > 0
    # attacked copies of textured photos are easy for ORB words: every query finds a copy first
    assert result["rows"][1]["P@1"] == 1.0
    # ORB features were cached (hog has nothing to cache)
    assert len(list(cache.rglob("*.npz"))) == 3 * 4 + 5


def test_bench_rejects_an_unknown_embedder(copies):
    res = cli_run("bench", copies, "--features", "nope", ok=False)
    assert res.exit_code == 1 and "unknown embedder" in res.output


def test_eval_scores_precomputed_vectors(tmp_path, copies):
    data = load_dataset(copies)
    rng = np.random.default_rng(0)
    n, m = len(data.imlist), len(data.qimlist)
    queries = rng.normal(size=(m, 16)).astype(np.float32)
    gallery = rng.normal(size=(n, 16)).astype(np.float32)
    # query 0's copies are near it: they must rank first; the others get random vectors
    for j in data.gnd[0]["ok"]:
        gallery[j] = queries[0] + 0.01 * rng.normal(size=16)
    np.savez(tmp_path / "v.npz", gallery=gallery, queries=queries, metric="l2")
    cli_run("eval", copies, "--vectors", tmp_path / "v.npz", "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) >= {"config", "metrics", "per_query"}
    assert report["per_query"][0]["ap"] == pytest.approx(1.0)
    # wrong shapes: one line, exit 1
    np.savez(tmp_path / "bad.npz", gallery=gallery[:-1], queries=queries)
    res = cli_run("eval", copies, "--vectors", tmp_path / "bad.npz", ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_eval_writes_a_report(tmp_path, copies):
    pytest.importorskip("matplotlib", reason="the report needs the 'report' extra")
    pytest.importorskip("jinja2", reason="the report needs the 'report' extra")
    cli_run("eval", copies, "--features", "hog", "--n-jobs", 1, "--report", tmp_path / "rep", "-q")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "mAP" in page and page.count("<img") >= 3


def test_datasets_list_and_check(tmp_path, copies):
    res = cli_run("datasets", "list", "--json", "-")
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"roxford5k", "rparis6k", "holidays", "ukbench", "caltech101"} <= names
    res = cli_run("datasets", "check", copies, "--json", "-")
    report = json.loads(res.stdout)
    assert report["format"] == "json"


def test_serve_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    pytest.importorskip("streamlit", reason="cvret serve needs the 'web' extra")
    (tmp_path / "nb").mkdir()
    res = cli_run("serve", tmp_path / "nb", ok=False)
    assert res.exit_code == 1 and "manifest.json" in res.output and "Traceback" not in res.output


def test_index_search_with_whitening_and_query_expansion(tmp_path, copies):
    data = load_dataset(copies)
    bundle = tmp_path / "b"
    cli_run("index", copies.parent / "gallery", "-o", bundle, "--features", "hog", "--n-jobs", 1,
            "--pca-whiten", 8, "--rerank", "qe", "--qe-k", 2, "-q")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["options"]["pca_whiten"] == 8 and manifest["options"]["rerank"] == ["qe"]
    res = cli_run("search", bundle, data.query_paths()[0], "-k", 3, "--json", "-")
    with_qe = json.loads(res.stdout)
    res = cli_run("search", bundle, data.query_paths()[0], "-k", 3, "--rerank", "none",
                  "--json", "-")
    without = json.loads(res.stdout)
    assert len(with_qe) == len(without) == 3
    res = cli_run("search", bundle, data.query_paths()[0], "--rerank", "sv", ok=False)
    assert res.exit_code == 1 and "--rerank sv" in res.output


def test_train_siamese_then_index_with_it(tmp_path, make_textured):
    pytest.importorskip("torch", reason="cvret train siamese needs the 'siamese' extra")
    pytest.importorskip("onnxruntime", reason="the trained head runs with the 'deep' extra")
    import cv2

    root = tmp_path / "classes"
    for c in range(6):
        for i in range(4):
            img = make_textured(900 + c)
            img = np.roll(img, 7 * i, axis=1)
            (root / f"c{c}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"c{c}" / f"{i}.png"), img)
    model = tmp_path / "model"
    res = cli_run("train", "siamese", root, "--base", "hog", "--epochs", 2, "--batch-p", 3,
                  "--batch-k", 2, "--val-split", 0.34, "--n-jobs", 1, "-o", model, "-q",
                  "--json", tmp_path / "train.json")
    info = json.loads((tmp_path / "train.json").read_text())
    assert (model / "siamese.json").is_file() and info["val_mAP"] >= info["base_val_mAP"] - 1e-9
    cli_run("index", root, "--features", f"siamese:{model}", "--n-jobs", 1, "-o",
            tmp_path / "b", "-q")
    res = cli_run("search", tmp_path / "b", root / "c2" / "0.png", "-k", 1, "--json", "-")
    assert json.loads(res.stdout)[0]["path"].endswith("0.png")
