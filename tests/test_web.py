"""The web demo: its pure helpers, ``serve``'s checks, and the page driven by Streamlit's AppTest.

The page tests build small HOG bundles from synthetic images and compare what the page
shows with ``Retriever.search`` and ``cvret search --bbox`` for the same inputs.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cvretrieval
from cvretrieval.errors import BundleError, ImageReadError, MissingExtraError
from cvretrieval.web import APP_PATH, serve, streamlit_command
from cvretrieval.web.core import (
    box_from_rect,
    check_box,
    decode_upload,
    describe_embedder,
    display_copy,
    parse_app_args,
    read_manifest,
    rerank_options,
    run_search,
)

N_IMAGES = 8
NO_WEB = "the web extra is not installed (pip install 'cvretrieval[web]')"


def _png_header_only(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


BOMB_PNG = _png_header_only(30000, 30000)  # 900 megapixels declared in a 57-byte file


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from conftest import textured_image

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(N_IMAGES):
        path = folder / f"img{i}.png"
        path.write_bytes(png_bytes(textured_image(300 + i)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def bundle(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "hog.cvret"
    cvretrieval.Retriever("hog", n_jobs=1).build(photos).save(out)
    return out


@pytest.fixture(scope="module")
def bundle_small(photos, tmp_path_factory):
    """A second bundle over the same images with a different configuration."""
    out = tmp_path_factory.mktemp("bundles") / "hog-160.cvret"
    cvretrieval.Retriever("hog", n_jobs=1, max_side=160).build(photos).save(out)
    return out


# --- pure helpers -------------------------------------------------------------------------
def test_parse_app_args():
    s = parse_app_args(["--bundle", "a", "--bundle", "b", "--report", "r", "--max-upload-mb", "3"])
    assert s.bundles == [Path("a"), Path("b")] and s.report == Path("r") and s.max_upload_mb == 3
    assert parse_app_args([]).max_upload_mb == 20 and parse_app_args([]).report is None
    with pytest.raises(SystemExit):
        parse_app_args(["--max-upload-mb", "0"])


def test_box_from_rect_scales_and_clips():
    # a 40x30 rectangle at (10, 5) on a copy shown at half size, image 100x60
    assert box_from_rect({"left": 10, "top": 5, "width": 40, "height": 30}, 2.0, (100, 60)) == (
        20.0, 10.0, 100.0, 60.0)  # x1 = 100 and y1 = 70 clipped to 100 x 60
    assert box_from_rect({"left": -3, "top": 0, "width": 5, "height": 5}, 1.0, (50, 50)) == (
        0.0, 0.0, 2.0, 5.0)


def test_check_box():
    assert check_box([1, 2, 30, 40], (50, 50)) == (1.0, 2.0, 30.0, 40.0)
    with pytest.raises(ValueError, match="empty"):
        check_box([30, 2, 10, 40], (50, 50))
    with pytest.raises(ValueError, match="outside"):
        check_box([60, 0, 70, 10], (50, 50))


def test_display_copy_scale_maps_back_to_original():
    image = np.zeros((300, 900, 3), np.uint8)
    small, scale = display_copy(image, 300)
    assert small.shape == (100, 300, 3) and scale == pytest.approx(3.0)
    same, one = display_copy(image[:100, :200], 300)  # never upscaled
    assert same.shape == (100, 200, 3) and one == 1.0


def test_decode_upload(make_textured):
    img = make_textured(1)
    assert np.array_equal(decode_upload(png_bytes(img), "a.png", 20), img)  # lossless, full size
    with pytest.raises(ImageReadError, match=r"notes\.png.*not a recognised image format"):
        decode_upload(b"hello, this is text", "notes.png", 20)
    with pytest.raises(ImageReadError, match=r"cut\.png.*truncated"):
        decode_upload(png_bytes(img)[:3000], "cut.png", 20)
    with pytest.raises(ImageReadError, match=r"big\.png is 1\.5 MB; uploads are limited to 1 MB"):
        decode_upload(b"\0" * 1_500_000, "big.png", 1)


def test_describe_embedder():
    assert describe_embedder({"name": "bovw", "params": {"detector": "sift", "n_words": 1000}}) == (
        "bovw-sift, 1000 words")
    assert describe_embedder({"name": "hog", "params": {}}) == "hog"


class _Plain:
    def search(self, query, k=10, bbox=None):
        return []

    def config(self):
        return {"rerank": ["sv"]}  # claimed, but search cannot take it


class _Offers(_Plain):
    def __init__(self, offered):
        self.supports_rerank = offered
        self.calls = []

    def search(self, query, k=10, bbox=None, rerank=()):
        self.calls.append({"k": k, "bbox": bbox, "rerank": rerank})
        return []


class _FromConfig(_Offers):
    def __init__(self, cfg):
        super().__init__(None)
        del self.supports_rerank
        self.cfg = cfg

    def config(self):
        return self.cfg


def test_rerank_options_read_defensively():
    assert rerank_options(_Plain()) == ()
    assert rerank_options(_Offers(True)) == ("sv", "qe")
    assert rerank_options(_Offers(("qe", "sv", "other"))) == ("sv", "qe")
    assert rerank_options(_Offers("qe")) == ("qe",)
    assert rerank_options(_Offers(False)) == ()
    assert rerank_options(_FromConfig({"rerank": ["qe"]})) == ("qe",)
    assert rerank_options(_FromConfig({})) == ()
    assert rerank_options(object()) == ()


def test_run_search_passes_rerank_only_when_asked():
    ret = _Offers(True)
    run_search(ret, "q.png", 3, (0, 0, 5, 5))
    run_search(ret, "q.png", 4, None, ["sv"])
    assert ret.calls == [{"k": 3, "bbox": (0, 0, 5, 5), "rerank": ()},
                         {"k": 4, "bbox": None, "rerank": ("sv",)}]
    hits, seconds = run_search(_Plain(), "q.png", 2)  # no rerank keyword for plain retrievers
    assert hits == [] and seconds >= 0


# --- serve: checks before anything starts ---------------------------------------------------
def test_read_manifest_says_what_is_wrong(tmp_path, bundle):
    assert read_manifest(bundle)["format"] == "cvretrieval-bundle"
    with pytest.raises(BundleError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        read_manifest(tmp_path / "f.txt")
    with pytest.raises(BundleError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "cvretrieval-bundle",
                                                         "format_version": 999}))
    with pytest.raises(BundleError, match="format 999"):
        read_manifest(tmp_path)


def test_serve_refuses_bad_input_without_starting(tmp_path, bundle, monkeypatch):
    import subprocess

    def no_popen(*a, **k):
        raise AssertionError("serve must not start a server for bad input")

    monkeypatch.setattr(subprocess, "Popen", no_popen)
    monkeypatch.setattr("cvretrieval.web.require_web_extra", lambda: None)  # runs without the extra
    with pytest.raises(BundleError, match="no manifest.json"):
        serve([bundle, tmp_path])
    with pytest.raises(ValueError, match="at least one bundle"):
        serve([])
    with pytest.raises(ValueError, match="port"):
        serve([bundle], port=70000)


def test_serve_names_the_extra_when_missing(monkeypatch, bundle):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit_cropper" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"streamlit-cropper.*'cvretrieval\[web\]'"):
        serve([bundle])


def test_streamlit_command(tmp_path):
    cmd = streamlit_command([tmp_path / "a", tmp_path / "b"], "127.0.0.1", 9123, tmp_path / "rep",
                            max_upload_mb=7)
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    opts = dict(zip(cmd[5:cmd.index("--"):2], cmd[6:cmd.index("--"):2], strict=True))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "9123"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.maxUploadSize"] == "7"
    script = parse_app_args(cmd[cmd.index("--") + 1:])
    assert script.bundles == [tmp_path / "a", tmp_path / "b"] and script.report == tmp_path / "rep"
    assert script.max_upload_mb == 7


# --- the page, through AppTest --------------------------------------------------------------
@pytest.fixture
def app(monkeypatch):
    testing = pytest.importorskip("streamlit.testing.v1", reason=NO_WEB)

    def start(*args):
        monkeypatch.setattr(sys, "argv", [str(APP_PATH), *map(str, args)])
        return testing.AppTest.from_file(str(APP_PATH), default_timeout=120).run()

    return start


def no_errors(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def result_images(at):
    return [im for im in at.image if im.captions and im.captions[0].startswith("#")]


def test_pick_box_and_k_give_the_same_ranking_as_search_and_the_cli(app, bundle, photos):
    at = app("--bundle", bundle)
    no_errors(at)
    at.radio(key="source").set_value("Pick an indexed image").run()
    at.selectbox(key="pick_image-0").set_value(3).run()  # catalog id 3 = img3.png
    no_errors(at)
    # the whole image first: the query itself must come first with cosine similarity 1
    hits = at.session_state["results"][str(bundle)]
    assert Path(hits[0]["path"]).name == "img3.png"
    assert hits[0]["score"] == pytest.approx(1, abs=1e-4)

    at.radio(key="region").set_value("Type a box").run()
    boxes = {n.label: n for n in at.number_input}
    assert [boxes[n].value for n in ("x0", "y0", "x1", "y1")] == [0, 0, 320, 240]  # the image size
    boxes["y0"].set_value(30)
    boxes["x1"].set_value(200)
    at.slider(key="k").set_value(4).run()
    no_errors(at)

    ret = cvretrieval.Retriever.load(bundle, n_jobs=1)
    expected = ret.search(str(photos[3].resolve()), k=4, bbox=(0, 30, 200, 240))
    assert len(expected) == 4
    shown = at.session_state["results"][str(bundle)]
    assert [h["path"] for h in shown] == [h.path for h in expected]
    assert [h["score"] for h in shown] == pytest.approx([h.score for h in expected], abs=1e-5)
    captions = [im.captions[0] for im in result_images(at)]
    assert captions == [f"#{h.rank} · {h.score:.3f} · {Path(h.path).name}" for h in expected]

    from cvretrieval.cli import main

    res = CliRunner().invoke(main, ["search", str(bundle), str(photos[3]), "-k", "4",
                                    "--bbox", "0,30,200,240", "--json", "-"])
    assert res.exit_code == 0, res.output
    assert [h["path"] for h in json.loads(res.stdout)] == [h["path"] for h in shown]


def test_upload_finds_its_source_and_matches_array_search(app, bundle, photos):
    at = app("--bundle", bundle)
    image = np.asarray(Image.open(photos[5]).convert("RGB"))
    crop = image[20:220, 30:290]  # most of img5
    at.file_uploader(key="upload").set_value(("crop.png", png_bytes(crop), "image/png")).run()
    no_errors(at)
    shown = at.session_state["results"][str(bundle)]
    assert Path(shown[0]["path"]).name == "img5.png"  # known answer: the crop's source first
    expected = cvretrieval.Retriever.load(bundle, n_jobs=1).search(crop, k=len(shown))
    assert [h["path"] for h in shown] == [h.path for h in expected]
    assert len(result_images(at)) == min(10, N_IMAGES)  # default K = 10, capped by the bundle


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.png", b"these are words, not pixels", "not a recognised image format"),
        ("cut.png", None, "truncated"),
        ("huge.png", b"\x89PNG" + b"\0" * 1_200_000, "limited to 1 MB"),
        ("bomb.png", BOMB_PNG, "too large"),
        ("empty.png", b"", "empty"),
        ("words.jpg", b"a text file with a photo's name", "not a recognised image format"),
    ],
)
def test_bad_uploads_show_a_message_not_a_traceback(app, bundle, photos, name, data, message):
    if data is None:
        data = photos[0].read_bytes()[:2000]
    at = app("--bundle", bundle, "--max-upload-mb", 1)
    at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(message in e and name in e for e in errors), errors
    assert not result_images(at)


def test_empty_typed_box_is_refused(app, bundle):
    at = app("--bundle", bundle)
    at.radio(key="source").set_value("Pick an indexed image").run()
    at.radio(key="region").set_value("Type a box").run()
    boxes = {n.label: n for n in at.number_input}
    boxes["x0"].set_value(250)
    boxes["x1"].set_value(100)
    at.run()
    assert not at.exception
    assert any("empty" in e.value for e in at.error)
    assert not result_images(at)


def test_drag_mode_starts_with_a_box_inside_the_image(app, bundle):
    pytest.importorskip("streamlit_cropper", reason="streamlit-cropper is not installed")
    at = app("--bundle", bundle)
    at.radio(key="source").set_value("Pick an indexed image").run()
    at.radio(key="region").set_value("Drag a box").run()
    no_errors(at)
    # without a browser the cropper returns its default box: 20 %..80 % of the 320x240 image
    assert any("box (64, 48, 256, 192)" in c.value for c in at.caption)
    assert len(result_images(at)) == min(10, N_IMAGES)


def test_two_bundles_side_by_side_and_full_image(app, bundle, bundle_small):
    at = app("--bundle", bundle, "--bundle", bundle_small)
    at.radio(key="source").set_value("Pick an indexed image").run()
    at.selectbox(key="pick_bundle").set_value(1).run()
    at.slider(key="k").set_value(3).run()
    no_errors(at)
    results = at.session_state["results"]
    assert list(results) == [str(bundle), str(bundle_small)]
    assert all(len(hits) == 3 for hits in results.values())
    assert all(Path(h[0]["path"]).name == "img0.png" for h in results.values())
    assert [s.value for s in at.subheader] == ["hog.cvret", "hog-160.cvret"]
    assert sum(c.value.startswith("hog · top 3 of 8 · query time") for c in at.caption) == 2
    assert len(result_images(at)) == 6
    at.button(key="view-1-2").click().run()  # second bundle, rank 2
    no_errors(at)
    second = Path(results[str(bundle_small)][1]["path"])
    assert any(second.name in m.value and "#2" in m.value for m in at.markdown)


def test_rerank_toggles_appear_only_when_offered(app, bundle, photos, monkeypatch):
    from cvretrieval.retriever import Retriever

    at = app("--bundle", bundle)
    # a plain bundle offers query expansion only (no stored key points)
    assert [t.label for t in at.toggle] == ["Query expansion"]

    calls = []
    plain = Retriever.search

    def search(self, query, k=10, bbox=None, rerank=None):
        calls.append(rerank)
        return plain(self, query, k=k, bbox=bbox, rerank=rerank)

    monkeypatch.setattr(Retriever, "search", search)
    at.radio(key="source").set_value("Pick an indexed image").run()
    assert calls[-1] == ()  # toggles off: no re-ranking, passed explicitly
    at.toggle(key="rerank-qe").set_value(True).run()
    no_errors(at)
    assert calls[-1] == ("qe",)
    assert any("re-ranked: qe" in c.value for c in at.caption)

    # a retriever without re-ranking gets no toggles and no rerank argument
    monkeypatch.setattr(Retriever, "supports_rerank", (), raising=False)
    at = app("--bundle", bundle)
    assert len(at.toggle) == 0


def test_report_page(app, bundle, tmp_path):
    at = app("--bundle", bundle)
    at.switch_page("report_page.py").run()
    assert not at.exception and "No report was given" in at.info[0].value

    at = app("--bundle", bundle, "--report", tmp_path)
    at.switch_page("report_page.py").run()
    assert not at.exception and "index.html does not exist" in at.warning[0].value

    (tmp_path / "index.html").write_text("<html><body><h1>mAP 0.873</h1></body></html>")
    at.run()
    frames = at.get("iframe")
    assert len(frames) == 1 and "mAP 0.873" in frames[0].proto.srcdoc


def test_unreadable_bundle_is_reported_on_the_page(app, bundle, tmp_path):
    broken = tmp_path / "broken.cvret"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    at = app("--bundle", broken, "--bundle", bundle)
    assert not at.exception
    assert any("broken.cvret" in e.value for e in at.error)
    at.radio(key="source").set_value("Pick an indexed image").run()
    assert list(at.session_state["results"]) == [str(bundle)]  # the good bundle still works


def test_cli_serve_checks_the_extra_before_saying_it_serves(monkeypatch, bundle):
    import importlib.util

    from conftest import cli_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else real(name, *a))
    r = cli_run("serve", bundle, ok=False)
    assert r.exit_code == 1 and "cvretrieval[web]" in r.output
    assert "serving" not in r.output
