"""Tests of cvretrieval.copies and cvretrieval.attacks: attacks, presets, the set builder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import textured_image

from cvretrieval import attacks as copies_attacks
from cvretrieval.copies import (
    ATTACKS,
    apply_attack,
    attack_crop,
    attack_downscale,
    attack_jpeg,
    attack_perspective,
    attack_photometric,
    attack_rotate,
    make_copies,
)
from cvretrieval.errors import DatasetError
from cvretrieval.io import list_images, read_image

DEFAULT_ATTACKS = ["crop", "rotate", "perspective", "photometric", "jpeg"]  # make_copies's
ATTACK_NAMES = [*DEFAULT_ATTACKS, "downscale"]


def coords_image(h: int = 120, w: int = 160) -> np.ndarray:
    """Red channel = column, green channel = row: every pixel says where it came from."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([xx, yy, np.full_like(xx, 50)]).astype(np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- attacks


def test_attack_table_names():
    assert sorted(ATTACKS) == sorted(ATTACK_NAMES)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_returns_changed_rgb_uint8(name):
    img = textured_image(3)
    out = apply_attack(img, name, rng(1))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape != img.shape or np.abs(out.astype(int) - img).mean() > 1.0
    assert img.shape == (240, 320, 3)  # the input is not modified in place
    np.testing.assert_array_equal(img, textured_image(3))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_deterministic_per_seed(name):
    img = textured_image(4)
    a, b = apply_attack(img, name, rng(7)), apply_attack(img, name, rng(7))
    np.testing.assert_array_equal(a, b)
    others = [apply_attack(img, name, rng(s)) for s in range(8, 12)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o in others)


def test_apply_attack_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="blur") as info:
        apply_attack(textured_image(0), "blur", rng())
    for name in ATTACK_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)])
def test_attack_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match="RGB uint8"):
        attack_crop(bad, rng())


def test_crop_area_fraction_and_content():
    img = coords_image(120, 160)
    for seed in range(30):
        out = attack_crop(img, rng(seed), keep=(0.5, 0.8))
        fraction = out.shape[0] * out.shape[1] / (120 * 160)
        assert 0.5 - 0.02 <= fraction <= 0.8 + 0.02
        # the crop is an exact window of the original
        x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])
        np.testing.assert_array_equal(out, img[y0 : y0 + out.shape[0], x0 : x0 + out.shape[1]])
    out = attack_crop(img, rng(0), keep=(0.25, 0.25))
    assert out.shape == (60, 80, 3)  # each side scaled by sqrt(0.25)
    with pytest.raises(ValueError, match="keep"):
        attack_crop(img, rng(), keep=(0.9, 0.2))


def test_rotate_has_no_empty_corners_and_is_a_rotation():
    img = np.full((200, 300, 3), 180, np.uint8)
    cv2.circle(img, (150, 100), 30, (20, 200, 60), -1)
    for seed in range(5):
        out = attack_rotate(img, rng(seed))
        assert out.shape[0] <= 200 and out.shape[1] <= 300
        assert out.shape[0] >= 80 and out.shape[1] >= 120
        assert out.min() >= 15  # no black triangles from outside the image
        # the centred disc stays in the centre
        cy, cx = out.shape[0] // 2, out.shape[1] // 2
        np.testing.assert_allclose(out[cy, cx], (20, 200, 60), atol=3)
    # a horizontal line becomes a slanted one: its rows are no longer constant
    lines = np.full((200, 300, 3), 255, np.uint8)
    lines[95:105] = 0
    out = attack_rotate(lines, rng(0), max_angle=20)
    dark_rows = np.where((out[..., 0] < 128).any(axis=1))[0]
    assert dark_rows.max() - dark_rows.min() > 20


def test_perspective_maps_an_inner_quadrilateral_to_the_frame():
    h, w = 150, 200
    img = coords_image(h, w)  # red = x, green = y of the source pixel
    for seed in range(5):
        out = attack_perspective(img, rng(seed), strength=0.12)
        assert out.shape == img.shape
        # each output corner shows a source point moved inwards by 3 % to 12 % of the side
        lo_x, hi_x = 0.03 * (w - 1) - 1, 0.12 * (w - 1) + 1
        lo_y, hi_y = 0.03 * (h - 1) - 1, 0.12 * (h - 1) + 1
        for (y, x), (sx, sy) in zip(
            [(0, 0), (0, w - 1), (h - 1, w - 1), (h - 1, 0)],
            [(1, 1), (-1, 1), (-1, -1), (1, -1)],
            strict=True,
        ):
            src_x, src_y = int(out[y, x, 0]), int(out[y, x, 1])
            dx = src_x if sx > 0 else (w - 1) - src_x
            dy = src_y if sy > 0 else (h - 1) - src_y
            assert lo_x <= dx <= hi_x and lo_y <= dy <= hi_y, (seed, y, x, src_x, src_y)


