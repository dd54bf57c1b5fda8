"""The demo: its offline photo set (moved here from copies.py) and its result grid."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvretrieval import demo
from cvretrieval.datasets import load_dataset
from cvretrieval.demo import CAPTION_H, build_demo_dataset, demo_photos, save_grid


def test_grid_has_title_captions_and_colours(tmp_path, make_textured):
    for name, seed in [("a", 1), ("b", 2), ("q", 3)]:
        cv2.imwrite(str(tmp_path / f"{name}.png"), make_textured(seed))
    (tmp_path / "gt.json").write_text(
        json.dumps({"imlist": ["a.png", "b.png"], "qimlist": ["q.png"], "gnd": [{"ok": [1]}]})
    )
    data = load_dataset(tmp_path / "gt.json")
    report = {"per_query": [{"query": 0, "top": [1, 0]}]}
    size = 64
    out = save_grid(data, report, tmp_path / "grid.png", top=3, size=size, title="hog")
    grid = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    # banner + one row of (thumbnail + caption); query + 3 result columns
    assert grid.shape == (CAPTION_H + size + CAPTION_H, 4 * size, 3)
    row = grid[CAPTION_H:]
    # rank 1 is relevant (green border), rank 2 is not (red border), rank 3 is empty (white)
    assert tuple(row[2, size + size // 2]) == (0, 170, 0)
    assert tuple(row[2, 2 * size + size // 2]) == (220, 0, 0)
    assert (row[:size, 3 * size :] == 255).all()
    # captions and banner hold dark text pixels
    assert (grid[:CAPTION_H] < 100).any()
    assert (row[size:, size : 2 * size] < 100).any()


# --------------------------------------------------------------------------- demo


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_demo_photos_offline(no_network):
    photos = demo_photos()
    names = [n for n, _ in photos]
    assert len(photos) >= 8
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {"astronaut", "coffee", "china", "flower"} <= set(names)
    for name, img in photos:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 150, name
        assert img.std() > 10, name  # a real picture, not a flat fill
    # the same photographs as scikit-image's and scikit-learn's own loaders
    from skimage import data
    from sklearn.datasets import load_sample_image

    by_name = dict(photos)
    np.testing.assert_array_equal(by_name["astronaut"], data.astronaut())
    np.testing.assert_array_equal(by_name["camera"][..., 1], data.camera())
    np.testing.assert_array_equal(by_name["china"], load_sample_image("china.jpg"))


def test_demo_photos_skips_missing_files(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr(
        demo, "SKIMAGE_PHOTOS", {"astronaut": "astronaut.png", "ghost": "ghost.png"}
    )
    names = [n for n, _ in demo_photos()]
    assert names == ["astronaut", "china", "flower"]


def test_build_demo_dataset_and_cache(tmp_path, no_network):
    out = tmp_path / "demo"
    gt_path = build_demo_dataset(out, n_queries=3, seed=0)
    gt = json.loads(gt_path.read_text())
    manifest = json.loads((out / "copies.json").read_text())
    n_photos = len(demo_photos())
    assert len(gt["qimlist"]) == 3 and all(len(g["ok"]) == 4 for g in gt["gnd"])
    n_distractors = n_photos - 3
    assert len(gt["imlist"]) == 3 * 4 + n_distractors * (1 + 3)
    query_names = set(manifest["query_sources"].values())
    distractor_names = set(manifest["distractor_sources"].values())
    assert not query_names & distractor_names
    # extra crops only of distractor photos: every d-file belongs to a listed distractor
    for rel in gt["imlist"]:
        name = Path(rel).name
        if name.startswith("d"):
            assert f"gallery/{name[:6]}.jpg" in manifest["distractor_sources"]
    # cache: the same call rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert build_demo_dataset(out, n_queries=3, seed=0) == gt_path
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # other parameters rebuild
    build_demo_dataset(out, n_queries=4, seed=0)
    assert len(json.loads(gt_path.read_text())["qimlist"]) == 4
