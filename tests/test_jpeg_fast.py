"""The OpenCV decode path for ordinary JPEGs gives exactly the Pillow path's pixels."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

import cvretrieval.io as cio
from cvretrieval._jpeg import decode_jpeg, jpeg_header


def _photo(h: int, w: int, seed: int = 0) -> Image.Image:
    """A smooth image with edges (JPEG-like content, not noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)),
                     ((x + y) % 64) * 4], axis=2).astype(np.int16)
    base += rng.integers(-20, 20, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = BytesIO()
    im.save(buf, "JPEG", quality=85, **kw)
    return buf.getvalue()


def _both(data: bytes, monkeypatch, **kw) -> tuple[np.ndarray, np.ndarray]:
    fast = cio._decode(data, "x", bbox=None, **kw)
    with monkeypatch.context() as m:
        m.setattr(cio, "decode_jpeg", lambda *a, **k: None)
        slow = cio._decode(data, "x", bbox=None, **kw)
    return fast, slow


def _exif(orientation: int) -> Image.Exif:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex


CASES = {
    "rgb-small": lambda: _jpeg(_photo(120, 200)),
    "rgb-draft-4": lambda: _jpeg(_photo(700, 1400)),  # long side >= 2 x 320: draft
    "rgb-draft-2": lambda: _jpeg(_photo(500, 700)),
    "gray": lambda: _jpeg(_photo(90, 130).convert("L")),
    "gray-draft": lambda: _jpeg(_photo(700, 900).convert("L")),
    "progressive": lambda: _jpeg(_photo(150, 100), progressive=True),
    "subsampling-444": lambda: _jpeg(_photo(64, 96), subsampling=0),
    **{f"exif-{o}": (lambda o=o: _jpeg(_photo(60, 100), exif=_exif(o))) for o in range(1, 9)},
    "exif-draft-6": lambda: _jpeg(_photo(700, 1000), exif=_exif(6)),
    "trailing-zeros": lambda: _jpeg(_photo(50, 70)) + b"\0" * 32,
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("grayscale", [False, True])
@pytest.mark.parametrize("max_side", [None, 320])
def test_fast_path_equals_pillow(name, grayscale, max_side, monkeypatch):
    data = CASES[name]()
    assert decode_jpeg(data, max_side=max_side, grayscale=grayscale, draft=True) is not None
    fast, slow = _both(data, monkeypatch, max_side=max_side, grayscale=grayscale)
    assert fast.shape == slow.shape and fast.dtype == slow.dtype == np.uint8
    if not grayscale:
        np.testing.assert_array_equal(fast, slow)
        return
    # gray: the luma plane, against Pillow's RGB -> gray (its own draft takes the luma too);
    # they differ by rounding, and by more where the RGB pixels clip saturated colours
    diff = np.abs(fast.astype(int) - slow.astype(int))
    assert diff.mean() < 0.75 and np.percentile(diff, 99) <= 4, (diff.mean(), diff.max())


def test_exif_rotation_is_applied():
    data = _jpeg(_photo(60, 100), exif=_exif(6))  # 90 degrees: height and width swap
    assert decode_jpeg(data, max_side=None, grayscale=False, draft=True).shape == (100, 60, 3)


@pytest.mark.parametrize("make", [
    lambda: _jpeg(_photo(40, 40).convert("CMYK")),  # 4 components: Pillow's inversion rules
    lambda: _jpeg(_photo(40, 40))[:-200],  # truncated: Pillow refuses it with its message
    lambda: _jpeg(_photo(40, 40)) + b"more data",  # trailing bytes: Pillow decides
    lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 20,  # not a JPEG
    lambda: b"\xff\xd8",  # start marker only
])
def test_unusual_files_go_to_pillow(make):
    assert decode_jpeg(make(), max_side=None, grayscale=False, draft=True) is None


def test_limits_go_to_pillow():
    data = _jpeg(_photo(40, 50))
    kw = {"max_side": None, "grayscale": False, "draft": True}
    assert decode_jpeg(data, **kw, max_pixels=1999) is None
    assert decode_jpeg(data, **kw, max_pixels=2000) is not None


def test_header():
    data = _jpeg(_photo(33, 47))
    assert jpeg_header(data)[:4] == (47, 33, 3, 8)
    assert jpeg_header(data[:3]) is None
    assert jpeg_header(b"\xff\xd8\xff\xd9") is None  # image end before any frame
