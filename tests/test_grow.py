"""A bundle that grows in place: add, remove, compact; kill -9 at any moment; two writers;
the same results as a bundle built at once; Dask equals joblib; memory flat in N."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_run, textured_image

from cvretrieval.retriever import Retriever


def _write_images(folder: Path, seeds, size=(96, 128)) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in seeds:
        p = folder / f"img{s:04d}.png"
        cv2.imwrite(str(p), textured_image(int(s), size)[:, :, ::-1])
        paths.append(p)
    return paths


def _results(ret: Retriever, queries, k=5) -> list[list[str]]:
    D, I, _ = ret.search_many(queries, k)  # noqa: E741
    return [[str(p) for p in ret.paths_of(row) if p is not None] for row in I]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return _write_images(tmp_path_factory.mktemp("photos"), range(40))


def test_grown_bundle_equals_bundle_built_at_once(photos, tmp_path):
    once = Retriever("hog", n_jobs=1).build(photos[:30], output=tmp_path / "once")
    once.remove([photos[3], photos[17]])
    grown = Retriever("hog", n_jobs=1).build(photos[:10], output=tmp_path / "grown")
    grown.add(photos[10:20])
    grown.add(photos[20:30])
    grown.remove([photos[3], photos[17]])
    assert len(grown) == len(once) == 28
    assert len(grown.bundle_.segments) == 3
    queries = photos[:30:3] + photos[30:33]
    assert _results(grown, queries) == _results(once, queries)
    for res in _results(grown, queries, k=30):
        assert str(photos[3].resolve()) not in res and str(photos[17].resolve()) not in res
    grown.compact()
    assert len(grown.bundle_.segments) == 1
    assert _results(grown, queries) == _results(once, queries)
    again = Retriever.load(tmp_path / "grown")
    assert _results(again, queries) == _results(once, queries)


def test_add_writes_only_new_segments(photos, tmp_path):
    ret = Retriever("hog", n_jobs=1).build(photos[:20], output=tmp_path / "b")
    seg1 = tmp_path / "b" / "segments" / "000001"
    before = {p: p.stat().st_mtime_ns for p in seg1.rglob("*") if p.is_file()}
    ret.add(photos[20:25])
    assert {p: p.stat().st_mtime_ns for p in seg1.rglob("*") if p.is_file()} == before
    assert ret.last_run_["indexed"] == 5 and len(ret) == 25
    ret.add(photos[20:25])  # already there: skipped and counted
    assert ret.last_run_["duplicates"] == 5 and len(ret) == 25


def test_removed_images_can_be_added_back(photos, tmp_path):
    ret = Retriever("hog", n_jobs=1).build(photos[:8], output=tmp_path / "b")
    assert ret.remove([photos[2]])["removed"] == 1
    assert photos[2].resolve().as_posix() not in sum(_results(ret, photos[:8], k=8), [])
    ret.add([photos[2]])
    assert _results(ret, [photos[2]], k=1) == [[str(photos[2].resolve())]]


def test_remove_missing_files(tmp_path):
    paths = _write_images(tmp_path / "p", range(6))
    ret = Retriever("hog", n_jobs=1).build(paths, output=tmp_path / "b")
    paths[1].unlink()
    run = ret.remove(missing=True)
    assert run["removed"] == 1 and len(ret) == 5


def test_cli_add_remove_compact_and_conflicting_options(photos, tmp_path):
    b = tmp_path / "b.cvret"
    folder = photos[0].parent
    cli_run("index", folder, "-o", b, "--features", "hog", "--n-jobs", "1", "-q")
    r = cli_run("index", folder, "-o", b, "--add", "--features", "bovw", "--words", "32",
                ok=False)
    assert r.exit_code == 2 and "--features" in r.output and "--words" in r.output
    r = cli_run("remove", b, photos[0], photos[1], "--json", "-")
    assert json.loads(r.stdout)["removed"] == 2
    r = cli_run("compact", b, "--json", "-")
    assert json.loads(r.stdout)["removed_dropped"] == 2
    r = cli_run("search", b, photos[0], "-k", "100000000000", "--json", "-")
    hits = json.loads(r.stdout)
    assert len(hits) == 38 and photos[0].name not in {Path(h["path"]).name for h in hits}


def test_search_k_is_capped_and_checked(photos, tmp_path):
    ret = Retriever("hog", n_jobs=1).build(photos[:5], output=tmp_path / "b")
    assert len(ret.search(photos[0], k=10**12)) == 5
    with pytest.raises(ValueError, match="positive integer"):
        ret.search(photos[0], k=0)
    with pytest.raises(ValueError, match="positive integer"):
        ret.search(photos[0], k=1e30)


_ADD_SCRIPT = textwrap.dedent("""
    import sys
    from cvretrieval.retriever import Retriever
    ret = Retriever.load(sys.argv[1], n_jobs=1)
    ret.add(sys.argv[2:])
