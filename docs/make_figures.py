"""Make the README's pictures from images this script draws itself (no third-party image).

    .venv/bin/python docs/make_figures.py            # writes docs/report.png
    CVRET_WEB_SCREENSHOT=docs/web.png .venv/bin/python -m pytest tests/test_browser.py

``docs/report.png``: a Copydays-style set (``cvret datasets make-copies``) built from 40
synthetic "photos" (random shapes, gradients and text drawn with OpenCV), evaluated with
BoVW-ORB and rendered to PNG by headless Chromium (``cvret eval --report --report-png``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def synthetic_photo(seed: int, size: tuple[int, int] = (360, 480)) -> np.ndarray:
    """A colourful scene of random shapes over a gradient, with some text."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.25, 0.25, (3, 2))
    img = np.stack([base[c] + slope[c, 0] * yy + slope[c, 1] * xx for c in range(3)], axis=-1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(12, 20)):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.circle(img, (x, y), int(rng.integers(8, 60)), color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 120)),
                                        y + int(rng.integers(10, 120))), color, -1)
        else:
            pts = rng.integers(0, [w, h], (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    for _ in range(2):
        text = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ23456789"), 5))
        cv2.putText(img, text, (int(rng.integers(0, w - 150)), int(rng.integers(30, h))),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3, cv2.LINE_AA)
    return img


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cvret-figures-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i in range(40):
            cv2.imwrite(str(photos / f"scene{i:02d}.png"), synthetic_photo(i))
        copies = Path(tmp) / "copies"
        subprocess.run([str(BIN / "cvret"), "datasets", "make-copies", str(photos), str(copies),
                        "--queries", "12", "--distractors", "28", "-q"], check=True)
        subprocess.run([str(BIN / "cvret"), "eval", str(copies / "gt.json"), "--features",
                        "bovw-orb", "--words", "200", "--report", str(Path(tmp) / "report"),
                        "--report-png", str(Path(tmp) / "report.png"), "-q"], check=True)
        shrink(Path(tmp) / "report.png", HERE / "report.png")
    print(f"written {HERE / 'report.png'}")


def shrink(src: Path, dst: Path, width: int = 1000) -> None:
    """A smaller copy for the repository: ``width`` pixels wide, 256-colour palette."""
    from PIL import Image

    im = Image.open(src).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


if __name__ == "__main__":
    main()