def test_photometric_maps_equal_pixels_to_equal_pixels():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, 10:] = 128
    out = attack_photometric(img, rng(5))
    assert out.shape == img.shape
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 2  # a per-value lookup, no spatial change
    assert not np.array_equal(out[0, 15], img[0, 15])


def test_jpeg_error_is_between_quality_10_and_30():
    img = textured_image(9)

    def error_at(quality: int) -> float:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return float(np.abs(decoded.astype(int) - img).mean())

    for seed in range(4):
        out = attack_jpeg(img, rng(seed))
        assert out.shape == img.shape
        error = np.abs(out.astype(int) - img).mean()
        assert error_at(30) - 1e-9 <= error <= error_at(10) + 1e-9
    out = attack_jpeg(img, rng(0), quality=(50, 50))
    assert np.abs(out.astype(int) - img).mean() == pytest.approx(error_at(50))
    with pytest.raises(ValueError, match="quality"):
        attack_jpeg(img, rng(), quality=(50, 200))


def test_rotate_min_angle_bounds_the_angle():
    # the border-free crop of a rotation shrinks with the angle: a 10-30 degree rotation
    # keeps between the areas of the 30 and the 10 degree crops (2 % rounding slack)
    img = textured_image(5)
    area10 = np.prod(copies_attacks._inscribed_size(320, 240, np.deg2rad(10.0)))
    area30 = np.prod(copies_attacks._inscribed_size(320, 240, np.deg2rad(30.0)))
    for seed in range(6):
        out = attack_rotate(img, rng(seed), min_angle=10.0, max_angle=30.0)
        assert 0.98 * area30 <= out.shape[0] * out.shape[1] <= 1.02 * area10
    with pytest.raises(ValueError, match="min_angle"):
        attack_rotate(img, rng(), min_angle=40.0, max_angle=30.0)


def test_downscale_factor_range():
    img = textured_image(6)
    for seed in range(5):
        out = attack_downscale(img, rng(seed), factor=(0.45, 0.65))
        assert 0.45 * 240 - 1 <= out.shape[0] <= 0.65 * 240 + 1
        assert out.shape[1] / out.shape[0] == pytest.approx(320 / 240, rel=0.02)
    with pytest.raises(ValueError, match="factor"):
        attack_downscale(img, rng(), factor=(0.5, 1.5))


# --------------------------------------------------------------------------- make_copies


def write_photos(folder: Path, n: int, *, start: int = 100) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(textured_image(start + i), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    paths = write_photos(tmp_path / "photos", 10)
    bad = tmp_path / "photos" / "broken.jpg"
    bad.write_text("not a jpeg")
    return [*paths[:4], bad, *paths[4:]]


def all_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_make_copies_layout_and_ground_truth(tmp_path, photos, caplog):
    out = tmp_path / "bench"
    with caplog.at_level(logging.WARNING, logger="cvretrieval.copies"):
        gt_path = make_copies(photos, out, n_queries=3, copies_per_query=4, max_side=200, seed=1)
    assert gt_path == out / "gt.json"
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    gt = json.loads(gt_path.read_text())
    assert list(gt) == ["imlist", "qimlist", "gnd"]
    assert gt["qimlist"] == ["queries/q0000.jpg", "queries/q0001.jpg", "queries/q0002.jpg"]
    # 10 readable photos: 3 queries (4 copies each) + 7 distractors
    assert len(gt["imlist"]) == 12 + 7 == len(set(gt["imlist"]))
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "gallery").iterdir())
    assert sorted(gt["imlist"]) == on_disk
    assert sorted(p.name for p in (out / "queries").iterdir()) == [
        "q0000.jpg",
        "q0001.jpg",
        "q0002.jpg",
    ]
    assert len([r for r in gt["imlist"] if Path(r).name.startswith("d")]) == 7
    used_attacks = set()
    for i, g in enumerate(gt["gnd"]):
        assert g["junk"] == []
        names = [Path(gt["imlist"][j]).name for j in g["ok"]]
        expected = sorted(
            n for n in (Path(r).name for r in gt["imlist"]) if n.startswith(f"q{i:04d}_")
        )
        assert sorted(names) == expected and len(names) == 4
        for name in names:
            attack = name[: -len(".jpg")].split("_")[2]
            assert attack in DEFAULT_ATTACKS
            used_attacks.add(attack)
    assert used_attacks == set(DEFAULT_ATTACKS)  # the rotating start uses all five attacks
    # every file is a decodable JPEG with the long side <= max_side
    for rel in gt["imlist"] + gt["qimlist"]:
        assert max(read_image(out / rel, max_side=None).shape[:2]) <= 200
    manifest = json.loads((out / "copies.json").read_text())
    assert manifest["counts"]["skipped"] == 1
    assert manifest["skipped"][0]["photo"].endswith("broken.jpg")
    assert "skipped: 1" in (out / "README.txt").read_text()
    assert "seed: 1" in (out / "README.txt").read_text()


