"""Retriever: build, search, add, save/load bundles, bad input never stops a batch."""

from __future__ import annotations

import json
import sqlite3

import cv2
import numpy as np
import pytest

from cvretrieval.errors import BundleError, ImageReadError
from cvretrieval.retriever import Retriever


def write_rgb(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def rotate(img, angle):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderValue=(255, 255, 255))


@pytest.fixture
def gallery(tmp_path, make_textured):
    folder = tmp_path / "gallery"
    for i in range(12):
        write_rgb(folder / f"img{i:02d}.png", make_textured(100 + i))
    return folder


@pytest.fixture(scope="module")
def orb_retriever(tmp_path_factory):
    from conftest import textured_image

    folder = tmp_path_factory.mktemp("orbgal")
    for i in range(12):
        write_rgb(folder / f"img{i:02d}.png", textured_image(100 + i))
    emb_params = {"n_words": 64, "n_features": 300}
    from cvretrieval.embedders import make_embedder

    return Retriever(make_embedder("bovw-orb", **emb_params), n_jobs=1).build(folder), folder


def test_rotated_copy_ranks_its_source_first(orb_retriever, make_textured, tmp_path):
    ret, folder = orb_retriever
    query = write_rgb(tmp_path / "q.png", rotate(make_textured(103), 20))
    hits = ret.search(query, k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].path.endswith("img03.png"), hits
    assert hits[0].score > hits[1].score


def test_bbox_query_finds_the_cropped_source(orb_retriever, make_textured, tmp_path):
    ret, _ = orb_retriever
    # paste image 7 into the right half of a canvas whose left half is image 2; the box picks 7
    left, right = make_textured(102), make_textured(107)
    canvas = np.concatenate([left, right], axis=1)
    q = write_rgb(tmp_path / "both.png", canvas)
    h, w = right.shape[:2]
    hits = ret.search(q, k=3, bbox=(w, 0, 2 * w, h))
    assert hits[0].path.endswith("img07.png"), hits
    hits = ret.search(q, k=3, bbox=(0, 0, w, h))
    assert hits[0].path.endswith("img02.png"), hits


def test_hog_retriever_in_parallel_finds_a_brightened_copy(gallery, make_textured, tmp_path):
    ret = Retriever("hog", n_jobs=2, chunk_size=3).build(gallery)
    assert len(ret) == 12
    img = np.clip(make_textured(105).astype(int) * 0.8 + 30, 0, 255).astype(np.uint8)
    hits = ret.search(write_rgb(tmp_path / "q.png", img), k=3)
    assert hits[0].path.endswith("img05.png")


