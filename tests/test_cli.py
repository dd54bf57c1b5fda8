"""The cvret command, driven with click's CliRunner in an isolated folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli_run

from cvretrieval.cli import main


def write_rgb(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def photos(tmp_path, make_textured):
    folder = tmp_path / "photos"
    for i in range(10):
        write_rgb(folder / "sub" / f"p{i}.png", make_textured(200 + i))
    return folder


BOVW = ["--features", "bovw-orb", "--words", "32", "--n-features", "200", "--n-jobs", "1"]


def test_version_and_help():
    assert "cvret" in cli_run("--version").output
    for cmd in (["index"], ["search"], ["eval"], ["vocab", "build"], ["demo"]):
        assert "--json" in cli_run(*cmd, "--help").output


def test_index_then_search_json_to_stdout(photos, tmp_path, make_textured):
    bundle = tmp_path / "photos.cvret"
    out = cli_run("index", photos, "-o", bundle, *BOVW, "-q").output
    assert out == ""
    assert (bundle / "manifest.json").is_file()
    q = write_rgb(tmp_path / "q.png", make_textured(204)[10:-10, 10:-10])
    res = cli_run("search", bundle, q, "-k", "3", "--json", "-")
    hits = json.loads(res.stdout)  # nothing but JSON on standard output
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"].endswith("p4.png")
    assert set(hits[0]) == {"rank", "path", "score"}
    text = cli_run("search", bundle, q, "-k", "2").output.splitlines()
    assert len(text) == 2 and text[0].split()[0] == "1" and text[0].endswith("p4.png")


def test_search_bbox_and_json_file(photos, tmp_path, make_textured):
    bundle = tmp_path / "b"
    cli_run("index", photos, "-o", bundle, "--features", "hog", "-q")
    img = make_textured(207)
    canvas = np.concatenate([make_textured(1), img], axis=1)
    q = write_rgb(tmp_path / "q.png", canvas)
    h, w = img.shape[:2]
    cli_run("search", bundle, q, "-k", "1", "--bbox", f"{w},0,{2 * w},{h}",
            "--json", tmp_path / "r.json")
    hits = json.loads((tmp_path / "r.json").read_text())
    assert hits[0]["path"].endswith("p7.png")
    bad = cli_run("search", bundle, q, "--bbox", "1,2,3", ok=False)
    assert bad.exit_code == 2 and "x0,y0,x1,y1" in bad.output


def test_unreadable_query_is_one_line_exit_1(photos, tmp_path):
    bundle = tmp_path / "b"
    cli_run("index", photos, "-o", bundle, "--features", "hog", "-q")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    res = cli_run("search", bundle, bad, ok=False)
    assert res.exit_code == 1
    assert "bad.jpg" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_index_skips_bad_files_and_reports_them(photos, tmp_path):
    (photos / "sub" / "broken.jpg").write_bytes(b"xx")
    res = cli_run("index", photos, "-o", tmp_path / "b", "--features", "hog",
                  "--json", tmp_path / "r.json")
    assert "skipped 1 unreadable" in res.output and "broken.jpg" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["indexed"] == 10 and report["skipped"] == 1
    assert report["failed"][0]["path"].endswith("broken.jpg")


def test_add_appends_to_a_bundle(photos, tmp_path, make_textured):
    bundle = tmp_path / "b"
    cli_run("index", photos, "-o", bundle, *BOVW, "-q")
    more = tmp_path / "more"
    write_rgb(more / "x.png", make_textured(555))
    res = cli_run("index", more, "-o", bundle, "--add", "--json", "-")
    report = json.loads(res.stdout)
    assert report["indexed"] == 1 and report["total_indexed"] == 11
    res = cli_run("index", more, "-o", tmp_path / "nothing", "--add", ok=False)
    assert res.exit_code == 1 and "build it first" in res.output


def test_vocab_build_then_index_with_it(photos, tmp_path):
    vocab = tmp_path / "vocab"
    res = cli_run("vocab", "build", photos, "--detector", "orb", "--words", "24",
                  "--n-features", "200", "--n-jobs", "1", "-o", vocab, "--json", "-")
    assert json.loads(res.stdout)["n_words"] == 24
    assert (vocab / "centers.npy").is_file()
    res = cli_run("index", photos, "-o", tmp_path / "b", "--features", "bovw", "--detector", "orb",
                  "--vocab", vocab, "--n-jobs", "1", "--json", "-")
    assert json.loads(res.stdout)["config"]["embedder"]["params"]["n_words"] == 24
    bad = cli_run("index", photos, "-o", tmp_path / "c", "--features", "bovw", "--detector", "sift",
                  "--vocab", vocab, ok=False)
    assert bad.exit_code == 1 and "orb descriptors" in bad.output


def test_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli_run("index", tmp_path / "empty", "-o", tmp_path / "b", ok=False)
    assert res.exit_code == 1 and "no images" in res.output and "Traceback" not in res.output
    res = cli_run("search", tmp_path / "empty", tmp_path / "nope.png", ok=False)
    assert res.exit_code == 2  # click: QUERY does not exist
    (tmp_path / "q.png").write_bytes(b"")
    res = cli_run("search", tmp_path / "empty", tmp_path / "q.png", ok=False)
    assert res.exit_code == 1 and "manifest.json" in res.output
    res = cli_run("index", tmp_path / "empty", "-o", tmp_path / "b", "--features", "hog",
                  "--words", "5", ok=False)
    assert res.exit_code == 2 and "do not apply to" in res.output


def test_verbose_shows_the_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    args = ["index", str(tmp_path / "empty"), "-o", str(tmp_path / "b"), "-v"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


def _gt_dataset(tmp_path, make_textured):
    """5 queries, each with 2 brightened/cropped copies in a gallery of 10 + 4 distractors."""
    root = tmp_path / "ds"
    imlist, qimlist, gnd = [], [], []
    for q in range(5):
        img = make_textured(300 + q)
        write_rgb(root / "queries" / f"q{q}.png", img)
        qimlist.append(f"queries/q{q}.png")
        ok = []
        brighter = np.clip(img * 0.9 + 20, 0, 255).astype(np.uint8)
        for c, copy in enumerate([img[8:-8, 8:-8], brighter]):
            write_rgb(root / "gallery" / f"q{q}_c{c}.png", copy)
            ok.append(len(imlist))
            imlist.append(f"gallery/q{q}_c{c}.png")
        gnd.append({"ok": ok, "junk": []})
    for d in range(4):
        write_rgb(root / "gallery" / f"d{d}.png", make_textured(400 + d))
        imlist.append(f"gallery/d{d}.png")
    gt = root / "gt.json"
    gt.write_text(json.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))
    return gt


def test_eval_on_ground_truth_json(tmp_path, make_textured):
    gt = _gt_dataset(tmp_path, make_textured)
    res = cli_run("eval", gt, "--features", "hog", "--json", tmp_path / "e.json")
    assert "mAP" in res.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert set(report) >= {"config", "metrics", "per_query"}
    for key in ("mAP", "mAP@10", "P@1", "P@5", "P@10", "R@10", "mean_rank", "ns_score"):
        assert key in report["metrics"], key
    assert report["metrics"]["mAP"] > 0.9  # mild copies of textured images are easy for HOG
    assert len(report["per_query"]) == 5
    assert report["config"]["embedder"]["name"] == "hog"


def test_eval_on_class_folders(tmp_path, make_textured):
    root = tmp_path / "classes"
    for c in range(3):
        base = make_textured(500 + c)
        for j in range(3):
            shifted = np.roll(base, 6 * j, axis=1)
            write_rgb(root / f"class{c}" / f"{j}.png", shifted)
    res = cli_run("eval", root, "--features", "hog", "--json", "-")
    report = json.loads(res.stdout)
    assert report["metrics"]["n_queries"] == 9
    assert report["metrics"]["mAP"] > 0.9


def test_eval_rejects_a_folder_that_is_no_dataset(tmp_path):
    (tmp_path / "x").mkdir()
    res = cli_run("eval", tmp_path / "x", ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_embedders_lists_builtins():
    res = cli_run("embedders", "--json", "-")
    assert "hog" in json.loads(res.stdout)


def test_nothing_written_outside_given_paths(photos, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    cli_run("index", photos, "-o", tmp_path / "b", "--features", "hog", "-q")
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "cwd", "photos"]
    assert Path(tmp_path / "b" / "manifest.json").exists()
