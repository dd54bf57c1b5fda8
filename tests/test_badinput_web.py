"""Bad-input corpus, uploads to the web page: a decoded image or one clear ImageReadError.

``decode_upload`` is the page's only path from uploaded bytes to pixels; the page shows
its message with ``st.error`` (``test_web.py`` drives the page itself for a few of them).
"""

from __future__ import annotations

import pytest
from _badinput import (
    IMAGE_CASES,
    Decodes,
    assert_one_line_error,
    deadline,
    encode,
    png_header_only,
    rgb,
)

from cvretrieval.errors import ImageReadError
from cvretrieval.web.core import DEFAULT_MAX_UPLOAD_PIXELS, decode_upload

FILE_CASES = [c for c in IMAGE_CASES if c.regular]

NAMES = ["photo.png", "photo.jpg", "photo", ".png", "фото 写真.webp", "x" * 250 + ".png"]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_upload_case(tmp_path, case):
    data = case.make(tmp_path).read_bytes()
    name = "upload-" + case.id + ".png"
    with deadline(10):
        if isinstance(case.expect, Decodes):
            image = decode_upload(data, name, max_mb=5)
            assert image.shape == (case.expect.h, case.expect.w, 3)
            return
        with pytest.raises(ImageReadError) as info:
            decode_upload(data, name, max_mb=5)
    assert_one_line_error(str(info.value), names=name, reason=case.expect.reason)
    assert "<bytes>" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_the_content_decides_not_the_name(name):
    image = decode_upload(encode(rgb(), "PNG"), name, max_mb=5)
    assert image.shape == (24, 32, 3)
    with pytest.raises(ImageReadError) as info:
        decode_upload(b"just words", name, max_mb=5)
    assert_one_line_error(str(info.value), names=name, reason="not a recognised image format")


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.png", b"", "empty"),
        ("big.png", b"\x89PNG" + b"\0" * 2_100_000, "limited to 2 MB"),
        ("bomb.png", png_header_only(30000, 30000), "too large"),
        ("wide.png", png_header_only(20000, 3000), "too large"),
        ("page.html", b"<html><body>hello</body></html>", "not a recognised"),
        ("program.exe", b"MZ\x90\x00" + b"\0" * 60, "not a recognised"),
        ("two\nlines.png", b"", "empty"),
    ],
    ids=["empty", "over-size", "bomb", "over-pixel-cap", "html", "exe", "newline-name"],
)
def test_refused_uploads(name, data, reason):
    with deadline(10), pytest.raises(ImageReadError) as info:
        decode_upload(data, name, max_mb=2)
    assert_one_line_error(str(info.value), names=" ".join(name.split()), reason=reason)


def test_pixel_cap_is_checked_before_decoding():
    assert 20000 * 3000 > DEFAULT_MAX_UPLOAD_PIXELS  # the over-pixel-cap case above
    image = decode_upload(encode(rgb(30, 40), "PNG"), "ok.png", max_mb=2, max_pixels=1200)
    assert image.shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="1,200 pixels"):
        decode_upload(encode(rgb(30, 41), "PNG"), "no.png", max_mb=2, max_pixels=1200)


def test_unexpected_decoder_failure_is_one_message(monkeypatch):
    import cvretrieval.web.core as core

    def boom(*args, **kwargs):
        raise MemoryError("cannot allocate\nthat much")

    monkeypatch.setattr(core, "read_image", boom)
    with pytest.raises(ImageReadError) as info:
        decode_upload(b"anything", "x.png", max_mb=2)
    assert_one_line_error(str(info.value), names="x.png", reason="MemoryError")