""")


def _run_add(bundle, paths) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _ADD_SCRIPT, str(bundle), *map(str, paths)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_concurrent_adds_lose_no_image(photos, tmp_path):
    b = tmp_path / "b"
    Retriever("hog", n_jobs=1).build(photos[:10], output=b)
    p1 = _run_add(b, photos[10:25])
    p2 = _run_add(b, photos[25:40])
    for p in (p1, p2):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    ret = Retriever.load(b)
    assert len(ret) == 40
    assert {str(p) for p in ret.paths} == {str(p.resolve()) for p in photos}


@pytest.mark.parametrize("operation", ["add", "remove", "compact"])
def test_kill_9_leaves_old_or_new_content(photos, tmp_path, operation):
    b = tmp_path / "b"
    base = Retriever("hog", n_jobs=1).build(photos[:12], output=b)
    old = _results(base, photos[:4])
    script = {
        "add": _ADD_SCRIPT,
        "remove": "import sys\nfrom cvretrieval.retriever import Retriever\n"
                  "Retriever.load(sys.argv[1]).remove(sys.argv[2:])\n",
        "compact": "import sys\nfrom cvretrieval.retriever import Retriever\n"
                   "Retriever.load(sys.argv[1]).compact(retrain=True)\n",
    }[operation]
    args = {"add": photos[12:30], "remove": photos[5:8], "compact": []}[operation]
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", script, str(b), *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.3, 2.5)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        ret = Retriever.load(b)  # loads with the old or the new content
        n = len(ret)
        outcomes.add(n)
        assert n in {12, 12 + 18, 12 - 3} and n > 0
        res = _results(ret, photos[:4])
        if operation == "compact" or n == 12:
            assert res == old
        if operation == "add" and n == 30:  # done: the next loop must not add again
            break
        if operation == "remove" and n == 9:
            break
    with_writer = Retriever.load(b)
    with_writer.add([photos[39]])  # a writer cleans whatever a killed one left
    names = {p.name for p in (b / "segments").iterdir()}
    committed = {f"{s['number']:06d}" for s in json.loads((b / "manifest.json").read_text())
                 ["segments"]}
    assert names == committed
    assert not [p for p in b.iterdir() if p.name.startswith(".manifest")]


def test_pipeline_memory_does_not_grow_with_images(tmp_path):
    """A cheap embedder over many tiny images: the main process's peak memory is flat."""
    import cv2

    folder = tmp_path / "tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4000):
        cv2.imwrite(str(folder / f"{i:05d}.png"), rng.integers(0, 255, (16, 16, 3), np.uint8))
    code = textwrap.dedent("""
        import sys, resource
        from pathlib import Path
        from cvretrieval.bundle import BundleWriter, Catalog
        from cvretrieval.bundle.build import write_segments
        from cvretrieval.embedders.classical import HOGEmbedder
        from cvretrieval.io import list_images
        from cvretrieval.pipeline import Job, Pipeline
        paths = list_images(sys.argv[1])[: int(sys.argv[2])]
        emb = HOGEmbedder(size=64)  # 1,764-d: 7 KB an image if anything kept them
        root = Path(sys.argv[3])
        with BundleWriter(root) as w, Catalog(root / "c.sqlite", 0, write=True) as cat:
            items = Pipeline(n_jobs=1).map(Job(emb, "encode", 16), [
                (i, str(p), None) for i, p in enumerate(paths)])
            write_segments(lambda: w.new_segment(sparse=False, dim=emb.dim), cat, items,
                           [str(p) for p in paths], 0, segment_size=1000)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    peaks = {}
    for n in (400, 4000):
        out = subprocess.run([sys.executable, "-c", code, str(folder), str(n),
                              str(tmp_path / f"b{n}")], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        peaks[n] = int(out.stdout.split()[-1])
    assert peaks[4000] - peaks[400] < 8_000, peaks  # KiB


def test_dask_local_cluster_bundle_equals_joblib(photos, tmp_path):
    pytest.importorskip("distributed", reason="the dist extra (dask.distributed) is absent")
    a = Retriever("hog", n_jobs=2).build(photos[:16], output=tmp_path / "a")
    b = Retriever("hog", scheduler="local").build(photos[:16], output=tmp_path / "b")
    np.testing.assert_array_equal(a.rows(range(16)), b.rows(range(16)))
    assert _results(a, photos[:16]) == _results(b, photos[:16])


def test_dask_remote_scheduler_with_two_workers(photos, tmp_path):
    distributed = pytest.importorskip("distributed",
                                      reason="the dist extra (dask.distributed) is absent")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    try:
        r = cli_run("index", photos[0].parent, "-o", tmp_path / "d", "--features", "hog",
                    "--scheduler", cluster.scheduler_address, "-q", "--json", "-")
        assert json.loads(r.stdout)["indexed"] == 40
    finally:
        cluster.close()
    a = Retriever("hog", n_jobs=1).build(photos, output=tmp_path / "a")
    d = Retriever.load(tmp_path / "d")
    assert _results(a, photos[:6]) == _results(d, photos[:6])
    assert os.environ.get("CVRET_SCHEDULER") is None


def test_index_counts_and_lists_entries_it_cannot_read(tmp_path):
    """A FIFO and a link loop inside the folder are reported, not silently dropped."""
    folder = tmp_path / "imgs"
    _write_images(folder, range(4))
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    r = cli_run("index", folder, "-o", tmp_path / "b", "--features", "hog", "--n-jobs", "1",
                "--json", "-")
    run = json.loads(r.stdout)
    assert (run["images"], run["indexed"], run["skipped"]) == (6, 4, 2)
    reasons = {Path(f["path"]).name: f["error"] for f in run["failed"]}
    assert "FIFO" in reasons["pipe.jpg"] and "loop" in reasons["loop.jpg"]


def test_tiny_image_is_catalogued_without_features_and_query_warns(tmp_path, caplog):
    import cv2

    from cvretrieval.embedders import make_embedder

    paths = _write_images(tmp_path / "imgs", range(5), size=(240, 320))
    tiny = tmp_path / "imgs" / "tiny.png"
    cv2.imwrite(str(tiny), np.full((3, 3, 3), 128, np.uint8))
    emb = make_embedder("bovw-orb", n_words=8)
    ret = Retriever(emb, n_jobs=1).build([*paths, tiny], output=tmp_path / "b")
    assert len(ret) == 5 and ret.last_run_["skipped"] == 1
    assert "no features" in ret.last_run_["failed"][0]["error"]
    assert ret.catalog.ids_with_status("nofeatures").tolist() == [5]
    with caplog.at_level("WARNING"):
        ret.search(tiny, k=3)
    assert "has no features" in caplog.text


def test_duplicate_ids_in_a_segment_are_refused(tmp_path):
    from cvretrieval.errors import BundleError

    paths = _write_images(tmp_path / "imgs", range(4))
    Retriever("hog", n_jobs=1).build(paths, output=tmp_path / "b")
    np.save(tmp_path / "b" / "segments" / "000001" / "ids.npy", np.array([0, 1, 1, 3]))
    with pytest.raises(BundleError, match="repeated"):
        Retriever.load(tmp_path / "b").rows([0])


def test_compact_retrain_refits_the_ivf_list_count(tmp_path):
    """An IVF bundle started small keeps its list count through adds; compact --retrain
    (or compact when the count no longer fits) trains it for the current size."""
    paths = _write_images(tmp_path / "imgs", range(130), size=(48, 64))
    ret = Retriever("hog", index="ivf", n_jobs=1).build(paths[:40], output=tmp_path / "b")
    assert ret.config()["index"]["factory"] == "IVF1,Flat"
    ret.add(paths[40:])
    assert Retriever.load(tmp_path / "b").config()["index"]["factory"] == "IVF1,Flat"
    run = ret.compact(retrain=True)
    # the preset for 130 vectors (index.preset_nlist(130) lists)
    from cvretrieval.index import preset_nlist

    assert run["retrained"]
    assert ret.config()["index"]["factory"] == f"IVF{preset_nlist(130)},Flat" != "IVF1,Flat"
    assert _results(ret, paths[:3], k=1) == [[str(p.resolve())] for p in paths[:3]]


def test_load_keeps_the_index_budget_and_search_settings(tmp_path):
    """A loaded bundle keeps its --max-memory, nprobe and efSearch: compact --retrain
    used to choose without any budget (100k HOG vectors: HNSW32, 3 GiB, for a bundle
    built under 2G)."""
    paths = _write_images(tmp_path / "imgs", range(20), size=(48, 64))
    Retriever("hog", index="auto", max_memory="64M", nprobe=7, ef_search=33,
              n_jobs=1).build(paths, output=tmp_path / "b")
    loaded = Retriever.load(tmp_path / "b")
    assert (loaded.max_memory, loaded.nprobe, loaded.ef_search) == ("64M", 7, 33)
    loaded.compact(retrain=True)
    config = Retriever.load(tmp_path / "b").config()["index"]
    assert (config["max_memory"], config["nprobe"], config["ef_search"]) == ("64M", 7, 33)


def test_asmk_bundle_builds_grows_searches_and_verifies(tmp_path):
    """ASMK's per-image result is not a vector: segments keep its codes, its own inverted
    file scores them, and add/remove/compact/verification work as for vectors."""
    from cvretrieval.embedders import make_embedder

    paths = _write_images(tmp_path / "imgs", range(12), size=(240, 320))
    emb = make_embedder("asmk", n_words=64, n_features=300, random_state=0)
    ret = Retriever(emb, n_jobs=1, rerank=["sv"]).build(paths[:8], output=tmp_path / "b")
    assert ret.bundle_.manifest["index"]["kind"] == "items"
    assert _results(ret, paths[:8], k=1) == [[str(p.resolve())] for p in paths[:8]]
    ret.add(paths[8:])
    ret.remove([paths[0]])
    back = Retriever.load(tmp_path / "b")
    assert len(back) == 11
    assert _results(back, paths[1:], k=1) == [[str(p.resolve())] for p in paths[1:]]
    assert str(paths[0].resolve()) not in sum(_results(back, paths[:3], k=12), [])
    back.compact()
    hits = back.search(paths[5], k=3, rerank="sv")
    assert hits[0].path == str(paths[5].resolve())
    # query expansion of ASMK codes (expand_codes): the image itself stays first
    assert back.search(paths[5], k=3, rerank="qe")[0].path == str(paths[5].resolve())


def test_whitening_learned_on_a_separate_set(tmp_path):
    from cvretrieval.pipeline import embed_paths
    from cvretrieval.whitening import PCAWhitening

    gallery = _write_images(tmp_path / "gallery", range(30))
    train = _write_images(tmp_path / "train", range(100, 140))
    ret = Retriever("hog", n_jobs=1, pca_whiten=8, whiten_on=tmp_path / "train").build(
        gallery, output=tmp_path / "b")
    X, _, _ = embed_paths(ret.embedder, train, fit=False, n_jobs=1)
    expected = PCAWhitening(n_components=8, shrinkage=0.5, random_state=0).fit(X)
    np.testing.assert_allclose(ret.whitening_.transform(X[:3]), expected.transform(X[:3]),
                               atol=1e-4)
    on_gallery = Retriever("hog", n_jobs=1, pca_whiten=8).build(gallery, output=tmp_path / "g")
    assert not np.allclose(on_gallery.whitening_.transform(X[:3]), expected.transform(X[:3]),
                           atol=1e-3)
    assert Retriever.load(tmp_path / "b").dim == 8
    with pytest.raises(ValueError, match="--pca-whiten"):
        Retriever("hog", whiten_on=tmp_path / "train").build(gallery, output=tmp_path / "x")


def test_verification_with_words_and_descriptors(tmp_path):
    import cv2

    from cvretrieval.embedders import make_embedder

    paths = _write_images(tmp_path / "imgs", range(10), size=(240, 320))
    copy = tmp_path / "copy.png"
    img = cv2.imread(str(paths[4]))
    h, w = img.shape[:2]
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.9), (w, h))
    cv2.imwrite(str(copy), rot)
    emb = make_embedder("bovw-orb", n_words=16)
    ret = Retriever(emb, n_jobs=1, rerank=["sv"], sv_matcher="words+desc").build(
        paths, output=tmp_path / "b")
    store = ret.feature_store()
    assert store.has_words and store.has_descriptors
    back = Retriever.load(tmp_path / "b")
    assert back.sv_matcher == "words+desc"
    assert back.search(copy, k=3)[0].path == str(paths[4].resolve())


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_flat_bundle_reads_its_vectors_and_finds_exact_neighbours(photos, tmp_path, index):
    """An exact Flat bundle keeps one copy of its vectors (no index.bin shard); grown and
    loaded again, its search equals brute force over the stored vectors."""
    import faiss

    ret = Retriever("hog", n_jobs=1, index=index).build(photos[:12], output=tmp_path / "b")
    ret.add(photos[12:20])
    ret.remove([photos[5]])
    shards = sorted((tmp_path / "b" / "segments").glob("*/index.bin"))
    assert (shards == []) == (index == "flat")
    again = Retriever.load(tmp_path / "b")
    X, _, _ = again.embed_queries(photos[20:24])
    D, I = again.search_vectors(X, 5)  # noqa: E741
    ids = np.concatenate([s.ids for s in again.bundle_.segments])
    V = np.concatenate([np.asarray(again.bundle_.rows(s.ids)) for s in again.bundle_.segments])
    live = ~np.isin(ids, again.bundle_.catalog.ids_with_status("removed"))
    assert live.sum() == 19
    _, P = faiss.knn(X, V[live], 5, metric=faiss.METRIC_INNER_PRODUCT)
    if index == "flat":
        np.testing.assert_array_equal(I, ids[live][P])
    else:  # 19 vectors: the graph search is exact too
        assert (I[:, 0] == ids[live][P][:, 0]).all()


def test_one_query_searches_with_one_faiss_thread_and_restores_it(photos, tmp_path, monkeypatch):
    """A single query's assignment and search run on one OpenMP thread (threads spin
    against other processes on a busy machine); the caller's setting comes back after."""
    import faiss

    from cvretrieval import search as search_mod

    ret = Retriever("hog", n_jobs=1).build(photos[:6], output=tmp_path / "b.cvret")
    seen: list[int] = []
    real = search_mod._search_images

    def spy(*args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "_search_images", spy)
    faiss.omp_set_num_threads(2)
    try:
        ret.search(photos[0], k=3)
        ret.search_many(photos[:9], k=3)  # more than FEW_QUERIES: Faiss keeps its threads
        assert seen == [1, 2]
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)


