"""Bad input to the data-set readers and to `cvret datasets check` (issue 13).

Each test reproduces one defect seen before the fix: a FIFO that blocked forever,
a ground-truth path leaving its folder, an error message quoting another file's
content, `check` exiting 0 on problems, a silently dropped Holidays image, messages
that did not name the file.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_run
from PIL import Image

from cvretrieval.datasets import (
    RetrievalDataset,
    check_dataset,
    load_dataset,
    read_gt_json,
    read_holidays,
    read_revisitop,
)
from cvretrieval.errors import DatasetError, ImageReadError

PASSWD = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def img(path: Path, value: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    """A small JPEG (``size`` = width, height) whose content depends on ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    w, h = size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def write_gt(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def finishes(fn, *args, **kwargs):
    """Run ``fn`` in a daemon thread; return (finished, result or exception).

    A FIFO opened for reading blocks until a writer comes: before the fix the
    call never returned, so the test guards it instead of hanging the suite.
    """
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(60)
    return not t.is_alive(), box.get("value")


# --------------------------------------------------------------------------- FIFOs
@needs_fifo
def test_fifo_listed_in_gt_json_is_skipped_and_reported_never_opened(tmp_path):
    root = tmp_path / "set"
    img(root / "a.jpg", 1)
    img(root / "b.jpg", 2)
    img(root / "q.jpg", 3)
    os.mkfifo(root / "pipe.jpg")
    gt = write_gt(
        root / "gt.json",
        {
            "imlist": ["a.jpg", "pipe.jpg", "b.jpg"],
            "qimlist": ["q.jpg", "pipe.jpg"],
            "gnd": [{"ok": [1, 2], "junk": [0]}, {"ok": [0]}],
        },
    )
    done, ds = finishes(load_dataset, gt)
    assert done, "reading a gt.json that lists a FIFO blocked"
    assert isinstance(ds, RetrievalDataset), ds
    assert ds.imlist == ["a.jpg", "b.jpg"] and ds.qimlist == ["q.jpg"]
    assert ds.gnd[0]["ok"] == [1] and ds.gnd[0]["junk"] == [0]  # b.jpg renumbered 2 -> 1
    assert [p["item"] for p in ds.problems if p["kind"] == "not-a-file"] == ["pipe.jpg"]
    assert "FIFO" in ds.problems[0]["message"]


@needs_fifo
def test_fifo_as_the_ground_truth_path_is_refused(tmp_path):
    fifo = tmp_path / "gt.json"
    os.mkfifo(fifo)
    for fn, args in (
        (read_gt_json, (fifo,)),
        (load_dataset, (fifo,)),
        (load_dataset, (fifo, "json")),
        (read_revisitop, (fifo,)),
    ):
        done, exc = finishes(fn, *args)
        assert done, f"{fn.__name__}{args} blocked on a FIFO"
        assert isinstance(exc, DatasetError), exc
        assert "FIFO" in str(exc) and "\n" not in str(exc)


@needs_fifo
def test_check_never_opens_a_fifo_and_fails(tmp_path):
    root = tmp_path / "set"
    img(root / "a.jpg", 1)
    img(root / "b.jpg", 2)
    os.mkfifo(root / "pipe.jpg")
    ds = RetrievalDataset(root, ["a.jpg", "pipe.jpg"], ["b.jpg"], [{"ok": [0]}])
    done, report = finishes(check_dataset, ds)
    assert done, "check_dataset opened a FIFO"
    assert report["unreadable"][0]["path"] == "pipe.jpg"
    assert "not a regular file" in report["unreadable"][0]["error"]
    assert report["ok"] is False


@needs_fifo
def test_read_image_refuses_a_fifo(tmp_path):
    from cvretrieval.io import read_image

    os.mkfifo(tmp_path / "p.jpg")
    done, exc = finishes(read_image, tmp_path / "p.jpg")
    assert done and isinstance(exc, ImageReadError) and "not a regular file" in str(exc)


# --------------------------------------------------------------------------- paths outside
@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../../../../etc/passwd", "'..'"),
        ("sub/../../outside.jpg", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/win.ini", "absolute"),
        ("a\x00.jpg", "NUL"),
    ],
)
def test_gt_paths_must_stay_inside_the_folder(tmp_path, entry, reason):
    root = tmp_path / "set"
    img(root / "a.jpg")
    gt = write_gt(
        root / "gt.json", {"imlist": ["a.jpg", entry], "qimlist": ["a.jpg"], "gnd": [{"ok": [1]}]}
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(gt)
    msg = str(info.value)
    assert "imlist[1]" in msg and reason in msg and "gt.json" in msg
    assert "\n" not in msg and "root:x" not in msg


def test_revisitop_names_must_stay_inside_the_folder(tmp_path):
    pkl = tmp_path / "gnd_x.pkl"
    doc = {"imlist": ["a", "../../etc/passwd"], "qimlist": ["a"], "gnd": [{"ok": [0]}]}
    pkl.write_bytes(pickle.dumps(doc))
    with pytest.raises(DatasetError, match=r"imlist\[1\].*'\.\.'"):
        read_revisitop(pkl)


def test_no_message_quotes_file_contents(tmp_path):
    """Before: `check` printed "1294 bytes starting b'root:x:0'" for /etc/passwd."""
    root = tmp_path / "set"
    img(root / "a.jpg")
    (root / "notes.jpg").write_bytes(PASSWD)
    write_gt(root / "gt.json", {"imlist": ["a.jpg", "notes.jpg"], "qimlist": ["a.jpg"],
                                "gnd": [{"ok": [1]}]})
    for decode in (True, False):
        report = check_dataset(root, decode=decode)
        assert report["unreadable"] and report["unreadable"][0]["path"] == "notes.jpg"
        assert "root:x" not in json.dumps(report["unreadable"])
        assert "daemon" not in json.dumps(report["unreadable"])
    res = cli_run("datasets", "check", root, ok=False)
    assert "root:x" not in res.output and "b'" not in res.output
    with pytest.raises(ImageReadError) as info:
        from cvretrieval.io import read_image

        read_image(root / "notes.jpg")
    assert "root:x" not in str(info.value) and "bin/bash" not in str(info.value)


# --------------------------------------------------------------------------- check exit status
def _set(tmp_path: Path, **overrides) -> Path:
    root = tmp_path / "set"
    img(root / "a.jpg", 1, (100, 80))
    img(root / "b.jpg", 2)
    img(root / "q.jpg", 3, (100, 80))
    doc = {"imlist": ["a.jpg", "b.jpg"], "qimlist": ["q.jpg"], "gnd": [{"ok": [0]}]}
    doc.update(overrides)
    return write_gt(root / "gt.json", doc)


def test_check_exits_0_on_a_good_set(tmp_path):
    gt = _set(tmp_path, gnd=[{"ok": [0], "bbx": [0, 0, 100, 80]}])
    res = cli_run("datasets", "check", gt)
    assert "result: OK" in res.output


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda root: (root / "b.jpg").unlink(), "missing files: 1"),
        (lambda root: (root / "b.jpg").write_bytes(b"\xff\xd8 truncated"), "unreadable files: 1"),
        (lambda root: (root / "b.jpg").write_bytes((root / "a.jpg").read_bytes()), "duplicate"),
    ],
    ids=["missing", "unreadable", "duplicate"],
)
def test_check_exits_1_on_file_problems(tmp_path, change, expect):
    gt = _set(tmp_path)
    change(gt.parent)
    res = cli_run("datasets", "check", gt, ok=False)
    assert res.exit_code == 1, res.output
    assert expect in res.output and "PROBLEMS FOUND" in res.output
    assert "Error" not in res.output  # the report says it all; no "Error: 1" after it


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ([300, 300, 10, 10], "inverted"),
        ([10, 10, 10, 50], "empty"),
        ([0, 0, 101, 80], "outside the 100x80 image"),
        ([-5, 0, 50, 50], "outside"),
    ],
)
def test_check_flags_bad_query_boxes(tmp_path, box, why):
    gt = _set(tmp_path, gnd=[{"ok": [0], "bbx": box}])
    report = check_dataset(gt, decode=False)
    assert report["ok"] is False
    assert report["bad_boxes"][0]["query"] == 0 and why in report["bad_boxes"][0]["error"]
    res = cli_run("datasets", "check", gt, ok=False)
    assert res.exit_code == 1 and "bad query boxes: 1" in res.output


