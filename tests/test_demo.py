"""The demo's result grid: captions, colours, shape."""

from __future__ import annotations

import json

import cv2

from cvretrieval.datasets import load_dataset
from cvretrieval.demo import CAPTION_H, save_grid


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
