"""Tests of the HTML evaluation report (cvretrieval.report) and its PNG rendering (render)."""

from __future__ import annotations

import base64
import re
import sys
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from cvretrieval.errors import MissingExtraError

pytest.importorskip("jinja2", reason="the report needs the 'report' extra (jinja2)")
pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")

from cvretrieval.datasets import RetrievalDataset  # noqa: E402
from cvretrieval.render import _trim_bottom, find_chromium, render_html_to_png  # noqa: E402
from cvretrieval.report import COLORS, write_report  # noqa: E402

THUMB_CLASSES = {"query", "ok", "bad", "junk"}


class _Imgs(HTMLParser):
    """Collect the attributes of every <img>, and note any <script> / <link>."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


def _parse(html: str) -> _Imgs:
    p = _Imgs()
    p.feed(html)
    return p


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")), uri[:40]
    data = base64.b64decode(uri.split(",", 1)[1])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


# --------------------------------------------------------------------------- a synthetic data set
@pytest.fixture
def toy(tmp_path, make_textured):
    root = tmp_path / "data"
    root.mkdir()
    names = []
    for i in range(8):
        img = make_textured(i)  # 240 x 320 RGB
        cv2.imwrite(str(root / f"g{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        names.append(f"g{i}.jpg")
    (root / "g7.jpg").write_bytes(b"this is not an image")
    for i in range(3):
        cv2.imwrite(str(root / f"q{i}.jpg"), cv2.cvtColor(make_textured(50 + i), cv2.COLOR_RGB2BGR))
    gnd = [
        {"ok": [0, 1], "junk": [2], "bbx": [20, 10, 200, 150]},
        {"ok": [3], "junk": []},
        {"ok": [], "junk": []},  # no positives: AP None, never an example
    ]
    ds = RetrievalDataset(root, names, ["q0.jpg", "q1.jpg", "q2.jpg"], gnd, name="toy <b>set</b>")
    result = {
        "config": {
            "embedder": {"name": "toyemb", "params": {"size": 7}},
            "index": {"factory": "Flat"},
        },
        "dataset": {"name": "toy <b>set</b>", "format": "json", "images": 8, "queries": 3},
        "k": 8,
        "metrics": {
            "mAP": 0.625,
            "mAP@10": 0.6125,
            "P@1": 0.5,
            "P@5": 0.3,
            "R@1": 0.25,
            "R@5": 0.875,
            "mean_rank": 1.5,
            "n_queries": 3,
            "n_queries_evaluated": 2,
            "n_failed": 1,
        },
        "per_query": [
            # top_raw (before junk removal) is what the report must show when present
            {"query": 0, "ap": 0.75, "top": [0, 1, None, 7], "top_raw": [0, 2, None, 1, 7]},
            {"query": 1, "ap": 0.5, "top": [4, 3, 5, 6]},
            {"query": 2, "ap": None, "top": [5, 6]},
        ],
        "failed": [{"query": 2, "path": "q2.jpg"}],
        "search_seconds": 0.01,
    }
    return ds, result


def _rows(html: str) -> list[list[dict[str, str]]]:
    """Thumbnails grouped per example row (a row starts with its query tile)."""
    rows: list[list[dict[str, str]]] = []
    for img in _parse(html).imgs:
        if img.get("class") not in THUMB_CLASSES:
            continue
        if img["class"] == "query":
            rows.append([])
        rows[-1].append(img)
    return rows


def test_report_is_self_contained_and_shows_metrics(toy, tmp_path):
    ds, result = toy
    out = write_report(result, ds, tmp_path / "rep", n_examples=1, thumb_size=96)
    assert out == tmp_path / "rep" / "index.html"
    html = out.read_text(encoding="utf-8")
    parsed = _parse(html)
    # self-contained: every image inline, no script, no external resource
    assert parsed.external == []
    assert all(img["src"].startswith("data:image/") for img in parsed.imgs)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    # metric values, formatted to 4 decimals
    for value in (0.625, 0.6125, 0.3, 0.875, 1.5):
        assert f"{value:.4f}" in html
    # configuration and data set shown, user text escaped
    assert "toyemb" in html and "embedder.params.size" in html
    assert "toy &lt;b&gt;set&lt;/b&gt;" in html and "<b>set</b>" not in html
    # the failed query is listed; the pr_curve fallback is explained
    assert "query 2: q2.jpg" in html
    assert "mean (R@k, P@k) points" in html
    # two figures (PR, AP histogram) plus the thumbnails
    figures = [i for i in parsed.imgs if i.get("class") is None]
    assert len(figures) == 2


def test_thumbnails_one_img_each_with_the_right_colours(toy, tmp_path):
    ds, result = toy
    html = write_report(result, ds, tmp_path / "rep", n_examples=1, thumb_size=96).read_text()
    rows = _rows(html)
    # worst (query 1, AP 0.5) then best (query 0, AP 0.75); query 2 has no AP: never shown
    assert [len(r) for r in rows] == [1 + 4, 1 + 5]
    # query 1: top [4, 3, 5, 6] with ok = {3}
    assert [t["class"] for t in rows[0]] == ["query", "bad", "ok", "bad", "bad"]
    # query 0: top_raw [0, 2, None, 1, 7], ok = {0, 1}, junk = {2}; None = outside the data set
    assert [t["class"] for t in rows[1]] == ["query", "ok", "junk", "bad", "ok", "bad"]
    # the unreadable gallery image is a placeholder tile, with the reason in its tooltip
    assert "not an image" in rows[1][5]["title"] or "cannot read" in rows[1][5]["title"]
    assert rows[1][3]["title"].startswith("a distractor outside")
    # the CSS outlines each class in its colour
    for cls, key in (("ok", "ok"), ("bad", "bad"), ("junk", "junk"), ("query", "query")):
        assert f"--{key}: {COLORS[key]}" in html
        assert re.search(rf"img\.{cls} \{{ border-color: var\(--{key}\);", html), cls


def test_query_thumbnail_is_cropped_to_its_box(toy, tmp_path):
    ds, result = toy
    html = write_report(result, ds, tmp_path / "rep", n_examples=1, thumb_size=96).read_text()
    query0 = _rows(html)[1][0]
    # box 180 x 140 scaled so that its longer side is 96: 96 x 74.67
    img = _decode(query0["src"])
    assert img.shape[1] == 96 and abs(img.shape[0] - 140 * 96 / 180) <= 1
    assert (int(query0["width"]), int(query0["height"])) == (img.shape[1], img.shape[0])
    # an uncropped gallery image keeps the 320 x 240 aspect: 96 x 72
    g0 = _decode(_rows(html)[1][1]["src"])
    assert g0.shape[:2] == (72, 96)


def test_worst_and_best_are_disjoint_and_sorted(toy, tmp_path):
    ds, result = toy
    html = write_report(result, ds, tmp_path / "rep", n_examples=5).read_text()
    # only 2 queries have an AP: worst takes both, best is left empty
    assert re.findall(r"<b>query (\d+)</b>", html) == ["1", "0"]
    assert "The 2 worst queries" in html and "The 0 best queries" in html


def test_pr_curve_and_protocol_tables(toy, tmp_path):
    ds, result = toy
    result = dict(result)
    result["pr_curve"] = {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.8, 0.4]}
    result["metrics"] = dict(result["metrics"], **{"mAP (M)": 0.4321, "mAP (H)": 0.1234})
    result["protocols"] = {
        "medium": {"mAP": 0.4321, "mP@5": 0.55, "ap": [0.1, 0.2]},
        "hard": {"mAP": 0.1234, "mP@5": 0.25, "ap": [0.3, None]},
    }
    html = write_report(result, ds, tmp_path / "rep").read_text()
    assert "mean (R@k, P@k) points" not in html
    assert "medium (M)" in html and "hard (H)" in html
    assert "0.4321" in html and "0.1234" in html and "0.5500" in html
    assert "[0.1000" not in html  # per-query lists are left out of the tables


def test_per_query_must_match_the_data_set(toy, tmp_path):
    ds, result = toy
    bad = dict(result, per_query=[{"query": 9, "ap": 0.5, "top": []}])
    with pytest.raises(ValueError, match="query 9 but the data set has 3 queries"):
        write_report(bad, ds, tmp_path / "rep")
    with pytest.raises(ValueError, match="thumb_size"):
        write_report(result, ds, tmp_path / "rep", thumb_size=4)


def test_missing_extra_names_the_install_command(toy, tmp_path, monkeypatch):
    ds, result = toy
    monkeypatch.setitem(sys.modules, "jinja2", None)  # makes `import jinja2` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'cvretrieval\[report\]'"):
        write_report(result, ds, tmp_path / "rep")


# --------------------------------------------------------------------------- rendering
def test_trim_bottom_cuts_the_empty_background(tmp_path):
    from PIL import Image

    arr = np.full((300, 50, 3), 255, np.uint8)
    arr[40:60, 10:20] = (0, 0, 0)  # content ends at row 59
    Image.fromarray(arr).save(tmp_path / "p.png")
    assert _trim_bottom(tmp_path / "p.png", margin=10) is False
    assert Image.open(tmp_path / "p.png").size == (50, 70)
    arr[295:] = 0  # content reaching the bottom edge
    Image.fromarray(arr).save(tmp_path / "q.png")
    assert _trim_bottom(tmp_path / "q.png") is True


def test_render_without_chromium_says_how_to_install(tmp_path, monkeypatch):
    import cvretrieval.render as render

    (tmp_path / "a.html").write_text("<html></html>")
    monkeypatch.delenv(render.ENV_CHROMIUM, raising=False)
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(MissingExtraError, match="apt-get install chromium"):
        render_html_to_png(tmp_path / "a.html", tmp_path / "a.png")
    with pytest.raises(FileNotFoundError):
        render_html_to_png(tmp_path / "missing.html", tmp_path / "a.png")


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_report_on_ukbench_hog_evaluation(ukbench_dir, tmp_path):
    from cvretrieval import Retriever, evaluate, load_dataset

    ds = load_dataset(ukbench_dir)
    ret = Retriever("hog", n_jobs=1).build(ds.image_paths())
    result = evaluate(ret, ds, progress=False)
    out = write_report(result, ds, tmp_path / "rep", n_examples=3, thumb_size=64)
    html = out.read_text(encoding="utf-8")
    assert f"{result['metrics']['mAP']:.4f}" in html
    rows = _rows(html)
    assert len(rows) == 6 and all(len(r) == 11 for r in rows)
    # colours checked against UKBench's own rule: same group of 4 = relevant
    for row in rows:
        q = int(re.search(r"ukbench(\d+)", row[0]["title"]).group(1))
        for tile in row[1:]:
            n = int(re.search(r"ukbench(\d+)", tile["title"]).group(1))
            assert n != q  # the query itself is never among its results
            assert tile["class"] == ("ok" if n // 4 == q // 4 else "bad")
    # worst rows are ordered by increasing AP, best by decreasing AP, from per_query
    aps = sorted(p["ap"] for p in result["per_query"] if p["ap"] is not None)
    shown = [float(a) for a in re.findall(r"AP (\d\.\d{4})", html)]
    assert shown[:3] == [round(a, 4) for a in aps[:3]]
    assert shown[3:] == [round(a, 4) for a in aps[::-1][:3]]

    if find_chromium() is None:
        pytest.skip("headless Chromium not installed: PNG rendering not tested")
    png = render_html_to_png(out, tmp_path / "rep.png", width=1280, height=1800)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, 1800)
        arr = np.asarray(im.convert("RGB")).reshape(-1, 3)
    # the outlines are drawn in their colours (relevant green and irrelevant red tiles exist)
    for key in ("ok", "bad", "query"):
        rgb = np.array([int(COLORS[key][i : i + 2], 16) for i in (1, 3, 5)])
        assert np.count_nonzero(np.all(arr == rgb, axis=1)) > 100, key


def test_report_shows_ndcg(toy, tmp_path):
    ds, result = toy
    result = {**result, "metrics": {**result["metrics"], "NDCG@5": 0.4321, "NDCG@10": 0.5432,
                                    "NDCG@100": 0.6543}}
    html = write_report(result, ds, tmp_path / "rep").read_text()
    # a headline card and a column of the at-k table
    assert html.count("0.5432") >= 2
    assert "NDCG@k" in html and "0.4321" in html and "0.6543" in html
