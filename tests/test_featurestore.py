"""FeatureStore: streaming writes, memory-mapped reads, compact encodings, integrity checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvretrieval.errors import BundleError
from cvretrieval.features.local import LocalFeatures
from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter, strongest_indices


def feats(n: int, dim: int = 32, binary: bool = True, seed: int = 0, scale: float = 255.0):
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 600, (n, 2)).astype(np.float32)
    if binary:
        desc = rng.integers(0, 256, (n, dim), dtype=np.uint8)
    else:
        desc = (rng.integers(0, 256, (n, dim)) / 255.0 * scale).astype(np.float32)
    scales = rng.uniform(1, 30, n).astype(np.float32)
    return LocalFeatures(kp, desc, scales, np.zeros(n, np.float32), (480, 640))


def test_round_trip_binary_words_sorted(tmp_path):
    images = [feats(50, seed=1), None, feats(0), feats(7, seed=2)]
    rng = np.random.default_rng(3)
    words = [rng.integers(0, 1000, 50), None, np.zeros(0, int), rng.integers(0, 1000, 7)]
    with FeatureStoreWriter(tmp_path, words=True, keypoint_dtype="float32") as w:
        rows = [w.append(f, words=ws) for f, ws in zip(images, words, strict=True)]
    assert rows == [0, 1, 2, 3]
    store = FeatureStore.open(tmp_path)
    assert len(store) == 4 and store.n_keypoints == 57
    assert store.offsets.tolist() == [0, 50, 50, 50, 57]
    for i in (0, 3):
        kp, desc, ws = store.get(i)
        assert kp.dtype == np.float32 and desc.dtype == np.uint8 and ws.dtype == np.uint32
        assert np.all(np.diff(ws.astype(np.int64)) >= 0)  # rows sorted by word
        # the same (word, x, y, descriptor) rows, whatever the order
        got = sorted(zip(ws.tolist(), map(tuple, kp.tolist()), map(bytes, desc), strict=True))
        f = images[i]
        exp = sorted(
            zip(
                words[i].tolist(),
                map(tuple, f.keypoints.tolist()),
                map(bytes, f.descriptors),
                strict=True,
            )
        )
        assert got == exp
    for i in (1, 2):
        kp, desc, ws = store.get(i)
        assert kp.shape == (0, 2) and desc.shape == (0, 32) and ws.shape == (0,)
    assert isinstance(store.keypoints, np.memmap)  # mapped, not read
    assert store.get_keypoints(-1).shape == (7, 2)
    with pytest.raises(IndexError, match="out of range"):
        store.get(4)


def test_float_descriptors_quantised_to_uint8(tmp_path):
    sift_like = feats(20, dim=128, binary=False, scale=255.0, seed=4)  # integers 0..255
    with FeatureStoreWriter(tmp_path / "sift") as w:
        w.append(sift_like)
    store = FeatureStore.open(tmp_path / "sift")
    assert store.descriptors.dtype == np.uint8 and store.info["descriptors"]["scale"] == 1.0
    np.testing.assert_array_equal(store.get_descriptors(0), sift_like.descriptors)

    root_like = feats(20, dim=128, binary=False, scale=1.0, seed=5)  # values in [0, 1]
    with FeatureStoreWriter(tmp_path / "root") as w:
        w.append(root_like)
    store = FeatureStore.open(tmp_path / "root")
    assert store.info["descriptors"]["scale"] == 255.0
    err = np.abs(store.get_descriptors(0) - root_like.descriptors).max()
    assert err <= 0.5 / 255 + 1e-7  # rounding to the nearest of 256 levels

    with FeatureStoreWriter(tmp_path / "f16", descriptors="float16") as w:
        w.append(root_like)
    store = FeatureStore.open(tmp_path / "f16")
    assert store.descriptors.dtype == np.float16
    np.testing.assert_allclose(store.get_descriptors(0), root_like.descriptors, atol=1e-3)


def test_float16_keypoints_precision(tmp_path):
    f = feats(200, seed=6)  # coordinates in [0, 600)
    with FeatureStoreWriter(tmp_path, descriptors="none") as w:
        w.append(f)
    store = FeatureStore.open(tmp_path)
    assert store.keypoints.dtype == np.float16 and store.descriptors is None
    # float16 spacing is 0.5 px in [512, 1024): rounding moves a point by at most 0.25 px
    assert np.abs(store.get_keypoints(0) - f.keypoints).max() <= 0.25


def test_max_keypoints_keeps_the_strongest(tmp_path):
    f = feats(10, seed=7)
    strength = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4], float)
    with FeatureStoreWriter(tmp_path, max_keypoints=3, keypoint_dtype="float32") as w:
        w.append(f, strength=strength)  # the strongest are rows 2 (9), 6 (8), 4 (7)
        w.append(f)  # by scale when no strength is given
    store = FeatureStore.open(tmp_path)
    np.testing.assert_array_equal(store.get_keypoints(0), f.keypoints[[2, 4, 6]])
    by_scale = np.sort(np.argsort(-f.scales)[:3])
    np.testing.assert_array_equal(store.get_keypoints(1), f.keypoints[by_scale])
    assert strongest_indices(f, None).tolist() == list(range(10))


def test_sizes_are_reported(tmp_path):
    counts = [30, 0, 12]
    with FeatureStoreWriter(tmp_path, words=True) as w:  # float16 kp, uint8 ORB, uint32 words
        for i, n in enumerate(counts):
            w.append(feats(n, seed=i), words=np.arange(n))
    store = FeatureStore.open(tmp_path)
    per_kp = 2 * 2 + 32 + 4
    total = sum(counts) * per_kp + (len(counts) + 1) * 8
    stats = store.stats()
    assert stats["bytes"] == total == store.nbytes
    assert stats["bytes_per_image"] == pytest.approx(total / 3)
    assert stats["bytes_per_keypoint"] == pytest.approx(per_kp)


def test_append_mode_continues_a_store(tmp_path):
    a, b, c = feats(5, seed=1), feats(8, seed=2), feats(3, seed=3)
    with FeatureStoreWriter(tmp_path, words=True, keypoint_dtype="float32") as w:
        w.append(a, words=np.arange(5))
        w.append(b, words=np.arange(8))
    with FeatureStoreWriter(tmp_path, mode="a", meta={"note": "more"}) as w:
        assert len(w) == 2
        w.append(c, words=np.arange(3))
    store = FeatureStore.open(tmp_path)
    assert len(store) == 3 and store.offsets.tolist() == [0, 5, 13, 16]
    for i, f in enumerate((a, b, c)):
        np.testing.assert_array_equal(store.get_keypoints(i), f.keypoints)
        np.testing.assert_array_equal(store.get_descriptors(i), f.descriptors)
    assert store.meta == {"note": "more"}


def test_bad_appends_raise(tmp_path):
    with FeatureStoreWriter(tmp_path, words=True) as w:
        w.append(feats(4), words=np.arange(4))
        with pytest.raises(ValueError, match="one detector"):
            w.append(feats(4, dim=64), words=np.arange(4))
        with pytest.raises(ValueError, match="one detector"):
            w.append(feats(4, dim=32, binary=False), words=np.arange(4))
        with pytest.raises(ValueError, match="3 words for 4 key points"):
            w.append(feats(4), words=np.arange(3))
        with pytest.raises(ValueError, match="pass words"):
            w.append(feats(4))
    with pytest.raises(ValueError, match="closed"):
        w.append(feats(4), words=np.arange(4))
    with pytest.raises(ValueError, match="keypoint_dtype"):
        FeatureStoreWriter(tmp_path / "x", keypoint_dtype="int8")


def test_open_rejects_incomplete_or_inconsistent_stores(tmp_path):
    with pytest.raises(BundleError, match="featurestore.json"):
        FeatureStore.open(tmp_path)
    w = FeatureStoreWriter(tmp_path / "s")
    w.append(feats(6))
    with pytest.raises(BundleError, match="interrupted"):  # no JSON before close()
        FeatureStore.open(tmp_path / "s")
    w.close()
    FeatureStore.open(tmp_path / "s")
    meta = tmp_path / "s" / "featurestore.json"
    doc = json.loads(meta.read_text())
    doc["n_keypoints"] = 7
    meta.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="offsets"):
        FeatureStore.open(tmp_path / "s")
    doc["n_keypoints"], doc["format_version"] = 6, 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="format_version"):
        FeatureStore.open(tmp_path / "s")


def test_an_aborted_writer_leaves_no_valid_store(tmp_path):
    with pytest.raises(RuntimeError):
        with FeatureStoreWriter(tmp_path) as w:
            w.append(feats(3))
            raise RuntimeError("boom")
    with pytest.raises(BundleError):
        FeatureStore.open(tmp_path)


def test_a_store_without_key_points_opens(tmp_path):
    with FeatureStoreWriter(tmp_path, words=True) as w:
        w.append(None)
        w.append(None)
    store = FeatureStore.open(tmp_path)
    kp, desc, words = store.get(1)
    assert len(store) == 2 and kp.shape == (0, 2) and words.shape == (0,)
    assert desc.shape[0] == 0


def test_signed_descriptors_are_kept_as_float16_not_clipped(tmp_path):
    from cvretrieval.features.local import LocalFeatures
    from cvretrieval.featurestore import FeatureStore, FeatureStoreWriter

    rng = np.random.default_rng(0)
    desc = rng.standard_normal((5, 8)).astype(np.float32)  # like SuperPoint's
    f = LocalFeatures(rng.random((5, 2)).astype(np.float32) * 50, desc,
                      np.ones(5, np.float32), np.zeros(5, np.float32), (64, 64))
    with FeatureStoreWriter(tmp_path / "s") as w:
        w.append(f)
    got = FeatureStore.open(tmp_path / "s").get_descriptors(0)
    assert (got < 0).any()  # the sign survives (uint8 would have clipped it to 0)
    np.testing.assert_allclose(got.astype(np.float32), desc, atol=1e-2)
