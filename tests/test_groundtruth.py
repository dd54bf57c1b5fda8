"""Ground truth stored flat (issue 12.3), query/gallery folders (14.1), graded relevance (14.2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_run
from PIL import Image

from cvretrieval.datasets import (
    ArrayGroundTruth,
    ClassGroundTruth,
    RetrievalDataset,
    check_dataset,
    load_dataset,
    read_class_folders,
    read_gt_json,
    read_query_gallery,
    read_ukbench,
)
from cvretrieval.errors import DatasetError


def png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)
    return path


def write_rgb(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --------------------------------------------------------------------------- bounded memory
def test_class_ground_truth_memory_is_linear_in_the_images():
    n = 20_000  # one class: 4e8 same-class pairs as lists; here a few arrays of n int64
    gt = ClassGroundTruth(np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n))
    stored = sum(v.nbytes for v in vars(gt).values() if isinstance(v, np.ndarray))
    assert stored <= 6 * 8 * n
    assert len(gt) == n and gt.n_positives()[0] == n - 1
    p = gt.positives(7)
    assert p.dtype == np.int64 and len(p) == n - 1 and 7 not in p
    assert gt[7]["ok"][:3] == [0, 1, 2] and gt[7]["junk"] == []


def test_class_folders_store_labels_and_build_dicts_lazily(tmp_path):
    root = tmp_path / "classes"
    for rel in ("cat/1.png", "cat/2.png", "dog/a.png", "dog/b.png", "dog/c.png", "owl/x.png"):
        png(root / rel)
    ds = read_class_folders(root)
    assert isinstance(ds.gnd, ClassGroundTruth)
    assert ds.class_names == ["cat", "dog", "owl"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert ds.query_labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert ds.positives(3).tolist() == [2, 4] and ds.junk(3).tolist() == []
    assert ds.graded(3) is None
    assert ds.gnd[-1] == {"ok": [], "junk": []}  # owl has one image
    assert [g["ok"] for g in ds.gnd[1:3]] == [[0], [3, 4]]
    assert len(list(ds.gnd)) == 6
    with pytest.raises(IndexError):
        ds.gnd[6]
    with pytest.raises(TypeError):
        ds.gnd[0] = {"ok": []}  # a read-only view
    assert ds.summary()["queries_without_positives"] == 1


def test_ukbench_groups_are_labels(tmp_path):
    for n in (0, 1, 2, 3, 4, 6):
        png(tmp_path / "uk" / f"ukbench{n:05d}.jpg")
    ds = read_ukbench(tmp_path / "uk")
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert ds.positives(4).tolist() == [5] and ds.positives(0).tolist() == [1, 2, 3]


def test_explicit_lists_are_stored_flat_with_offsets():
    ds = RetrievalDataset(
        Path("."), ["a", "b", "c"], ["q", "r"], [{"ok": [2, 0], "junk": [1]}, {"ok": []}]
    )
    gt = ds.gnd
    assert isinstance(gt, ArrayGroundTruth)
    assert gt.ok_.tolist() == [2, 0] and gt.ok_lims_.tolist() == [0, 2, 2]
    assert gt.junk_lims_.tolist() == [0, 1, 1]
    assert ds.positives(0).tolist() == [2, 0]  # order as given
    assert ds.labels is None and ds.query_labels is None
    other = RetrievalDataset(
        Path("."), ["a", "b", "c"], ["q"], [{"ok": [1]}], protocols={"x": gt[:1]}
    )
    assert other.with_protocol("x").gnd[0] == {"ok": [2, 0], "junk": [1]}
    assert gt == [{"ok": [2, 0], "junk": [1]}, {"ok": [], "junk": []}] and gt != gt[:1]
    assert ds == RetrievalDataset(Path("."), ["a", "b", "c"], ["q", "r"], list(gt))


# --------------------------------------------------------------------------- query / gallery
def _query_gallery(root: Path, query_dir="query", gallery_dir="gallery") -> Path:
    png(root / query_dir / "cat" / "1.png", 1)
    png(root / query_dir / "dog" / "1.png", 2)
    png(root / query_dir / "emu" / "q.png", 3)  # no gallery image of its class
    png(root / gallery_dir / "cat" / "1.png", 4)  # same name as the query: still not "itself"
    png(root / gallery_dir / "cat" / "2.png", 5)
    png(root / gallery_dir / "dog" / "x.png", 6)
    png(root / gallery_dir / "fox" / "y.png", 7)
    return root


@pytest.mark.parametrize(("qdir", "gdir"), [("query", "gallery"), ("queries", "galleries")])
def test_query_gallery_layout(tmp_path, qdir, gdir):
    root = _query_gallery(tmp_path / "qg", qdir, gdir)
    ds = load_dataset(root)
    assert ds.format == "query-gallery"
    assert ds.qimlist == [f"{qdir}/cat/1.png", f"{qdir}/dog/1.png", f"{qdir}/emu/q.png"]
    assert ds.imlist == [f"{gdir}/cat/1.png", f"{gdir}/cat/2.png", f"{gdir}/dog/x.png",
                         f"{gdir}/fox/y.png"]
    assert [g["ok"] for g in ds.gnd] == [[0, 1], [2], []]
    assert ds.query_self_index() == [None, None, None]
    assert ds.class_names == ["cat", "dog", "emu", "fox"]
    assert ds.labels.tolist() == [0, 0, 1, 3] and ds.query_labels.tolist() == [0, 1, 2]
    assert [p["item"] for p in ds.problems] == [f"{qdir}/emu/q.png"]
    assert load_dataset(root, format="query-gallery").imlist == ds.imlist


def test_query_gallery_errors(tmp_path):
    (tmp_path / "a" / "query" / "c").mkdir(parents=True)
    (tmp_path / "a" / "gallery").mkdir()
    with pytest.raises(DatasetError, match="query"):
        read_query_gallery(tmp_path / "a")
    with pytest.raises(DatasetError, match="gallery"):
        read_query_gallery(tmp_path)


def test_query_gallery_from_the_command_line(tmp_path, make_textured):
    root = tmp_path / "qg"
    for c in range(3):
        base = make_textured(700 + c)
        write_rgb(root / "query" / f"class{c}" / "q.png", base)
        for j in range(2):
            write_rgb(root / "gallery" / f"class{c}" / f"{j}.png", np.roll(base, 5 * (j + 1), 1))
    res = cli_run("datasets", "check", root, "--json", "-")
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["format"] == "query-gallery" and report["ok"] is True
    assert report["images"] == 6 and report["queries"] == 3
    res = cli_run("eval", root, "--format", "query-gallery", "--features", "hog", "--json", "-")
    metrics = json.loads(res.stdout)["metrics"]
    assert metrics["n_queries"] == 3 and metrics["mAP"] > 0.9


# --------------------------------------------------------------------------- graded relevance
def _graded_set(tmp_path: Path, gnd) -> Path:
    root = tmp_path / "g"
    for name in ("a.jpg", "b.jpg", "c.jpg", "q.jpg"):
        png(root / name)
    doc = {"imlist": ["a.jpg", "b.jpg", "c.jpg"], "qimlist": ["q.jpg"] * len(gnd), "gnd": gnd}
    (root / "gt.json").write_text(json.dumps(doc))
    return root / "gt.json"


def test_graded_relevance(tmp_path):
    gt = _graded_set(
        tmp_path,
        [
            {"graded": [[2, 3], [0, 0], [1, 1.5]]},  # no "ok": relevant = grade > 0
            {"ok": [0], "graded": [[1, 2]]},  # an explicit "ok" wins
            {"ok": [2]},
        ],
    )
    ds = read_gt_json(gt)
    assert ds.gnd[0]["ok"] == [2, 1]
    assert ds.gnd[0]["graded"] == [[2, 3.0], [0, 0.0], [1, 1.5]]
    idx, grades = ds.graded(0)
    assert idx.dtype == np.int64 and grades.dtype == np.float64
    assert idx.tolist() == [2, 0, 1] and grades.tolist() == [3.0, 0.0, 1.5]
    assert ds.gnd[1]["ok"] == [0] and ds.graded(1)[0].tolist() == [1]
    assert ds.graded(2) is None and "graded" not in ds.gnd[2]
    assert check_dataset(ds, decode=False)["graded"] == 2
    ds.to_json(gt.parent / "again.json")
    back = read_gt_json(gt.parent / "again.json")
    assert [back.gnd[i] for i in range(3)] == [ds.gnd[i] for i in range(3)]


@pytest.mark.parametrize(
    ("graded", "match"),
    [
        ([[5, 1]], r"gnd\[0\]\['graded'\]\[0\] has index 5, out of range"),
        ([[0, -1]], r"grade -1; grades are finite numbers >= 0"),
        ([[0, float("nan")]], r"grade nan"),
        ([[0, float("inf")]], r"grade inf"),
        ([[0, True]], r"grade True"),
        ([[0, "high"]], r"grade 'high'"),
        ([[0, 1], [0, 2]], r"\['graded'\]\[1\] grades image 0 a second time"),
        ([[0, 1, 2]], r"must be a pair"),
        ([["0", 1]], r"has index '0'"),
        ({"0": 1}, r"must be a list of \[gallery_index, grade\] pairs"),
    ],
)
def test_graded_validation(tmp_path, graded, match):
    gt = _graded_set(tmp_path, [{"graded": graded}])
    with pytest.raises(DatasetError, match=match) as info:
        read_gt_json(gt)
    assert "gt.json" in str(info.value) and "\n" not in str(info.value)
