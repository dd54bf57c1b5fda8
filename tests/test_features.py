"""Local features and HOG: shapes, empty inputs, and known answers."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from cvretrieval.features.hog import hog, hog_dim
from cvretrieval.features.local import (
    DETECTORS,
    LocalFeatureExtractor,
    extract_local_features,
    rootsift,
)


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_detectors_shapes_and_dtypes(detector, make_textured):
    img = make_textured(1)
    f = extract_local_features(img, detector, n_features=300)
    dim, binary = DETECTORS[detector]
    assert 10 < len(f) <= 300, f"{detector} found {len(f)} key points"
    assert f.keypoints.shape == (len(f), 2) and f.keypoints.dtype == np.float32
    assert f.descriptors.shape == (len(f), dim)
    assert f.descriptors.dtype == (np.uint8 if binary else np.float32)
    h, w = img.shape[:2]
    assert f.image_shape == (h, w)
    assert (f.keypoints[:, 0] >= -1).all() and (f.keypoints[:, 0] <= w + 1).all()
    assert (f.keypoints[:, 1] >= -1).all() and (f.keypoints[:, 1] <= h + 1).all()


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_flat_image_gives_empty_features_not_none(detector):
    f = extract_local_features(np.full((80, 90), 128, np.uint8), detector)
    dim, binary = DETECTORS[detector]
    assert len(f) == 0
    assert f.descriptors.shape == (0, dim)
    assert f.keypoints.shape == (0, 2)


@pytest.mark.parametrize("detector", ["akaze", "brisk", "orb", "sift"])
def test_n_features_caps_every_detector(detector, make_textured):
    img = cv2.resize(make_textured(2), (640, 480))
    assert len(extract_local_features(img, detector, n_features=25)) <= 25


def test_rootsift_is_sqrt_of_l1_normalised_sift(make_textured):
    img = make_textured(3)
    sift = extract_local_features(img, "sift")
    root = extract_local_features(img, "rootsift")
    assert len(sift) == len(root) > 0
    expected = np.sqrt(sift.descriptors / sift.descriptors.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(root.descriptors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(root.descriptors, axis=1), 1.0, atol=1e-5)


def test_rootsift_zero_row_stays_zero():
    out = rootsift(np.zeros((2, 128), np.float32))
    assert np.array_equal(out, np.zeros((2, 128), np.float32))


def test_extractor_pickles_for_worker_processes(make_textured):
    ex = LocalFeatureExtractor("orb", 100)
    ex(make_textured(4))  # builds the OpenCV object, which does not pickle
    clone = pickle.loads(pickle.dumps(ex))
    a, b = ex(make_textured(4)), clone(make_textured(4))
    assert np.array_equal(a.descriptors, b.descriptors)


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="unknown detector 'surf'.*sift"):
        LocalFeatureExtractor("surf")
    with pytest.raises(TypeError, match="uint8"):
        extract_local_features(np.zeros((10, 10), np.float64))
    with pytest.raises(ValueError, match="positive"):
        LocalFeatureExtractor("orb", 0)


def test_hog_dimension_formula():
    # 128/8 = 16 cells per side, 15 block positions per side, 2x2 cells x 9 bins per block
    assert hog_dim() == 15 * 15 * 2 * 2 * 9
    assert hog(np.zeros((50, 70, 3), np.uint8)).shape == (hog_dim(),)
    assert hog(np.zeros((64, 64), np.uint8), size=64).shape == (7 * 7 * 36,)


def test_hog_vertical_stripes_fill_the_horizontal_gradient_bin():
    # vertical stripes: gradients point along x (angle 0), so orientation bin 0 dominates
    img = np.zeros((128, 128), np.uint8)
    img[:, ::16] = 255
    img = cv2.GaussianBlur(img, (5, 5), 1.5)
    v = hog(img).reshape(-1, 9)
    per_bin = v.sum(axis=0)
    assert per_bin.argmax() == 0, per_bin


def test_hog_is_scale_invariant_through_the_fixed_window(make_textured):
    img = make_textured(5)
    small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    other = make_textured(6)
    a, b, c = hog(img), hog(small), hog(other)

    def cos(x, y):
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert cos(a, b) > 0.9
    assert cos(a, b) > cos(a, c) + 0.1
