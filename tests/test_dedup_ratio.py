"""The inlier-ratio check of ``cvret dedup``: two different pictures that share parts are
not duplicates, however many matches their shared parts give.

The test writes two collages on different backgrounds holding the same three patches at
positions no single homography relates (stickers rearranged), plus a rotated copy of the
first collage (a real duplicate) and an unrelated image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli_run, textured_image

from cvretrieval import find_duplicates
from cvretrieval.attacks import attack_rotate
from cvretrieval.dedup import DEFAULT_MIN_INLIER_RATIO
from cvretrieval.dedup_verify import PairVerifier, is_confirmed

PATCH = 110


def _collage(background_seed: int, places: list[tuple[int, int]]) -> np.ndarray:
    img = textured_image(background_seed, size=(360, 480))
    for seed, (y, x) in zip((950, 951, 952), places, strict=True):
        img[y : y + PATCH, x : x + PATCH] = textured_image(seed, size=(PATCH, PATCH))
    return img


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dedup_ratio")
    a = _collage(900, [(20, 20), (20, 330), (220, 180)])
    b = _collage(901, [(230, 340), (40, 150), (200, 10)])  # same patches, moved apart
    images = {
        "collage_a.png": a,
        "collage_a_rot.jpg": attack_rotate(a, np.random.default_rng(0), min_angle=10,
                                           max_angle=20),
        "collage_b.png": b,
        "other.png": textured_image(905, size=(360, 480)),
    }
    for name, rgb in images.items():
        cv2.imwrite(str(root / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def _groups(result) -> list[list[str]]:
    return sorted(sorted(Path(p).name for p in g["paths"]) for g in result.groups)


def test_shared_parts_give_many_inliers_but_a_low_ratio(folder):
    verifier = PairVerifier("sift", 1000, 640, min_inliers=12)
    inliers, matches = verifier.check(str(folder / "collage_a.png"),
                                      str(folder / "collage_b.png"))
    assert inliers >= 12  # the inlier count alone would confirm the pair ...
    assert inliers < 0.5 * matches  # ... but one plane explains a minority of the matches
    assert inliers < DEFAULT_MIN_INLIER_RATIO * matches
    inliers, matches = verifier.check(str(folder / "collage_a.png"),
                                      str(folder / "collage_a_rot.jpg"))
    assert inliers >= 12 and inliers >= DEFAULT_MIN_INLIER_RATIO * matches  # a copy passes


def test_default_ratio_keeps_copies_and_rejects_shared_parts(folder):
    # threshold 0 and k = 3: every pair is a candidate, verification alone decides
    kept = find_duplicates(folder, threshold=0.0, k=3, n_jobs=1, progress=False)
    assert kept.config["min_inlier_ratio"] == DEFAULT_MIN_INLIER_RATIO == 0.6
    assert _groups(kept) == [["collage_a.png", "collage_a_rot.jpg"]]
    merged = find_duplicates(folder, threshold=0.0, k=3, min_inlier_ratio=0.0, n_jobs=1,
                             progress=False)
    assert _groups(merged) == [["collage_a.png", "collage_a_rot.jpg", "collage_b.png"]]


def test_cli_passes_the_ratio(folder, tmp_path):
    out = tmp_path / "d.json"
    res = cli_run("dedup", folder, "--n-jobs", 1, "--threshold", 0, "-k", 3,
                  "--min-inlier-ratio", 0, "--json", out)
    assert "1 groups, 3 of 4 images" in res.output
    assert '"min_inlier_ratio": 0.0' in out.read_text()
    cli_run("dedup", folder, "--min-inlier-ratio", 1.5, ok=False)
    res = cli_run("dedup", folder, "--n-jobs", 1, "--threshold", 0, "-k", 3, "--json", out)
    assert "1 groups, 2 of 4 images" in res.output  # the default ratio leaves collage_b out
    assert '"min_inlier_ratio": 0.6' in out.read_text()


def test_is_confirmed_and_bad_ratio(tmp_path):
    assert is_confirmed(12, 24, 12, 0.5) and not is_confirmed(12, 25, 12, 0.5)
    assert not is_confirmed(11, 11, 12, 0.0)
    with pytest.raises(ValueError, match="min_inlier_ratio"):
        find_duplicates(tmp_path, min_inlier_ratio=1.5)