def test_manifest_counts_follow_adds_and_removes_without_recounting(tmp_path, monkeypatch):
    """The counts a commit writes are the committed ones updated by what changed (an add
    reads only its own catalog rows), and always equal a full recount of the catalog."""
    from cvretrieval.bundle import Catalog

    paths = _write_images(tmp_path / "p", range(12))
    bad = tmp_path / "p" / "broken.png"
    bad.write_bytes(b"not an image")
    firsts: list[int] = []
    real = Catalog.counts

    def spy(self, first=0):
        firsts.append(first)
        return real(self, first)

    monkeypatch.setattr(Catalog, "counts", spy)

    def recount(ret):
        m = ret.bundle_.manifest
        with Catalog(ret.bundle_.root / m["catalog"], m["next_id"]) as cat:
            full = real(cat)
        assert {s: m["counts"][s] for s in full} == full
        return full

    ret = Retriever("hog", n_jobs=1).build([*paths[:6], bad], output=tmp_path / "b")
    assert recount(ret) == {"ok": 6, "failed": 1, "nofeatures": 0, "removed": 0}
    firsts.clear()
    ret.add(paths[6:10])
    assert firsts == [7]  # only the 4 new rows were counted
    ret.remove([paths[1], paths[7]])
    ret.remove([paths[1]])  # already removed: nothing changes
    ret.remove([bad])  # a failed row becomes removed
    assert recount(ret) == {"ok": 8, "failed": 0, "nofeatures": 0, "removed": 3}
    ret.add([paths[1], *paths[10:12]])  # one removed image comes back as a new row
    assert recount(ret) == {"ok": 11, "failed": 0, "nofeatures": 0, "removed": 3}
    paths[2].unlink()
    ret.remove(missing=True)
    ret.compact()
    assert recount(ret) == {"ok": 10, "failed": 0, "nofeatures": 0, "removed": 4}
    assert len(Retriever.load(tmp_path / "b")) == 10


