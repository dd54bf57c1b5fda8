"""Bad-input corpus, images: every case decodes to the right shape or fails with one line.

Each case in ``_badinput.IMAGE_CASES`` is read five ways (full size, downscaled, grayscale,
with its hash, from its bytes). A hang fails the test (SIGALRM deadline) instead of
blocking CI; an exception other than ImageReadError fails it too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from _badinput import (
    IMAGE_CASES,
    Case,
    Decodes,
    Fails,
    assert_one_line_error,
    case_ids,
    deadline,
    png_header_only,
    skip_reason,
)
from PIL import Image

from cvretrieval.errors import ImageReadError
from cvretrieval.io import read_bytes_and_image, read_image

MODES = ["full", "small", "gray", "hashed", "bytes"]
SMALL = 16


def expected_name(path: Path) -> str:
    """How a message shows a path: printable characters as they are, others escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def expected_shape(expect: Decodes, mode: str) -> tuple[int, ...]:
    h, w = expect.h, expect.w
    if mode == "small" and max(h, w) > SMALL:
        if w >= h:
            h, w = max(1, round(h * SMALL / w)), SMALL
        else:
            h, w = SMALL, max(1, round(w * SMALL / h))
    return (h, w) if mode == "gray" else (h, w, 3)


def read(path: Path, mode: str) -> np.ndarray:
    if mode == "full":
        return read_image(path, max_side=None)
    if mode == "small":
        return read_image(path, max_side=SMALL)
    if mode == "gray":
        return read_image(path, max_side=None, grayscale=True)
    if mode == "hashed":
        sha1, size, image = read_bytes_and_image(path, max_side=None)
        data = path.read_bytes()
        assert (sha1, size) == (hashlib.sha1(data).hexdigest(), len(data))
        return image
    return read_image(path.read_bytes(), max_side=None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", IMAGE_CASES, ids=case_ids(IMAGE_CASES))
def test_image_case(tmp_path: Path, case: Case, mode: str) -> None:
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    if mode == "bytes" and not case.regular:
        pytest.skip("not a regular file: there are no bytes to pass")
    path = case.make(tmp_path)
    with deadline(10):
        if isinstance(case.expect, Decodes):
            image = read(path, mode)
            assert image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
            assert image.shape == expected_shape(case.expect, mode)
            return
        assert isinstance(case.expect, Fails)
        with pytest.raises(ImageReadError) as info:
            read(path, mode)
    name = "<bytes>" if mode == "bytes" else expected_name(path)
    assert_one_line_error(str(info.value), names=name, reason=case.expect.reason)


def test_corpus_is_large_enough() -> None:
    assert len(IMAGE_CASES) * len(MODES) >= 200
    assert len({c.id for c in IMAGE_CASES}) == len(IMAGE_CASES)


# --------------------------------------------------------------------------- size limits


def test_max_pixels_refuses_before_decoding(tmp_path: Path) -> None:
    # 9000 x 9000 declared and no pixel data: refused from the header, nothing allocated
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(9000, 9000))
    with deadline(10), pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=10_000_000)
    assert_one_line_error(str(info.value), names=str(path), reason="too large")
    assert "9000x9000" in str(info.value) and "10,000,000" in str(info.value)


def test_max_pixels_lets_smaller_images_through(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (40, 30)).save(path)
    assert read_image(path, max_pixels=40 * 30).shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path, max_pixels=40 * 30 - 1)


def test_bomb_message_gives_pillows_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "400,000,000 pixels" in message  # 20000 x 20000
    assert f"{2 * Image.MAX_IMAGE_PIXELS:,}" in message and "MAX_IMAGE_PIXELS" in message