def test_bad_files_are_skipped_counted_and_cataloged(gallery, tmp_path):
    (gallery / "broken.jpg").write_bytes(b"this is not an image")
    (gallery / "empty.png").write_bytes(b"")
    good = (gallery / "img00.png").read_bytes()
    (gallery / "truncated.png").write_bytes(good[: len(good) // 2])
    ret = Retriever("hog", n_jobs=1).build(gallery)
    run = ret.last_run_
    assert run["images"] == 15 and run["indexed"] == 12 and run["skipped"] == 3
    assert sorted(f["path"].rsplit("/", 1)[1] for f in run["failed"]) == [
        "broken.jpg", "empty.png", "truncated.png"]
    bundle = ret.save(tmp_path / "b.cvret")
    catalog = json.loads((bundle / "manifest.json").read_text())["catalog"]
    con = sqlite3.connect(bundle / catalog)
    rows = con.execute("SELECT path, status, error FROM images WHERE status != 'ok'").fetchall()
    ok = {r[0] for r in con.execute("SELECT id FROM images WHERE status = 'ok'").fetchall()}
    con.close()
    assert len(rows) == 3 and all(r[2] for r in rows)
    # failed images never come back from a search
    D, ids, failed = ret.search_many([gallery / "img01.png"], k=20)
    assert failed == [] and set(ids[0][ids[0] >= 0].tolist()) <= ok


def test_all_images_unreadable_is_a_clear_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="none of the 1 images"):
        Retriever("hog", n_jobs=1).build(tmp_path)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no images to index"):
        Retriever("hog", n_jobs=1).build(tmp_path)


def test_unreadable_query_raises_image_read_error(orb_retriever, tmp_path):
    ret, _ = orb_retriever
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        ret.search(bad)
    D, ids, failed = ret.search_many([bad], k=3)
    assert failed == [0] and (ids == -1).all()


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf", "pq", "lsh"])
def test_save_load_gives_identical_results(orb_retriever, tmp_path, index, make_textured):
    _, folder = orb_retriever
    from cvretrieval.embedders import make_embedder

    ret = Retriever(make_embedder("bovw-orb", n_words=32, n_features=200), index=index, n_jobs=1)
    ret.build(folder)
    queries = [write_rgb(tmp_path / f"q{i}.png", rotate(make_textured(100 + i), 10))
               for i in range(3)]
    D1, I1, _ = ret.search_many(queries, k=5)
    ret.save(tmp_path / "bundle")
    again = Retriever.load(tmp_path / "bundle")
    D2, I2, _ = again.search_many(queries, k=5)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert {k: manifest["counts"][k] for k in ("images", "ok", "failed", "vectors")} == {
        "images": 12, "ok": 12, "failed": 0, "vectors": 12}
    assert manifest["embedder"]["name"] == "bovw"


def test_add_appends_with_the_fitted_vocabulary(orb_retriever, tmp_path, make_textured):
    ret, folder = orb_retriever
    ret.save(tmp_path / "b")
    loaded = Retriever.load(tmp_path / "b")
    vocab_before = loaded.embedder.vocabulary_.centers_.copy()
    more = tmp_path / "more"
    write_rgb(more / "new.png", make_textured(999))
    loaded.add([more / "new.png", folder / "img00.png"])  # the second is already indexed
    assert loaded.last_run_["indexed"] == 1 and loaded.last_run_["duplicates"] == 1
    assert len(loaded) == 13
    np.testing.assert_array_equal(loaded.embedder.vocabulary_.centers_, vocab_before)
    hits = loaded.search(write_rgb(tmp_path / "q.png", rotate(make_textured(999), 15)), k=1)
    assert hits[0].path.endswith("new.png")


def test_save_refuses_to_overwrite_a_non_bundle(orb_retriever, tmp_path):
    ret, _ = orb_retriever
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    with pytest.raises(BundleError, match="not a cvretrieval bundle"):
        ret.save(target)
    assert (target / "thesis.tex").read_text() == "do not delete"
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]  # no temporary left behind


def test_save_over_an_existing_bundle_replaces_it(orb_retriever, tmp_path):
    ret, _ = orb_retriever
    ret.save(tmp_path / "b")
    ret.save(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    back = Retriever.load(tmp_path / "b")
    assert back.paths == ret.paths and len(back) == len(ret)


def test_load_detects_inconsistent_bundles(orb_retriever, tmp_path):
    ret, _ = orb_retriever
    with pytest.raises(BundleError, match="not a bundle folder"):
        Retriever.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Retriever.load(tmp_path / "empty")
    b = ret.save(tmp_path / "b")
    np.save(b / "segments" / "000001" / "ids.npy", np.arange(3))
    with pytest.raises(BundleError, match="ids.npy"):
        Retriever.load(b).rows([0])
    b = ret.save(tmp_path / "c")
    m = json.loads((b / "manifest.json").read_text())
    m["format_version"] = 42
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format 42"):
        Retriever.load(b)


def test_build_is_reproducible(gallery):
    from cvretrieval.embedders import make_embedder

    def run():
        emb = make_embedder("bovw-orb", n_words=16, n_features=150, random_state=3)
        return Retriever(emb, n_jobs=1, random_state=3).build(gallery).embedder.vocabulary_.centers_

    np.testing.assert_array_equal(run(), run())


def test_feature_cache_is_shared_between_embedders(tmp_path, make_textured):
    """A second embedder with the same detector reads the cached features: same vectors,
    and it works even when extraction itself is made impossible."""
    import cv2

    from cvretrieval.embedders import make_embedder

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), make_textured(i))
    cache = tmp_path / "cache"
    a = Retriever(make_embedder("bovw-orb", n_words=8, n_features=200), n_jobs=1,
                  feature_cache=cache).build(folder, progress=False)
    files = list(cache.rglob("*.npz"))
    assert len(files) == 6
    emb = make_embedder("bovw-orb", n_words=8, n_features=200)

    def refuse(image):  # every image must come from the cache
        raise AssertionError("extract called although the features are cached")

    emb.extract = refuse
    emb.extract_batch = lambda images: [refuse(im) for im in images]
    b = Retriever(emb, n_jobs=1, feature_cache=cache).build(folder, progress=False)
    assert b.last_run_["indexed"] == 6
    va, vb = a.rows(range(6)), b.rows(range(6))
    np.testing.assert_allclose(va, vb, atol=1e-6)