# --------------------------------------------------------------------------- Holidays
def test_holidays_reports_a_missing_relevant_image(tmp_path):
    root = tmp_path / "holidays"
    for i, n in enumerate([100000, 100001, 100003, 100100, 100101]):  # 100002 is missing
        img(root / f"{n}.jpg", i)
    ds = read_holidays(root)
    missing = [p for p in ds.problems if p["kind"] == "missing-image"]
    assert [p["item"] for p in missing] == ["100002.jpg"]
    assert "group 1000" in missing[0]["message"]
    report = check_dataset(ds, decode=False)
    assert report["ok"] is False  # a file of the set is missing


# --------------------------------------------------------------------------- messages
def test_bad_index_names_the_file_and_the_query(tmp_path):
    gt = _set(tmp_path, gnd=[{"ok": [0, "five"]}])
    with pytest.raises(DatasetError) as info:
        load_dataset(gt)
    msg = str(info.value)
    assert "gt.json" in msg and "gnd[0]['ok']" in msg and "'five'" in msg


def test_bad_index_in_a_revisitop_pickle_names_the_file_and_field(tmp_path):
    pkl = tmp_path / "gnd_roxford5k.pkl"
    gnd = [{"easy": [0], "hard": ["five"], "junk": []}]
    pkl.write_bytes(pickle.dumps({"imlist": ["a", "b"], "qimlist": ["q"], "gnd": gnd}))
    with pytest.raises(DatasetError) as info:
        read_revisitop(pkl)
    msg = str(info.value)
    assert "gnd_roxford5k.pkl" in msg and "gnd[0]['hard']" in msg
    assert "invalid literal" not in msg


def test_deeply_nested_json_names_the_file(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError) as info:
        read_gt_json(gt)
    msg = str(info.value)
    assert str(gt) in msg and "too deeply" in msg and "recursion" not in msg