def test_packed_chunk_round_trips_every_field():
    """What a worker sends back (one stacked array for dense vectors) unpacks to the
    same items; anything else (sparse rows, key points, mixed shapes) goes as it is."""
    import pickle

    import scipy.sparse as sp

    from cvretrieval.pipeline import Item, pack_items, unpack_items

    rng = np.random.default_rng(0)
    dense = [Item(3, "a" * 40, 10, (4, 5), rng.random(6).astype(np.float32)),
             Item(4, error="cannot read x"),
             Item(5, "b" * 40, 11, (6, 7, 3), rng.random(6).astype(np.float32),
                  keypoints={"k": 1}, words=np.arange(3))]
    sparse = [Item(0, "c" * 40, 1, (2, 2), sp.csr_matrix(rng.random((1, 6)))), Item(1)]
    mixed = [Item(0, value=np.zeros(3, np.float32)), Item(1, value=np.zeros(4, np.float32))]
    for items in (dense, sparse, mixed, []):
        packed = pickle.loads(pickle.dumps(pack_items(items)))
        back = unpack_items(packed)
        assert len(back) == len(items)
        for a, b in zip(items, back, strict=True):
            for name in ("position", "sha1", "n_bytes", "shape", "error", "keypoints"):
                assert getattr(a, name) == getattr(b, name), name
            for name in ("value", "words"):
                x, y = getattr(a, name), getattr(b, name)
                assert (x is None) == (y is None), name
                if sp.issparse(x):
                    np.testing.assert_array_equal(x.toarray(), y.toarray())
                elif x is not None:
                    np.testing.assert_array_equal(x, y)
                    assert x.dtype == y.dtype
    assert pack_items(dense)[5].shape == (2, 6)  # the two vectors travel as one array
    assert pack_items(mixed)[5] is None


