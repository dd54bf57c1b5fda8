"""Near-duplicate groups (cvretrieval.dedup, ``cvret dedup``) on a generated collection.

The collection is written by the test: textured synthetic originals, their crops,
rotations and strong re-encodings (the copies), other originals with no copy, and one
file that is not an image. The truth is known by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli_run, textured_image

from cvretrieval import find_duplicates
from cvretrieval.attacks import attack_crop, attack_jpeg, attack_rotate
from cvretrieval.dedup import DuplicateResult, group_pairs, write_dedup_report

N_WITH_COPIES, N_ALONE = 3, 4


def _save(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, list[set[str]]]:
    """(folder, the true groups as sets of resolved paths)."""
    root = tmp_path_factory.mktemp("dedup_collection")
    (root / "sub").mkdir()
    groups = []
    for i in range(N_WITH_COPIES):
        img = textured_image(500 + i, size=(360, 480))
        rng = np.random.default_rng(i)
        members = {
            root / f"orig{i}.png": img,
            root / f"orig{i}_crop.jpg": attack_crop(img, rng, keep=(0.55, 0.7)),
            root / "sub" / f"orig{i}_rot.jpg": attack_rotate(img, rng, min_angle=10,
                                                             max_angle=25),
            root / f"orig{i}_q15.jpg": attack_jpeg(img, rng, quality=(15, 15)),
        }
        for path, pixels in members.items():
            _save(path, pixels)
        groups.append({str(p.resolve()) for p in members})
    for j in range(N_ALONE):
        _save(root / f"alone{j}.png", textured_image(700 + j, size=(360, 480)))
    (root / "broken.jpg").write_bytes(b"this is not a JPEG file")
    return root, groups


@pytest.fixture(scope="module")
def result(collection) -> DuplicateResult:
    root, _ = collection
    return find_duplicates(root, n_jobs=1, progress=False)


def test_recovers_copy_groups_and_merges_nothing_else(collection, result):
    _, truth = collection
    found = [set(g["paths"]) for g in result.groups]
    assert sorted(map(sorted, found)) == sorted(map(sorted, truth))
    assert result.config["verify"] is True  # local features: verified by default
    # pairs are within groups, and the groups are their connected components
    index = {p: gi for gi, g in enumerate(found) for p in g}
    assert result.pairs
    for a, b, score in result.pairs:
        assert index[a] == index[b] and a < b and np.isfinite(score)
    for g in result.groups:
        assert len(g["scores"]) == len(g["paths"]) and len(g["paths"]) == len(set(g["paths"]))


def test_bad_file_is_skipped_counted_and_reported(collection, result):
    root, _ = collection
    assert [Path(f["path"]).name for f in result.failed] == ["broken.jpg"]
    assert result.failed[0]["error"]
    assert result.config["skipped"] == 1
    assert result.config["images"] == 3 * N_WITH_COPIES + N_WITH_COPIES + N_ALONE + 1


def test_cli_json_schema_and_report(collection, tmp_path):
    root, truth = collection
    out_json, report = tmp_path / "dups.json", tmp_path / "report"
    res = cli_run("dedup", root, "--n-jobs", 1, "-k", 5, "--json", out_json,
                  "--report", report)
    assert "3 groups" in res.output and "unreadable" in res.output
    doc = json.loads(out_json.read_text())
    assert set(doc) == {"groups", "pairs", "failed", "config"}
    assert sorted(sorted(g["paths"]) for g in doc["groups"]) == sorted(map(sorted, truth))
    for g in doc["groups"]:
        assert set(g) == {"paths", "scores"}
        assert all(isinstance(s, float) for s in g["scores"])
    for pair in doc["pairs"]:
        assert len(pair) == 3 and isinstance(pair[0], str) and isinstance(pair[2], float)
    assert doc["config"]["k"] == 5 and doc["config"]["features"] == "bovw-sift"
    assert [Path(f["path"]).name for f in doc["failed"]] == ["broken.jpg"]
    page = (report / "index.html").read_text()
    n_images = sum(len(g) for g in truth)
    assert page.count("<figure>") == n_images
    assert len(list((report / "thumbs").glob("*.jpg"))) == n_images
    assert "broken.jpg" in page and "Group 3" in page


def test_global_features_without_verification(collection):
    # HOG sees strong re-encodings (same geometry) but not crops or rotations
    root, _ = collection
    res = find_duplicates(root, "hog", n_jobs=1, progress=False)
    assert res.config["verify"] is False
    expected = sorted(
        sorted(str((root / name).resolve()) for name in (f"orig{i}.png", f"orig{i}_q15.jpg"))
        for i in range(N_WITH_COPIES)
    )
    assert sorted(sorted(g["paths"]) for g in res.groups) == expected


def test_group_pairs_components():
    groups = group_pairs(7, [(5, 6, 0.4), (0, 1, 0.9), (3, 1, 0.5), (6, 5, 0.7)])
    assert groups == [([0, 1, 3], [0.9, 0.9, 0.5]), ([5, 6], [0.7, 0.7])]
    assert group_pairs(3, []) == []


def test_report_draws_unreadable_members(tmp_path):
    res = DuplicateResult(groups=[{"paths": [str(tmp_path / "gone.jpg"), str(tmp_path / "x.jpg")],
                                   "scores": [0.9, 0.9]}],
                          pairs=[(str(tmp_path / "gone.jpg"), str(tmp_path / "x.jpg"), 0.9)],
                          config={"images": 2})
    page = write_dedup_report(res, tmp_path / "r")
    assert page.read_text().count("<figure>") == 2
    assert len(list((tmp_path / "r" / "thumbs").glob("*.jpg"))) == 2


def test_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="k must"):
        find_duplicates(tmp_path, k=0)
    with pytest.raises(ValueError, match="no images"):
        find_duplicates(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_duplicates(tmp_path / "absent")
