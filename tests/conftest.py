"""Shared fixtures and helpers: the real data in ../shared (skipped cleanly when absent),
synthetic images, and ``cli_run`` (the cvret command through click's CliRunner)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not available: {path} is absent "
            "(it lives beside the checkout in ../shared)"
        )
    return path


@pytest.fixture(scope="session")
def ukbench_dir() -> Path:
    """The 56-image UKBench sample (groups of 4)."""
    return _shared_path("datasets", "ukbench-56")


@pytest.fixture(scope="session")
def caltech_dir() -> Path:
    """51 Caltech-101 classes, one folder each."""
    return _shared_path("datasets", "caltech101-dev")


@pytest.fixture(scope="session")
def coral_tflite() -> Path:
    """A real quantised MobileNet v1 embedding extractor (TFLite)."""
    return _shared_path(
        "models", "coral-mobilenet", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    )


def textured_image(seed: int, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """An RGB uint8 image full of corners and blobs, different for every seed (many key points)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(40):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, 80)), y0 + int(rng.integers(10, 80))
            cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)
        elif kind == 1:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, c, int(rng.integers(5, 40)), color, -1)
        else:
            pts = rng.integers(0, [w, h], size=(3, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], color)
    return img


def cli_run(*args, ok=True):
    """Run ``cvret ARGS`` through click's CliRunner (arguments made strings); check exit 0 if ok."""
    from click.testing import CliRunner

    from cvretrieval.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def make_textured():
    return textured_image
