"""Tests of cvretrieval.io: decoding (formats, modes, orientation, errors), crops, listing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from cvretrieval.errors import ImageReadError
from cvretrieval.io import IMAGE_EXTENSIONS, list_images, read_bytes_and_image, read_image, to_uint8

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB image: top-left red, top-right green, bottom-left blue, bottom-right white."""
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = RED
    img[: h // 2, w // 2 :] = GREEN
    img[h // 2 :, : w // 2] = BLUE
    img[h // 2 :, w // 2 :] = WHITE
    return img


def coords_image(h: int = 60, w: int = 80) -> np.ndarray:
    """RGB image whose red channel is the column and green channel the row of each pixel."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([xx, yy, np.zeros_like(xx)]).astype(np.uint8)


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(img: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(img).save(path, **kwargs)
    return path


def colour_at(img: np.ndarray, y: int, x: int) -> np.ndarray:
    return img[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)


def test_extensions_are_lower_case_with_dot():
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".gif"} <= set(IMAGE_EXTENSIONS)
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- orientation


def _jpeg_with_orientation(path: Path, img: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, quality=95, exif=exif)
    return path


def test_exif_orientation_6_is_rotated_clockwise(tmp_path):
    stored = quadrants(40, 60)
    path = _jpeg_with_orientation(tmp_path / "rot.jpg", stored, 6)
    out = read_image(path, max_side=None)
    # Orientation 6: the viewer turns the stored pixels 90 degrees clockwise.
    assert out.shape == (60, 40, 3)
    # displayed top-left = stored bottom-left (blue), top-right = stored top-left (red)
    np.testing.assert_allclose(colour_at(out, 10, 10), BLUE, atol=25)
    np.testing.assert_allclose(colour_at(out, 10, 30), RED, atol=25)
    np.testing.assert_allclose(colour_at(out, 50, 10), WHITE, atol=25)
    np.testing.assert_allclose(colour_at(out, 50, 30), GREEN, atol=25)
    assert np.abs(out.astype(int) - np.rot90(stored, k=-1)).mean() < 6


def test_exif_orientation_with_draft_decoding(tmp_path):
    stored = cv2.resize(quadrants(40, 60), (1200, 800), interpolation=cv2.INTER_NEAREST)
    path = _jpeg_with_orientation(tmp_path / "big.jpg", stored, 6)
    out = read_image(path, max_side=150)
    assert out.shape == (150, 100, 3)
    np.testing.assert_allclose(colour_at(out, 20, 20), BLUE, atol=25)
    np.testing.assert_allclose(colour_at(out, 20, 80), RED, atol=25)


def test_bbox_is_in_oriented_coordinates(tmp_path):
    path = _jpeg_with_orientation(tmp_path / "rot.jpg", quadrants(40, 60), 6)
    # the displayed image is 40 wide, 60 tall; its top-right quarter is red
    out = read_image(path, max_side=None, bbox=(24, 4, 36, 26))
    assert out.shape == (22, 12, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), RED, atol=25)


# --------------------------------------------------------------------------- modes


def test_unicode_file_name(tmp_path):
    folder = tmp_path / "données"
    folder.mkdir()
    img = coords_image()
    path = save(img, folder / "フォト é.png")
    np.testing.assert_array_equal(read_image(path, max_side=None), img)
    np.testing.assert_array_equal(read_image(str(path), max_side=None), img)


def test_grayscale_png_and_grayscale_flag(tmp_path):
    gray = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (10, 1))
    path = save(gray, tmp_path / "g.png")
    out_gray = read_image(path, grayscale=True, max_side=None)
    np.testing.assert_array_equal(out_gray, gray)
    out_rgb = read_image(path, max_side=None)
    assert out_rgb.shape == (10, 50, 3)
    for c in range(3):
        np.testing.assert_array_equal(out_rgb[..., c], gray)


def test_rgb_to_gray_uses_luma_weights(tmp_path):
    img = np.zeros((4, 3, 3), np.uint8)
    img[:, 0] = RED
    img[:, 1] = GREEN
    img[:, 2] = BLUE
    out = read_image(save(img, tmp_path / "c.png"), grayscale=True, max_side=None)
    # ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B
    np.testing.assert_allclose(out[0], [76, 150, 29], atol=1)


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[:, 0] = (255, 0, 0, 255)  # opaque red
    rgba[:, 1] = (0, 0, 0, 0)  # fully transparent
    rgba[:, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    out = read_image(save(rgba, tmp_path / "a.png"), max_side=None)
    np.testing.assert_array_equal(out[0, 0], RED)
    np.testing.assert_array_equal(out[0, 1], WHITE)
    np.testing.assert_allclose(out[0, 2], [127, 127, 127], atol=1)


def test_la_composited_on_white(tmp_path):
    la = np.zeros((2, 2, 2), np.uint8)
    la[:, 0] = (40, 255)
    la[:, 1] = (40, 0)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png", grayscale=True, max_side=None)
    np.testing.assert_array_equal(out[0], [40, 255])


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    im.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    im.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png", max_side=None)
    np.testing.assert_array_equal(out[0, 0], WHITE)  # index 0 is the transparent red
    np.testing.assert_array_equal(out[0, 1], GREEN)
    im.save(tmp_path / "p.gif", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif", max_side=None)[0, 1], GREEN)


def test_sixteen_bit_png_scaled_by_its_maximum(tmp_path):
    full = np.array([[0, 257 * 100, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "full.png"), full)
    np.testing.assert_array_equal(
        read_image(tmp_path / "full.png", grayscale=True)[0], [0, 100, 255]
    )
    dark = np.array([[0, 1000, 12000, 60000]], np.uint16)
    cv2.imwrite(str(tmp_path / "dark.png"), dark)
    # 1000 * 255 / 60000 = 4.25, 12000 * 255 / 60000 = 51
    np.testing.assert_array_equal(
        read_image(tmp_path / "dark.png", grayscale=True)[0], [0, 4, 51, 255]
    )


def test_float_tiff(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif", grayscale=True)[0], [0, 128, 255])


def test_bilevel_image(tmp_path):
    Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png", grayscale=True)[0], [0, 255, 0])


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), [0, 255, 255], atol=8)  # cyan


def test_multi_frame_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in (BLUE, RED)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = read_image(tmp_path / "anim.gif")
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), BLUE, atol=2)


# --------------------------------------------------------------------------- errors


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_raises(tmp_path, suffix):
    path = save(noise_image(200, 300), tmp_path / f"cut{suffix}")
    read_image(path)  # complete file decodes
    _cut(path, 0.6)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not an image\n"), "not a recognised image"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: None, "does not exist"),
    ],
    ids=["empty", "text", "directory", "missing"],
)
def test_bad_files_raise_one_line_error_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad é.jpg"
    make(path)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: ")
    assert "\n" not in message
    assert isinstance(info.value, ValueError)  # ImageReadError is a ValueError too


def test_bytes_input(tmp_path):
    img = coords_image()
    path = save(img, tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(path.read_bytes(), max_side=None), img)
    np.testing.assert_array_equal(read_image(bytearray(path.read_bytes()), max_side=None), img)
    with pytest.raises(ImageReadError, match="<bytes>"):
        read_image(b"definitely not an image")
    with pytest.raises(ImageReadError, match="<bytes>"):
        read_image(save(noise_image(50, 50), path).read_bytes()[:2000])


def test_wrong_source_type():
    with pytest.raises(TypeError, match="path"):
        read_image(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- arrays


def test_ndarray_passthrough():
    img = coords_image()
    out = read_image(img, max_side=None)
    np.testing.assert_array_equal(out, img)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert not np.shares_memory(out, img)
    gray = img[..., 0]
    np.testing.assert_array_equal(read_image(gray, grayscale=True, max_side=None), gray)
    assert read_image(gray, max_side=None).shape == (60, 80, 3)
    assert read_image(img[..., :1], grayscale=True, max_side=None).shape == (60, 80)


def test_ndarray_other_dtypes():
    np.testing.assert_array_equal(
        read_image(np.array([[0.0, 0.5, 1.0]]), grayscale=True), [[0, 128, 255]]
    )
    np.testing.assert_array_equal(
        read_image(np.array([[0, 100, 200]], np.int64), grayscale=True), [[0, 100, 200]]
    )
    np.testing.assert_array_equal(
        read_image(np.array([[0, 32768, 65535]], np.uint16), grayscale=True), [[0, 128, 255]]
    )
    np.testing.assert_array_equal(read_image(np.array([[True, False]]), grayscale=True), [[255, 0]])
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    np.testing.assert_array_equal(read_image(rgba), [[[10, 20, 30], [255, 255, 255]]])


def test_to_uint8_known_values():
    np.testing.assert_array_equal(to_uint8(np.array([-5.0, np.nan, 0.25])), [0, 0, 64])
    np.testing.assert_array_equal(to_uint8(np.array([0, 500, 1000], np.int32)), [0, 128, 255])
    with pytest.raises(TypeError, match="dtype"):
        to_uint8(np.array(["a"]))


@pytest.mark.parametrize("shape", [(5,), (4, 4, 2), (0, 4, 3), (2, 2, 2, 3)])
def test_ndarray_bad_shape(shape):
    with pytest.raises(ImageReadError, match="shape"):
        read_image(np.zeros(shape, np.uint8))


# --------------------------------------------------------------------------- crop and size


def test_bbox_crop_known_content(tmp_path):
    img = coords_image(60, 80)
    path = save(img, tmp_path / "c.png")
    out = read_image(path, bbox=(10, 20, 50, 40), max_side=None)
    assert out.shape == (20, 40, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.arange(10, 50))
    np.testing.assert_array_equal(out[:, 0, 1], np.arange(20, 40))
    # fractional edges widen outwards to whole pixels
    assert read_image(img, bbox=(10.5, 20.2, 20.5, 30.7), max_side=None).shape == (11, 11, 3)


def test_bbox_clipped_and_before_downscale():
    img = coords_image(60, 80)
    out = read_image(img, bbox=(-10, -5, 5, 4), max_side=None)
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[..., 0], img[:4, :5, 0])
    # crop happens at full resolution, then the crop is downscaled
    small = read_image(img, bbox=(0, 0, 40, 20), max_side=20)
    assert small.shape == (10, 20, 3)
    np.testing.assert_allclose(small[0, :, 0], np.arange(0.5, 40, 2), atol=1)


@pytest.mark.parametrize("bbox", [(100, 100, 200, 200), (30, 10, 30, 50), (50, 10, 20, 40)])
def test_empty_bbox_raises_with_box_and_size(bbox):
    with pytest.raises(ValueError, match="80x60") as info:
        read_image(coords_image(60, 80), bbox=bbox)
    assert str(bbox) in str(info.value)


def test_max_side_downscale_keeps_aspect(tmp_path):
    path = save(noise_image(200, 300), tmp_path / "n.png")
    assert read_image(path, max_side=100).shape == (67, 100, 3)  # 200 * 100 / 300 = 66.7
    assert read_image(path, max_side=100, grayscale=True).shape == (67, 100)
    assert read_image(noise_image(300, 120), max_side=150).shape == (150, 60, 3)


def test_never_upscale_and_none_keeps_size():
    img = noise_image(40, 50)
    np.testing.assert_array_equal(read_image(img, max_side=640), img)
    big = noise_image(700, 900)
    assert read_image(big, max_side=None).shape == (700, 900, 3)


def test_downscale_area_average():
    img = np.zeros((4, 8), np.uint8)
    img[:, 1::2] = 200  # alternating columns average to 100 under 2x area reduction
    np.testing.assert_array_equal(read_image(img, max_side=4, grayscale=True), np.full((2, 4), 100))


def test_jpeg_draft_matches_full_decode(tmp_path):
    smooth = cv2.resize(noise_image(12, 16), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    path = save(smooth, tmp_path / "big.jpg", quality=95)
    fast = read_image(path, max_side=200)
    assert fast.shape == (150, 200, 3)
    reference = cv2.resize(
        read_image(path, max_side=None), (200, 150), interpolation=cv2.INTER_AREA
    )
    assert np.abs(fast.astype(int) - reference).mean() < 3
    assert read_image(path, max_side=200, grayscale=True).shape == (150, 200)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_max_side(bad):
    with pytest.raises(ValueError, match="max_side"):
        read_image(noise_image(4, 4), max_side=bad)


def test_read_bytes_and_image(tmp_path):
    img = coords_image()
    path = save(img, tmp_path / "h.png")
    sha1, n_bytes, out = read_bytes_and_image(path, max_side=None)
    data = path.read_bytes()
    assert sha1 == hashlib.sha1(data).hexdigest() and len(sha1) == 40
    assert n_bytes == len(data) == path.stat().st_size
    np.testing.assert_array_equal(out, img)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_bytes_and_image(tmp_path / "nope.png")


# --------------------------------------------------------------------------- listing


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "root"
    files = [
        "b.JPG",
        "a.png",
        "sub/c.jpeg",
        "sub/deeper/e.webp",
        "Sub2/x.TIFF",
        ".hidden/d.png",
        "sub/.cache/f.png",
        ".e.png",
        "notes.txt",
        "archive.jpg.bak",
    ]
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / "folder.png").mkdir()  # a directory with an image suffix is not a file
    return root


def test_list_images_recursive_sorted(tree):
    rel = [p.relative_to(tree).as_posix() for p in list_images(tree)]
    assert rel == ["Sub2/x.TIFF", "a.png", "b.JPG", "sub/c.jpeg", "sub/deeper/e.webp"]
    assert all(p.is_absolute() == tree.is_absolute() for p in list_images(tree))


def test_list_images_options(tree):
    assert [p.name for p in list_images(tree, recursive=False)] == ["a.png", "b.JPG"]
    assert [p.name for p in list_images(str(tree), extensions=("PNG",))] == ["a.png"]
    assert [p.name for p in list_images(tree, extensions=[".jpg", "jpeg"])] == ["b.JPG", "c.jpeg"]


def test_list_images_root_is_file_or_missing(tree):
    assert list_images(tree / "a.png") == [tree / "a.png"]
    assert list_images(tree / "notes.txt") == []
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tree / "nowhere")


# --------------------------------------------------------------------------- regressions (issue 13)


def _alarm(seconds: float):
    """Context manager: raise TimeoutError in this thread after ``seconds`` (SIGALRM, POSIX)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def fire(signum, frame):
            raise TimeoutError(f"still blocked after {seconds} s")

        old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    return guard()


needs_fifo = pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")


@needs_fifo
@pytest.mark.parametrize("reader", [read_image, read_bytes_and_image])
def test_fifo_is_refused_without_blocking(tmp_path, reader):
    import os

    fifo = tmp_path / "q.jpg"
    os.mkfifo(fifo)
    with _alarm(5), pytest.raises(ImageReadError, match="FIFO") as info:
        reader(fifo)
    assert str(fifo) in str(info.value) and "\n" not in str(info.value)


def test_decompression_bomb_says_too_large_and_the_limit(tmp_path):
    limit = 2 * Image.MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    # IHDR width/height at bytes 16..24; CRC not rechecked by Pillow's open
    import struct
    import zlib

    side = int((limit * 1.1) ** 0.5) + 1
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "too large" in message and f"{limit:,}" in message, message
    assert "corrupt" not in message and "MAX_IMAGE_PIXELS" in message
    assert str(path) in message and "\n" not in message


def test_scan_images_reports_what_it_skips(tree):
    import os

    from cvretrieval.io import scan_images

    os.symlink("loop.png", tree / "loop.png")
    os.symlink("nowhere.png", tree / "broken.jpg")
    os.mkfifo(tree / "pipe.png")
    os.symlink(tree / "a.png", tree / "sub" / "link.png")
    with _alarm(5):
        paths, skipped = scan_images(tree)
    rel = [p.relative_to(tree).as_posix() for p in paths]
    expected = ["Sub2/x.TIFF", "a.png", "b.JPG", "sub/c.jpeg", "sub/deeper/e.webp", "sub/link.png"]
    assert rel == expected
    reasons = {p.relative_to(tree).as_posix(): r for p, r in skipped}
    assert set(reasons) == {"broken.jpg", "loop.png", "pipe.png"}
    assert "loop" in reasons["loop.png"] and "broken" in reasons["broken.jpg"]
    assert "FIFO" in reasons["pipe.png"]
    assert list_images(tree) == paths  # the old API lists the same images


@needs_fifo
def test_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path, monkeypatch):
    """The stat check and the open can race; the non-blocking open plus fstat still refuse."""
    import os
    import stat as stat_module

    import cvretrieval._files as files

    fifo = tmp_path / "q.png"
    os.mkfifo(fifo)
    real_stat = os.stat

    class LooksRegular:
        st_mode = stat_module.S_IFREG | 0o644

    def stale_stat(path, *args, **kwargs):  # what a check made just before the swap saw
        return LooksRegular() if Path(path) == fifo else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(files.os, "stat", stale_stat)
    with _alarm(5), pytest.raises(ImageReadError, match="FIFO"):
        read_image(fifo)


def test_resolve_paths_equals_path_resolve(tmp_path):
    """The per-folder resolution gives what Path.resolve gives: links to files and to
    folders, '..', missing files, relative paths."""
    import os

    from cvretrieval._files import resolve_paths

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes(b"x")
    (tmp_path / "real" / "b.jpg").write_bytes(b"y")
    (tmp_path / "linkdir").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "l.jpg").symlink_to(tmp_path / "real" / "b.jpg")
    (tmp_path / "chain.jpg").symlink_to(tmp_path / "real" / "l.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    paths = [tmp_path / "real" / "a.jpg", tmp_path / "linkdir" / "a.jpg",
             tmp_path / "real" / "l.jpg", tmp_path / "chain.jpg", tmp_path / "dangling.jpg",
             tmp_path / "real" / ".." / "real" / "b.jpg", tmp_path / "missing" / "x.jpg",
             tmp_path / "real" / "..", str(tmp_path / "linkdir" / "l.jpg")]
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        paths += ["real/a.jpg", "linkdir/l.jpg", "./chain.jpg"]
        assert resolve_paths(paths) == [str(Path(p).resolve()) for p in paths]
    finally:
        os.chdir(old)


def test_read_regular_file_returns_every_byte_and_closes_its_descriptor(tmp_path):
    """The reader works on the raw descriptor (no buffered file object): it must still
    return the whole file, empty or larger than one read, and never leak the fd."""
    import os

    from cvretrieval._files import FileProblem, read_regular_file

    fd_dir = "/proc/self/fd"
    before = len(os.listdir(fd_dir)) if os.path.isdir(fd_dir) else None
    rng = np.random.default_rng(0)
    for size in (0, 1, 4095, (3 << 20) + 7):
        p = tmp_path / f"f{size}"
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        p.write_bytes(data)
        assert read_regular_file(p) == data
    with pytest.raises(FileProblem):
        read_regular_file(tmp_path)  # a directory: refused before it is opened
    if before is not None:
        assert len(os.listdir(fd_dir)) == before


def test_read_regular_file_reads_once_and_follows_a_file_that_grew(tmp_path, monkeypatch):
    """A whole small file is one read (a short read is its end); a file larger than its
    stat said (it grew) is still read to its end."""
    import os

    from cvretrieval import _files

    p = tmp_path / "img"
    data = bytes(range(256)) * 40
    p.write_bytes(data)
    calls = []
    real_read = os.read
    monkeypatch.setattr(_files.os, "read", lambda fd, n: calls.append(n) or real_read(fd, n))
    assert _files.read_regular_file(p) == data
    assert len(calls) == 1
    real_fstat = os.fstat

    class Smaller:  # the size stat reported before the file grew
        def __init__(self, st):
            self.st_mode, self.st_size = st.st_mode, 100

    monkeypatch.setattr(_files.os, "fstat", lambda fd: Smaller(real_fstat(fd)))
    calls.clear()
    assert _files.read_regular_file(p) == data
    assert calls[0] == 101 and len(calls) >= 2
