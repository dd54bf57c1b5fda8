"""Tests of cvretrieval.datasets on small layouts written here and on the shared real data."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvretrieval.datasets import (
    DATASET_FORMATS,
    RetrievalDataset,
    load_dataset,
    read_class_folders,
    read_gt_json,
    read_ukbench,
)
from cvretrieval.errors import DatasetError


def png(path: Path, value: int = 0) -> Path:
    """Write a tiny 4x4 PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def class_root(tmp_path):
    root = tmp_path / "classes"
    png(root / "cat" / "1.png")
    png(root / "cat" / "2.png")
    png(root / "cat" / "sub" / "3.png")  # found recursively
    png(root / "dog" / "only.png")  # a class with a single image
    (root / "empty").mkdir()
    png(root / ".hidden" / "x.png")  # hidden folder skipped
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------- class folders
def test_read_class_folders(class_root, caplog):
    png(class_root / "loose.png")
    with caplog.at_level(logging.WARNING, logger="cvretrieval.datasets"):
        ds = read_class_folders(class_root)
    assert ds.imlist == ["cat/1.png", "cat/2.png", "cat/sub/3.png", "dog/only.png"]
    assert ds.qimlist == ds.imlist
    assert ds.format == "class-folders" and ds.name == "classes"
    assert [g["ok"] for g in ds.gnd] == [[1, 2], [0, 2], [0, 1], []]
    assert all(g["junk"] == [] for g in ds.gnd)
    assert ds.query_self_index() == [0, 1, 2, 3]
    assert ds.summary() == {
        "images": 4,
        "queries": 4,
        "queries_without_positives": 1,
        "mean_positives": 1.5,
    }
    assert "loose.png" in caplog.text  # images directly in root are ignored, with a warning
    assert ds.image_paths()[2] == class_root / "cat" / "sub" / "3.png"
    assert ds.query_bboxes() == [None] * 4


def test_class_folders_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    png(tmp_path / "loose.png")
    with pytest.raises(DatasetError, match="class"):
        read_class_folders(tmp_path)


# --------------------------------------------------------------------------- json
def write_json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


GOOD = {
    "imlist": ["img/a.png", "img/b.png", "img/c.png"],
    "qimlist": ["q/q0.png", "img/b.png"],
    "gnd": [{"ok": [0, 2], "junk": [1], "bbx": [1, 2, 3, 4.5]}, {"ok": [2]}],
}


def test_read_gt_json(tmp_path):
    path = write_json(tmp_path / "set" / "gt.json", GOOD)
    ds = read_gt_json(path)
    assert ds.root == tmp_path / "set"
    assert ds.name == "set" and ds.format == "json"
    assert ds.gnd[0]["ok"] == [0, 2] and ds.gnd[0]["junk"] == [1]
    assert ds.gnd[1]["junk"] == []  # junk optional
    assert ds.query_bboxes() == [(1.0, 2.0, 3.0, 4.5), None]
    assert ds.query_self_index() == [None, 1]
    assert ds.query_paths()[0] == tmp_path / "set" / "q" / "q0.png"


def test_json_round_trip(tmp_path, class_root):
    ds = read_class_folders(class_root)
    gnd = list(ds.gnd)  # gnd is a read-only view: edit a copy of its dicts
    gnd[0]["bbx"] = [0, 0, 2, 2]
    ds = RetrievalDataset(ds.root, ds.imlist, ds.qimlist, gnd)
    out = tmp_path / "truth.json"  # a parent folder of the images
    ds.to_json(out)
    back = read_gt_json(out)
    assert back.name == "truth"
    assert [p.resolve() for p in back.image_paths()] == [p.resolve() for p in ds.image_paths()]
    assert [p.resolve() for p in back.query_paths()] == [p.resolve() for p in ds.query_paths()]
    assert [g["ok"] for g in back.gnd] == [g["ok"] for g in ds.gnd]
    assert back.query_bboxes()[0] == (0.0, 0.0, 2.0, 2.0)
    doc = json.loads(out.read_text())
    assert set(doc) == {"imlist", "qimlist", "gnd"}
    assert doc["imlist"][0] == "classes/cat/1.png"  # relative to the JSON's folder


