"""Bad-input corpus, the command line: ``cvret search``/``index`` on bad queries, boxes, folders.

What could hang (FIFOs) runs ``cvret`` in a subprocess with ``timeout=``, so a regression
fails instead of blocking CI; the rest runs through click's CliRunner under a deadline.
Every failure must be exit status 1 or 2 with one ``Error:`` line and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _badinput import deadline, encode, png_header_only, rgb
from click.testing import CliRunner
from conftest import textured_image
from PIL import Image

from cvretrieval.cli import main

REPO = Path(__file__).resolve().parents[1]
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def cvret_subprocess(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", "from cvretrieval.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def cvret(*args: object):
    with deadline(60):
        result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"cvret raised {result.exception!r}:\n{result.output}")
    return result


def error_line(text: str) -> str:
    """The one ``Error:`` line of a failed command (usage errors may print a usage first)."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(5):
        Image.fromarray(textured_image(700 + i, (160, 200))).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def orb_bundle(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "orb.cvret"
    result = cvret("index", photos, "-o", out, "--features", "bovw-orb", "--words", 8,
                   "--n-jobs", 1, "-q")
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- hangs


@needs_fifo
def test_search_with_a_fifo_query_does_not_hang(orb_bundle, tmp_path):
    fifo = tmp_path / "q.jpg"
    os.mkfifo(fifo)
    proc = cvret_subprocess("search", orb_bundle, fifo)
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc.stderr)
    assert str(fifo) in line and "FIFO" in line


@needs_fifo
def test_index_of_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "photos.jpg"
    os.mkfifo(fifo)
    proc = cvret_subprocess("index", fifo, "-o", tmp_path / "b.cvret", "--features", "hog",
                            "--n-jobs", 1)
    assert proc.returncode == 1, proc.stderr
    error_line(proc.stderr)


@needs_fifo
def test_index_of_a_folder_with_fifo_and_link_loops_does_not_hang(photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted(photos.iterdir())[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.jpg", folder / "loop.jpg")
    os.symlink("nowhere.jpg", folder / "broken.jpg")
    proc = cvret_subprocess("index", folder, "-o", tmp_path / "b.cvret", "--features", "hog",
                            "--n-jobs", 1, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["indexed"] == 3


# --------------------------------------------------------------------------- bad queries


def _query(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"dir": "d.jpg", "newline": "two\nlines.png"}.get(kind, f"{kind}.png")
    if kind == "tiny":
        Image.fromarray(textured_image(1)[:1, :1]).save(path)
    elif kind == "three":
        Image.fromarray(textured_image(1)[:3, :3]).save(path)
    elif kind == "bomb":
        path.write_bytes(png_header_only(30000, 30000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("text", "newline"):
        path.write_bytes(b"not an image")
    elif kind == "truncated":
        path.write_bytes(encode(rgb(200, 200), "PNG")[:500])
    elif kind == "dir":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, phrase, status",
    [
        ("tiny", "too small for ORB", 1),
        ("three", "too small for ORB", None),  # 3x3 runs (ORB finds nothing) or says too small
        ("bomb", "too large", 1),
        ("empty", "empty", 1),
        ("text", "not a recognised image format", 1),
        ("newline", "not a recognised image format", 1),
        ("truncated", "truncated", 1),
        ("dir", "directory", 2),
    ],
)
def test_bad_query_gives_one_line(orb_bundle, tmp_path, kind, phrase, status):
    query = _query(tmp_path, kind)
    result = cvret("search", orb_bundle, query, "--json", "-")
    if status is None and result.exit_code == 0:
        assert isinstance(json.loads(result.stdout), list)
        return
    assert result.exit_code == (status or 1), result.output
    line = error_line(result.output)
    assert phrase in line, line
    assert "OpenCV" not in line and "resize.cpp" not in line


@pytest.mark.parametrize(
    "box, phrase, status",
    [
        ("10,10,11,11", "too small for ORB", 1),
        ("10,10,10.5,10.5", "too small for ORB", 1),
        ("nan,0,50,50", "non-finite", 1),
        ("0,0,inf,50", "non-finite", 1),
        ("5,5,1,1", "x1 > x0", 2),
        ("500,500,600,600", "empty after clipping", 1),
        ("-50,-50,-10,-10", "empty after clipping", 1),
        ("1,2,3", "bbox", 2),
        ("a,b,c,d", "bbox", 2),
    ],
    ids=["one-pixel", "half-pixel", "nan", "inf", "inverted", "outside", "negative",
         "three-values", "letters"],
)
def test_bad_box_gives_one_line(orb_bundle, photos, box, phrase, status):
    result = cvret("search", orb_bundle, photos / "p0.png", f"--bbox={box}", "--json", "-")
    assert result.exit_code == status, result.output
    line = error_line(result.output)
    assert phrase in line, line
    assert "OpenCV" not in line


def test_negative_box_partly_inside_is_clipped_and_searches(orb_bundle, photos):
    result = cvret("search", orb_bundle, photos / "p0.png", "--bbox=-20,-20,120,100",
                   "--json", "-", "-k", 2)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2
