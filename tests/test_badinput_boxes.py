"""Bad-input corpus, boxes and tiny images: crops of the right size or a one-line ValueError.

Also the detectors' smallest sizes: an image below a detector's minimum side gives a
message naming the detector and its minimum (OpenCV used to assert in ``resize``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _badinput import assert_one_line_error, deadline, pattern

from cvretrieval.features.local import MIN_SIDE, LocalFeatureExtractor
from cvretrieval.io import read_image

IMG = pattern(40, 60)  # h=40, w=60

# (id, box, expected (h, w) of the crop, or the phrase of the ValueError)
BOX_CASES = [
    ("whole", (0, 0, 60, 40), (40, 60)),
    ("inside", (10, 5, 30, 25), (20, 20)),
    ("one-pixel", (10, 10, 11, 11), (1, 1)),
    ("fractional-widened", (10.2, 5.7, 19.1, 6.2), (2, 10)),
    ("sub-pixel", (10.2, 10.2, 10.4, 10.4), (1, 1)),
    ("negative-start-clipped", (-10, -5, 20, 10), (10, 20)),
    ("past-the-end-clipped", (50, 30, 100, 90), (10, 10)),
    ("huge-clipped", (-1e9, -1e9, 1e9, 1e9), (40, 60)),
    ("numpy-values", tuple(np.float32(v) for v in (0, 0, 5, 5)), (5, 5)),
    ("integer-list", [1, 2, 3, 4], (2, 2)),
    ("numpy-array", np.array([0, 0, 7, 3]), (3, 7)),
    ("inverted-x", (30, 5, 10, 25), "empty"),
    ("inverted-y", (10, 25, 30, 5), "empty"),
    ("zero-width", (10, 5, 10, 25), "empty"),
    ("zero-height", (10, 5, 30, 5), "empty"),
    ("left-of-image", (-50, 0, -10, 10), "empty"),
    ("above-image", (0, -50, 10, -10), "empty"),
    ("right-of-image", (70, 0, 90, 10), "empty"),
    ("below-image", (0, 50, 10, 60), "empty"),
    ("nan", (math.nan, 0, 10, 10), "non-finite"),
    ("inf", (0, 0, math.inf, 10), "non-finite"),
    ("minus-inf", (-math.inf, 0, 10, 10), "non-finite"),
    ("three-values", (0, 0, 10), "four numbers"),
    ("five-values", (0, 0, 10, 10, 10), "four numbers"),
    ("strings", ("a", "b", "c", "d"), "four numbers"),
    ("a-string", "1234", "four numbers"),
    ("none-inside", (0, None, 10, 10), "four numbers"),
    ("none-box-in-list", [None], "four numbers"),
    ("complex", (0, 0, 1j, 10), "four numbers"),
    ("huge-int", (0, 0, 10**400, 10), "four numbers"),
    ("big-array", np.zeros((50, 50)), "four numbers"),
]


@pytest.mark.parametrize("source", ["array", "file"])
@pytest.mark.parametrize("box, expected", [c[1:] for c in BOX_CASES],
                         ids=[c[0] for c in BOX_CASES])
def test_box_case(tmp_path, source, box, expected):
    if source == "file":
        from PIL import Image

        src = tmp_path / "q.png"
        Image.fromarray(IMG).save(src)
        name = str(src)
    else:
        src, name = IMG, "<array>"
    with deadline(10):
        if isinstance(expected, tuple):
            out = read_image(src, max_side=None, bbox=box)
            assert out.shape == (*expected, 3)
            return
        with pytest.raises(ValueError) as info:
            read_image(src, max_side=None, bbox=box)
    assert_one_line_error(str(info.value), names=name, reason=expected)
    assert len(str(info.value)) < 400  # a huge box is not printed whole


def test_one_pixel_box_content_is_that_pixel():
    out = read_image(IMG, max_side=None, bbox=(12, 7, 13, 8))
    np.testing.assert_array_equal(out[0, 0], IMG[7, 12])


# --------------------------------------------------------------------------- detectors


DETECTOR_SIZES = [
    (det, side, kind)
    for det, minimum in MIN_SIDE.items()
    for side, kind in ((minimum - 1, "too small"), (minimum, "runs"), (minimum + 1, "runs"))
    if side >= 1
]


@pytest.mark.parametrize("long_side", [None, 200])
@pytest.mark.parametrize("detector, side, outcome", DETECTOR_SIZES,
                         ids=[f"{d}-{s}" for d, s, _ in DETECTOR_SIZES])
def test_detector_minimum_side(detector, side, outcome, long_side):
    shape = (side, long_side or side)
    image = np.random.default_rng(side).integers(0, 256, shape, dtype=np.uint8)
    extractor = LocalFeatureExtractor(detector, n_features=100)
    with deadline(10):
        if outcome == "runs":
            feats = extractor.extract(image)
            assert feats.descriptors.shape[1] == extractor.dim
            return
        with pytest.raises(ValueError) as info:
            extractor.extract(image)
    message = str(info.value)
    assert_one_line_error(message, names=None, reason="too small")
    assert detector.upper() in message and f"at least {MIN_SIDE[detector]} pixels" in message
    assert "OpenCV" not in message and "resize" not in message


def test_every_detector_has_a_minimum():
    from cvretrieval.features.local import DETECTORS

    assert set(MIN_SIDE) == set(DETECTORS)