def test_to_json_refuses_a_folder_that_does_not_hold_the_images(tmp_path, class_root):
    ds = read_class_folders(class_root)
    out = tmp_path / "elsewhere" / "truth.json"
    with pytest.raises(DatasetError, match="outside its folder"):
        ds.to_json(out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "top level"),
        ({"qimlist": [], "gnd": []}, "imlist"),
        ({"imlist": "a.png", "qimlist": ["a.png"], "gnd": [{"ok": []}]}, "'imlist' must be a list"),
        ({"imlist": ["a.png", 3], "qimlist": ["a.png"], "gnd": [{"ok": []}]}, r"imlist\[1\]"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": {"ok": []}}, "'gnd' must be a list"),
        ({"imlist": ["a.png"], "qimlist": ["a.png", "b.png"], "gnd": [{"ok": []}]}, "1 entries"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [1]}]}, r"gnd\[0\]\['ok'\].*1"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [-1]}]}, "out of range"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": ["0"]}]}, "integers"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [0.0]}]}, "integers"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [True]}]}, "integers"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": 0}]}, "list of image indices"),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"junk": [0]}]}, r"gnd\[0\].*'ok'"),
        (
            {"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [], "junk": [5]}]},
            r"gnd\[0\]\['junk'\]",
        ),
        (
            {"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [], "bbx": [1, 2, 3]}]},
            r"gnd\[0\]\['bbx'\]",
        ),
        (
            {"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [{"ok": [], "bbx": "1 2 3 4"}]},
            "bbx",
        ),
        ({"imlist": ["a.png"], "qimlist": ["a.png"], "gnd": [[0]]}, r"gnd\[0\] is a list"),
        ({"imlist": [], "qimlist": ["a.png"], "gnd": [{"ok": []}]}, "no gallery images"),
    ],
)
def test_malformed_json(tmp_path, doc, match):
    path = write_json(tmp_path / "gt.json", doc)
    with pytest.raises(DatasetError, match=match) as info:
        read_gt_json(path)
    assert "\n" not in str(info.value)  # one-line messages


def test_dataset_validation_names_the_query(tmp_path):
    with pytest.raises(DatasetError, match=r"gnd\[1\]\['ok'\] holds index 7"):
        RetrievalDataset(tmp_path, ["a", "b"], ["a", "b"], [{"ok": [1]}, {"ok": [7]}])
    ds = RetrievalDataset(tmp_path, ["a", "b"], ["a"], [{"ok": np.array([1, 1])}])
    assert ds.gnd[0]["ok"] == [1]  # numpy accepted, duplicates dropped


def test_read_gt_json_missing(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_gt_json(tmp_path / "nope.json")


# --------------------------------------------------------------------------- ukbench
def test_read_ukbench(tmp_path, caplog):
    root = tmp_path / "uk"
    for n in range(6):
        png(root / f"UKBENCH{n:05d}.PNG" if n == 5 else root / f"ukbench{n:05d}.png")
    png(root / "other.png")
    with caplog.at_level(logging.WARNING, logger="cvretrieval.datasets"):
        ds = read_ukbench(root)
    assert len(ds.imlist) == 6 and ds.imlist[5] == "UKBENCH00005.PNG"
    assert "other.png" in caplog.text
    # groups: 0..3 -> group 0, 4..5 -> group 1 (incomplete)
    assert [g["ok"] for g in ds.gnd] == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [5], [4]]
    assert ds.format == "ukbench"


# --------------------------------------------------------------------------- autodetection
def test_load_dataset_autodetects(tmp_path, class_root):
    assert load_dataset(class_root).format == "class-folders"
    uk = tmp_path / "uk"
    for n in range(4):
        png(uk / f"ukbench{n:05d}.jpg")
    assert load_dataset(uk).format == "ukbench"
    js = write_json(tmp_path / "j" / "gt.json", GOOD)
    assert load_dataset(js).format == "json"
    assert load_dataset(js.parent).format == "json"  # a folder holding gt.json
    other = write_json(tmp_path / "k" / "truth.JSON", GOOD)
    assert load_dataset(other).gnd[0]["ok"] == [0, 2]
    # forcing a format
    assert load_dataset(class_root, format="class-folders").format == "class-folders"
    assert load_dataset(js.parent, format="json").format == "json"


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="class-folders"):
        load_dataset(tmp_path, format="pkl")
    for fmt in DATASET_FORMATS:
        with pytest.raises(DatasetError):
            load_dataset(tmp_path / "missing", format=fmt)
    loose = tmp_path / "loose"
    png(loose / "a.png")
    png(loose / "b.png")
    with pytest.raises(DatasetError, match="supported layouts"):
        load_dataset(loose)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="supported layouts"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="supported layouts"):
        load_dataset(png(tmp_path / "x.png"))
    with pytest.raises(DatasetError, match="no ukbenchNNNNN"):
        load_dataset(loose, format="ukbench")
    with pytest.raises(DatasetError, match="class"):
        load_dataset(loose, format="class-folders")


