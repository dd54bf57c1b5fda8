"""The bundle's storage layer: live catalog, manifest checks, segments, the writer lock and
garbage left by killed writers."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from cvretrieval.bundle import Bundle, BundleWriter, Catalog, CatalogEntry, read_manifest
from cvretrieval.bundle.segments import Segment
from cvretrieval.errors import BundleError


def _manifest(root, segments, next_id, cat="catalog-000001.sqlite", emb="embedder-000001"):
    (root / emb).mkdir(exist_ok=True)
    return {
        "embedder": {"name": "hog", "params": {}, "dim": 4, "dir": emb, "checksums": {}},
        "index": {"kind": "faiss", "spec": "flat", "dim": 4, "template": "index-000001.bin"},
        "metric": "ip", "max_side": 640, "random_state": 0, "options": {}, "catalog": cat,
        "segments": segments, "next_id": next_id,
        "counts": {"vectors": sum(s["n"] for s in segments)},
    }


def _write_segment(w, ids, dim=4):
    number, seg = w.new_segment(sparse=False, dim=dim)
    seg.append(np.asarray(ids, np.int64), np.random.default_rng(0).random((len(ids), dim)))
    seg.close()
    return {"number": number, "n": seg.n, "first_id": seg.first_id, "last_id": seg.last_id}


def test_catalog_is_live_and_limited_to_committed_ids(tmp_path):
    path = tmp_path / "c.sqlite"
    with Catalog(path, 0, write=True) as c:
        c.insert([CatalogEntry(id=i, path=f"/x/{i}.jpg") for i in range(5)])
    with Catalog(path, 3) as c:  # a reader of a manifest that committed 3 ids
        assert len(c) == 3 and c.count() == 3
        assert c.paths_of([0, 2, 4, -1]) == ["/x/0.jpg", "/x/2.jpg", None, None]
        assert c.ids_of(["/x/1.jpg", "/x/4.jpg"]) == {"/x/1.jpg": 1}
    with Catalog(path, 3, write=True) as c:
        assert c.drop_from(3) == 2
        assert c.mark_removed([1]) == 1
        assert c.ids_with_status("removed").tolist() == [1]
        assert [e.id for e in c.iter_entries(batch=2)] == [0, 1, 2]


def test_catalog_counts_every_status_of_committed_ids_only(tmp_path):
    path = tmp_path / "c.sqlite"
    statuses = ["ok", "ok", "failed", "nofeatures", "ok", "failed"]
    with Catalog(path, 0, write=True) as c:
        c.insert([CatalogEntry(id=i, path=f"/x/{i}.jpg", status=s)
                  for i, s in enumerate(statuses)])
    with Catalog(path, 5, write=True) as c:  # id 5 is not committed
        c.mark_removed([0])
        assert c.counts() == {"ok": 2, "failed": 1, "nofeatures": 1, "removed": 1}
        assert c.counts() == {s: c.count(s) for s in ("ok", "failed", "nofeatures", "removed")}


def test_unreadable_catalog_is_one_line_bundle_error(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"not a database at all" * 10)
    with pytest.raises(BundleError, match="not a readable catalog"):
        Catalog(bad, 1)


def test_commit_then_reader_sees_segments_and_rows(tmp_path):
    root = tmp_path / "b"
    with BundleWriter(root) as w:
        rec = _write_segment(w, [0, 1, 3])
        w.commit(_manifest(root, [rec], 4))
    b = Bundle.open(root)
    assert b.manifest["generation"] == 1
    rows = b.rows(np.array([3, 2, 0]))
    seg = Segment(root / "segments/000001", number=1, n=3, sparse=False, dim=4)
    np.testing.assert_array_equal(rows[0], seg.rows()[2])
    assert not rows[1].any()  # id 2 has no vector
    np.testing.assert_array_equal(rows[2], seg.rows()[0])


def test_uncommitted_writer_leaves_nothing_and_next_writer_cleans(tmp_path):
    root = tmp_path / "b"
    with BundleWriter(root) as w:
        rec = _write_segment(w, [0, 1])
        w.commit(_manifest(root, [rec], 2))
    with pytest.raises(RuntimeError), BundleWriter(root) as w:
        _write_segment(w, [2, 3])
        raise RuntimeError("killed")
    assert sorted(p.name for p in (root / "segments").iterdir()) == ["000001"]
    # a kill -9 cannot run __exit__: simulate leftovers, then the next writer removes them
    (root / "segments" / "000009").mkdir()
    (root / "embedder-000007").mkdir()
    (root / ".manifest.json.tmp-123").write_text("{")
    with Catalog(root / "catalog-000001.sqlite", 0, write=True) as c:
        c.insert([CatalogEntry(id=5, path="/orphan.jpg")])
    with BundleWriter(root):
        pass
    assert sorted(p.name for p in (root / "segments").iterdir()) == ["000001"]
    assert not (root / "embedder-000007").exists()
    assert not (root / ".manifest.json.tmp-123").exists()
    with Catalog(root / "catalog-000001.sqlite", 10) as c:
        assert c.count() == 0


def test_second_writer_waits_then_fails_with_one_line(tmp_path):
    root = tmp_path / "b"
    with BundleWriter(root) as w:
        w.commit(_manifest(root, [_write_segment(w, [0])], 1))
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with BundleWriter(root):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    try:
        with pytest.raises(BundleError, match="being written by another process"):
            with BundleWriter(root, timeout=0.3):
                pass
    finally:
        release.set()
        t.join()
    t0 = time.monotonic()
    with BundleWriter(root, timeout=5):  # free again: no wait
        pass
    assert time.monotonic() - t0 < 5


def test_writer_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_bytes(b"x")
    with pytest.raises(BundleError, match="not a cvretrieval bundle"):
        with BundleWriter(tmp_path / "photos"):
            pass


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m.update(index="flat"), "index"),
    (lambda m: m.update(options=[]), "options"),
    (lambda m: m.update(metric="cosine"), "metric"),
    (lambda m: m["counts"].update(vectors=99), "counts.vectors"),
    (lambda m: m.update(next_id="5"), "next_id"),
    (lambda m: m.update(catalog="../../etc/passwd"), "catalog"),
    (lambda m: m["embedder"].update(dir="/tmp"), "embedder.dir"),
    (lambda m: m["segments"].append({"number": 2, "n": 1, "first_id": 0, "last_id": 0}),
     "segments[1]"),
    (lambda m: m["segments"][0].update(n="3"), "segments[0].n"),
    (lambda m: m.update(segments={}), "segments"),
    (lambda m: m["embedder"].update(dim=None), "embedder.dim"),
])
def test_damaged_manifest_names_the_field(tmp_path, mutate, field):
    root = tmp_path / "b"
    with BundleWriter(root) as w:
        w.commit(_manifest(root, [_write_segment(w, [0, 1, 2])], 3))
    m = json.loads((root / "manifest.json").read_text())
    mutate(m)
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as err:
        read_manifest(root)
    assert field.split(".")[0].split("[")[0] in str(err.value)
    assert "\n" not in str(err.value)


def test_swapped_embedder_files_are_detected(tmp_path):
    root = tmp_path / "b"
    with BundleWriter(root) as w:
        (root / "embedder-000001").mkdir()
        (root / "embedder-000001" / "vocab.npy").write_bytes(b"abc")
        m = _manifest(root, [_write_segment(w, [0])], 1)
        m["embedder"]["checksums"] = {"vocab.npy": "0" * 64}
        w.commit(m)
    with pytest.raises(BundleError, match="checksum"):
        Bundle.open(root).check_embedder_files()


def _mapped_rss_kb(path) -> int:
    """Resident kB of every mapping of ``path`` in this process (Linux smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:
                inside = line.rstrip().endswith(str(path))
            elif inside and head and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"),
                    reason="needs Linux /proc/self/smaps to see mapped pages")