def test_refined_bundle_ranks_by_its_stored_vectors(photos, tmp_path):
    """A bundle with PQ codes re-ranks its candidates by the exact vectors its segments
    keep: with every image a candidate, its search is brute force over those vectors,
    after an add, a remove and a reload (the setting is kept in the manifest)."""
    import faiss

    ret = Retriever("hog", index="PQ10x4np", refine=100, n_jobs=1).build(
        photos[:20], output=tmp_path / "b")
    ret.add(photos[20:36])
    ret.remove([photos[7]])
    again = Retriever.load(tmp_path / "b")
    assert again.refine == 100
    X, _, _ = again.embed_queries(photos[36:40])
    D, I = again.search_vectors(X, 5)  # noqa: E741
    ids = np.concatenate([s.ids for s in again.bundle_.segments])
    V = np.asarray(again.bundle_.rows(ids))
    live = ~np.isin(ids, again.bundle_.catalog.ids_with_status("removed"))
    S, P = faiss.knn(X, V[live], 5, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(I, ids[live][P])
    np.testing.assert_allclose(D, S, rtol=1e-5, atol=1e-5)
    plain = Retriever.load(tmp_path / "b")
    plain.refine = 0
    plain.index.refine = 0
    assert not np.array_equal(plain.search_vectors(X, 5)[1], I)  # the codes alone differ


def test_cli_refine_at_build_and_search(photos, tmp_path):
    """`cvret index --refine N` keeps N in the bundle; `cvret search --refine 0` uses the
    codes' approximate scores. An indexed photo as its own query: the exact inner product
    of its unit-norm HOG vector with itself is 1; 4-bit codes only approximate it."""
    b = tmp_path / "b.cvret"
    cli_run("index", photos[0].parent, "-o", b, "--features", "hog", "--index", "PQ10x4np",
            "--refine", "50", "--n-jobs", "1", "-q")
    assert json.loads((b / "manifest.json").read_text())["index"]["config"]["refine"] == 50
    exact = json.loads(cli_run("search", b, photos[4], "-k", "3", "--json", "-").stdout)
    codes = json.loads(cli_run("search", b, photos[4], "-k", "3", "--refine", "0",
                               "--json", "-").stdout)
    assert Path(exact[0]["path"]).name == photos[4].name
    assert exact[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert abs(codes[0]["score"] - 1.0) > 1e-3
    r = cli_run("search", b, photos[4], "--refine", "-1", ok=False)
    assert r.exit_code == 2
    sparse = tmp_path / "s.cvret"
    cli_run("index", photos[0].parent, "-o", sparse, "--features", "bovw", "--words", "16",
            "--index", "sparse", "--n-jobs", "1", "-q")
    r = cli_run("search", sparse, photos[4], "--refine", "5", ok=False)
    assert r.exit_code == 2 and "scores exactly" in r.output