# --------------------------------------------------------------------------- real data
def test_ukbench_real(ukbench_dir):
    ds = load_dataset(ukbench_dir)
    assert ds.format == "ukbench"
    assert len(ds.imlist) == 56 and ds.qimlist == ds.imlist
    groups = [int(Path(p).stem[-5:]) // 4 for p in ds.imlist]
    assert len(set(groups)) == 14
    for i, g in enumerate(ds.gnd):
        assert len(g["ok"]) == 3
        assert i not in g["ok"]
        assert {groups[j] for j in g["ok"]} == {groups[i]}


def test_caltech_real(caltech_dir):
    ds = load_dataset(caltech_dir)
    assert ds.format == "class-folders"
    assert len(ds.imlist) > 3000
    classes = [p.split("/", 1)[0] for p in ds.imlist]
    sizes = Counter(classes)
    assert len(sizes) == 51
    for i, g in enumerate(ds.gnd):
        assert len(g["ok"]) == sizes[classes[i]] - 1


# --------------------------------------------------------------------------- protocols
def test_protocols_round_trip_and_validation(tmp_path):
    easy = [{"ok": [0], "junk": [1]}, {"ok": [1], "junk": []}]
    hard = [{"ok": [1], "junk": [0], "bbx": [0, 0, 4, 4]}, {"ok": [], "junk": [1]}]
    ds = RetrievalDataset(
        tmp_path,
        ["a.png", "b.png"],
        ["q.png", "r.png"],
        easy,
        protocols={"easy": easy, "hard": hard},
        protocol="easy",
    )
    out = tmp_path / "gt.json"
    ds.to_json(out)
    back = load_dataset(out, protocol="hard")
    assert back.protocol == "hard" and set(back.protocols) == {"easy", "hard"}
    assert [g["ok"] for g in back.gnd] == [[1], []]
    assert back.query_bboxes()[0] == (0.0, 0.0, 4.0, 4.0)
    assert load_dataset(out).protocol == "easy"  # the file's choice by default
    with pytest.raises(DatasetError, match=r"protocols\['hard'\]\[0\]\['ok'\] holds index 5"):
        RetrievalDataset(tmp_path, ["a"], ["q"], [{"ok": [0]}], protocols={"hard": [{"ok": [5]}]})
    with pytest.raises(DatasetError, match="not one of the data set's protocols"):
        RetrievalDataset(tmp_path, ["a"], ["q"], [{"ok": [0]}], protocol="medium")
    with pytest.raises(DatasetError, match="no protocol 'hard'"):
        load_dataset(write_json(tmp_path / "p" / "gt.json", GOOD), protocol="hard")