def test_iter_blocks_reads_rows_without_keeping_the_file_mapped(tmp_path):
    # a scan of a big segment (an index build at 1M images) used to leave every page
    # of vectors.npy mapped into the process: 1.3 GB of RSS that counts against the
    # memory target while the index is being built
    from cvretrieval.bundle.segments import SegmentWriter

    rng = np.random.default_rng(0)
    n, dim = 20000, 128  # 10 MB of float32
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    w = SegmentWriter(tmp_path / "seg", sparse=False, dim=dim)
    for start in range(0, n, 5000):
        w.append(np.arange(start, start + 5000, dtype=np.int64) + 10, rows[start:start + 5000])
    w.close()
    seg = Segment(tmp_path / "seg", number=1, n=n, sparse=False, dim=dim)
    got_ids, got_rows = [], []
    for ids, block in seg.iter_blocks(3000):
        got_ids.append(ids)
        got_rows.append(block)
        assert block.flags["C_CONTIGUOUS"] and block.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(got_ids), np.arange(n) + 10)
    np.testing.assert_array_equal(np.concatenate(got_rows), rows)
    assert _mapped_rss_kb(tmp_path / "seg" / "vectors.npy") < 1024  # not 10 MB


def test_take_reads_sampled_rows_without_keeping_the_file_mapped(tmp_path):
    # a random training sample (one row in twelve) of a 100k x 8,100 HOG segment, taken
    # through the memory map, left 3.2 GB of the file resident in the main process
    from cvretrieval.bundle.segments import SegmentWriter

    rng = np.random.default_rng(1)
    n, dim = 6000, 512  # 12 MB of float32, 2 KB rows: read-around maps neighbours
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    w = SegmentWriter(tmp_path / "seg", sparse=False, dim=dim)
    w.append(np.arange(n, dtype=np.int64), rows)
    w.close()
    seg = Segment(tmp_path / "seg", number=1, n=n, sparse=False, dim=dim)
    pos = rng.choice(n, 500, replace=False)
    pos = np.r_[pos, pos[:3], [0, 1, 2, n - 1]]  # unsorted, repeated, a run, the last
    got = seg.take(pos)
    np.testing.assert_array_equal(got, rows[pos])
    assert got.dtype == np.float32 and got.shape == (len(pos), dim)
    assert seg.take(np.zeros(0, np.int64)).shape == (0, dim)
    assert _mapped_rss_kb(tmp_path / "seg" / "vectors.npy") < 1024  # not 12 MB
    with pytest.raises(IndexError):
        seg.take(np.array([n]))