def test_queries_and_copies_come_from_the_right_photo(tmp_path, photos):
    out = tmp_path / "bench"
    make_copies(photos, out, n_queries=3, max_side=320, seed=0)
    manifest = json.loads((out / "copies.json").read_text())
    gt = json.loads((out / "gt.json").read_text())
    for i, rel in enumerate(gt["qimlist"]):
        source = Path(manifest["query_sources"][rel])
        original = textured_image(100 + int(source.stem.split("_")[1]))
        query = read_image(out / rel, max_side=None)
        assert np.abs(query.astype(int) - original).mean() < 4  # JPEG q90 of the same photo
        for j in gt["gnd"][i]["ok"]:
            copy = read_image(out / gt["imlist"][j], max_side=None)
            if gt["imlist"][j].endswith(("_jpeg.jpg", "_photometric.jpg", "_perspective.jpg")):
                assert copy.shape == query.shape


def test_make_copies_is_deterministic(tmp_path, photos):
    make_copies(photos, tmp_path / "a", n_queries=3, max_side=160, seed=5)
    make_copies(photos, tmp_path / "b", n_queries=3, max_side=160, seed=5)
    make_copies(photos, tmp_path / "c", n_queries=3, max_side=160, seed=6)
    a, b, c = (all_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a["gt.json"] != c["gt.json"] or a != c
    assert {k: v for k, v in a.items() if k.startswith("gallery/q")} != {
        k: v for k, v in c.items() if k.startswith("gallery/q")
    }


def test_make_copies_rerun_replaces_previous_files(tmp_path, photos):
    out = tmp_path / "bench"
    make_copies(photos, out, n_queries=4, max_side=120, seed=0)
    (out / "gallery" / "mine.txt").write_text("keep me")
    make_copies(photos, out, n_queries=2, n_distractors=3, copies_per_query=1, max_side=120, seed=0)
    gt = json.loads((out / "gt.json").read_text())
    jpgs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert jpgs == sorted(gt["imlist"] + gt["qimlist"])
    assert len(gt["imlist"]) == 2 + 3
    assert (out / "gallery" / "mine.txt").read_text() == "keep me"


def test_make_copies_accepts_name_array_pairs_and_distractor_crops(tmp_path):
    pairs = [(f"syn{i}", textured_image(200 + i)) for i in range(5)]
    gt_path = make_copies(
        pairs, tmp_path / "o", n_queries=2, copies_per_query=2, distractor_crops=2, seed=0
    )
    gt = json.loads(gt_path.read_text())
    names = sorted(Path(r).name for r in gt["imlist"])
    assert len(names) == 2 * 2 + 3 + 3 * 2
    crops = [n for n in names if n.endswith("_crop.jpg") and n.startswith("d")]
    assert len(crops) == 6
    manifest = json.loads((tmp_path / "o" / "copies.json").read_text())
    assert set(manifest["query_sources"].values()) | set(
        manifest["distractor_sources"].values()
    ) == {f"syn{i}" for i in range(5)}


def test_too_few_photos(tmp_path, photos):
    with pytest.raises(DatasetError, match=r"11 given, 13 needed"):
        make_copies(photos, tmp_path / "x", n_queries=5, n_distractors=8)
    assert not (tmp_path / "x").exists()  # nothing written
    # enough paths but one is unreadable: 10 readable < 11 needed
    with pytest.raises(DatasetError, match="1 unreadable"):
        make_copies(photos, tmp_path / "y", n_queries=5, n_distractors=6, max_side=64)
    assert list((tmp_path / "y").rglob("*.jpg")) == []


def test_bad_parameters(tmp_path, photos):
    with pytest.raises(ValueError, match="valid names"):
        make_copies(photos, tmp_path / "x", n_queries=2, attacks=("crop", "swirl"))
    with pytest.raises(ValueError, match="copies_per_query"):
        make_copies(photos, tmp_path / "x", n_queries=2, copies_per_query=0)


def luminance_dc_step(path: Path) -> int:
    """The first entry of a JPEG file's luminance quantisation table."""
    from PIL import Image

    with Image.open(path) as im:
        return int(im.quantization[0][0])


def test_harsh_strength_downscales_and_encodes_at_low_quality(tmp_path, photos):
    out = tmp_path / "harsh"
    make_copies(photos, out, n_queries=3, copies_per_query=5, max_side=240, seed=2,
                strength="harsh")
    manifest = json.loads((out / "copies.json").read_text())
    assert manifest["params"]["strength"] == "harsh"
    copies = sorted((out / "gallery").glob("q*_c*.jpg"))
    assert len(copies) == 15
    # libjpeg scales the base table's DC step 16 by 5000/q %: q 12..25 gives 32..67;
    # the queries and distractors stay at quality 90 (step 3)
    for path in copies:
        assert 32 <= luminance_dc_step(path) <= 67, path.name
    assert luminance_dc_step(out / "queries" / "q0000.jpg") == 3
    # size-preserving attacks show the 0.45-0.65 downscale exactly
    for path in (out / "gallery").glob("q*_c*_photometric.jpg"):
        query = read_image(out / "queries" / f"{path.name[:5]}.jpg", max_side=None)
        copy = read_image(path, max_side=None)
        ratio = copy.shape[0] / query.shape[0]
        assert 0.45 - 0.01 <= ratio <= 0.65 + 0.01, path.name
    # the default strength is untouched: copies at quality 90, full size
    make_copies(photos, tmp_path / "plain", n_queries=3, copies_per_query=5, max_side=240, seed=2)
    for path in (tmp_path / "plain" / "gallery").glob("q*_c*.jpg"):
        assert luminance_dc_step(path) == 3
    with pytest.raises(ValueError, match="strength"):
        make_copies(photos, tmp_path / "x", n_queries=2, strength="brutal")


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_make_copies_on_caltech(tmp_path, caltech_dir):
    paths = list_images(caltech_dir)
    assert len(paths) >= 30
    step = len(paths) // 30
    chosen = paths[::step][:30]
    gt_path = make_copies(chosen, tmp_path / "cal", n_queries=5, max_side=256, seed=0)
    gt = json.loads(gt_path.read_text())
    manifest = json.loads((tmp_path / "cal" / "copies.json").read_text())
    readable = 30 - manifest["counts"]["skipped"]
    assert len(gt["qimlist"]) == 5
    assert len(gt["imlist"]) == 5 * 4 + (readable - 5)
    for rel in gt["imlist"] + gt["qimlist"]:
        img = read_image(tmp_path / "cal" / rel, max_side=None)
        assert img.dtype == np.uint8 and img.shape[2] == 3 and max(img.shape[:2]) <= 256


def test_cli_make_copies_harsh(tmp_path):
    from conftest import cli_run

    write_photos(tmp_path / "photos", 4)
    out = tmp_path / "set"
    cli_run("datasets", "make-copies", tmp_path / "photos", out, "--queries", 2,
            "--copies", 2, "--strength", "harsh", "-q")
    assert json.loads((out / "copies.json").read_text())["params"]["strength"] == "harsh"
    for path in (out / "gallery").glob("q*_c*.jpg"):
        assert 32 <= luminance_dc_step(path) <= 67
    bad = cli_run("datasets", "make-copies", tmp_path / "photos", out, "--strength", "x", ok=False)
    assert bad.exit_code == 2 and "strength" in bad.output