def test_iter_blocks_of_a_truncated_segment_is_one_line_bundle_error(tmp_path):
    from cvretrieval.bundle.segments import SegmentWriter

    w = SegmentWriter(tmp_path / "seg", sparse=False, dim=4)
    w.append(np.arange(1, 101, dtype=np.int64), np.ones((100, 4), np.float32))
    w.close()
    path = tmp_path / "seg" / "vectors.npy"
    path.write_bytes(path.read_bytes()[:-64])
    seg = Segment(tmp_path / "seg", number=1, n=100, sparse=False, dim=4)
    with pytest.raises(BundleError):
        list(seg.iter_blocks(30))


@pytest.mark.parametrize("sparse", [False, True])
def test_write_segments_in_blocks_keeps_every_row_in_order(tmp_path, sparse):
    """Rows reach the segment in blocks; failures and empty rows between them, and a
    block size that does not divide the count, leave every row at its id."""
    import scipy.sparse as sp

    from cvretrieval.bundle.build import write_segments
    from cvretrieval.pipeline import Item

    rng = np.random.default_rng(0)
    n, dim = 23, 6
    dense = rng.random((n, dim)).astype(np.float32)
    dense[[4, 11]] = 0  # no features
    failed = {2, 7, 8, 20}
    items = [Item(j, "0" * 40, 10, (8, 8), error="cannot read" if j in failed else None,
                  value=None if j in failed else (sp.csr_matrix(dense[j]) if sparse
                                                  else dense[j].copy()))
             for j in range(n)]
    paths = [f"/x/{j}.jpg" for j in range(n)]
    root = tmp_path / "b"
    with BundleWriter(root) as w, Catalog(root / "c.sqlite", 100, write=True) as cat:
        records, failures = write_segments(
            lambda: w.new_segment(sparse=sparse, dim=dim), cat, iter(items), paths, 100,
            has_features=lambda v: bool(v.nnz if sparse else v.any()), block=5,
            segment_size=9)
        got_ids, got_rows = [], []  # read before the writer ends (uncommitted)
        for r in records:
            seg = Segment(root / f"segments/{r['number']:06d}", number=r["number"], n=r["n"],
                          sparse=sparse, dim=dim)
            got_ids.append(seg.ids.tolist())
            rows = seg.rows()
            got_rows.append(rows.toarray() if sparse else np.array(rows))
    with Catalog(root / "c.sqlite", 100 + n) as cat:
        entries = cat.entries(range(100, 100 + n))
    kept = [j for j in range(n) if j not in failed | {4, 11}]
    assert [f["path"] for f in failures] == [paths[j] for j in sorted(failed | {4, 11})]
    assert [e.status for e in entries] == [
        "failed" if j in failed else "nofeatures" if j in (4, 11) else "ok" for j in range(n)]
    for r, ids in zip(records, got_ids, strict=True):
        assert {e.segment for e in entries if e.id in set(ids)} == {r["number"]}
    got_ids = sum(got_ids, [])
    assert got_ids == [100 + j for j in kept]
    np.testing.assert_array_equal(np.vstack(got_rows), dense[kept])
    if sparse:  # sparse segments close at segment_size rows
        assert [r["n"] for r in records] == [9, 8]
