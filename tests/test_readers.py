"""Tests of the benchmark readers (revisitop, Oxford/Paris text, Holidays, GLDv2, TFRecords)
and of check_dataset, each on a small layout written here."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvretrieval.datasets import (
    RetrievalDataset,
    check_dataset,
    format_check,
    load_dataset,
    read_gld_tfrecord,
    read_gldv2,
    read_holidays,
    read_oxford_gt,
    read_revisitop,
    revisitop_protocols,
    safe_pickle_load,
)
from cvretrieval.errors import DatasetError, MissingExtraError


def jpg(path: Path, value: int = 0, size: int = 8) -> Path:
    """Write a tiny JPEG whose content depends on ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def kinds(ds: RetrievalDataset) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in ds.problems:
        out[p["kind"]] = out.get(p["kind"], 0) + 1
    return out


# =========================================================================== revisitop
IMNAMES = ["all_souls_000001", "all_souls_000002", "radcliffe_000003", "magdalen_000004"]
QNAMES = ["all_souls_000013", "radcliffe_000019"]
GND_RAW = [
    {"easy": [0], "hard": [1], "junk": [2], "bbx": [10.5, 20.0, 300.0, 400.0]},
    {"easy": [2, 3], "hard": [], "junk": [0], "bbx": [1, 2, 3, 4]},
]


def write_revisitop(root: Path, gnd=GND_RAW, images: bool = True, name="roxford5k") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pkl = root / f"gnd_{name}.pkl"
    with pkl.open("wb") as f:
        pickle.dump({"imlist": IMNAMES, "qimlist": QNAMES, "gnd": gnd}, f)
    if images:
        for i, n in enumerate(IMNAMES + QNAMES):
            jpg(root / "jpg" / f"{n}.jpg", i)
    return pkl


def test_revisitop_protocols_follow_example_evaluate():
    # revisitop example_evaluate.py: E ok=easy junk=junk+hard; M ok=easy+hard junk=junk;
    # H ok=hard junk=junk+easy
    p = revisitop_protocols([{"easy": [5, 6], "hard": [7], "junk": [8], "bbx": [0, 0, 1, 1]}])
    assert p["easy"][0] == {"ok": [5, 6], "junk": [8, 7], "bbx": [0, 0, 1, 1]}
    assert p["medium"][0] == {"ok": [5, 6, 7], "junk": [8], "bbx": [0, 0, 1, 1]}
    assert p["hard"][0] == {"ok": [7], "junk": [8, 5, 6], "bbx": [0, 0, 1, 1]}


def test_read_revisitop_folder(tmp_path):
    pkl = write_revisitop(tmp_path / "roxford5k")
    ds = load_dataset(tmp_path / "roxford5k")  # detected from gnd_*.pkl
    assert ds.format == "revisitop" and ds.name == "roxford5k"
    assert ds.imlist == [f"jpg/{n}.jpg" for n in IMNAMES]
    assert ds.qimlist == [f"jpg/{n}.jpg" for n in QNAMES]
    assert all(p.is_file() for p in ds.image_paths() + ds.query_paths())
    assert ds.protocol == "medium" and set(ds.protocols) == {"easy", "medium", "hard"}
    assert [g["ok"] for g in ds.gnd] == [[0, 1], [2, 3]]
    assert [g["junk"] for g in ds.gnd] == [[2], [0]]
    assert ds.query_bboxes() == [(10.5, 20.0, 300.0, 400.0), (1.0, 2.0, 3.0, 4.0)]
    assert ds.query_self_index() == [None, None]  # revisitop queries are not in the gallery
    assert [g["ok"] for g in ds.protocols["hard"]] == [[1], []]
    assert [g["junk"] for g in ds.protocols["hard"]] == [[2, 0], [0, 2, 3]]
    # query 1 has no hard positive: reported, not fatal
    assert kinds(ds) == {"no-positives": 1}
    assert "hard" in ds.problems[0]["message"]
    hard = load_dataset(pkl, protocol="hard")  # the pickle itself, another protocol
    assert hard.protocol == "hard" and [g["ok"] for g in hard.gnd] == [[1], []]
    easy = ds.with_protocol("easy")
    assert [g["ok"] for g in easy.gnd] == [[0], [2, 3]] and ds.protocol == "medium"
    with pytest.raises(DatasetError, match="no protocol 'extreme'"):
        ds.with_protocol("extreme")
    with pytest.raises(DatasetError, match="unknown protocol"):
        read_revisitop(pkl, protocol="extreme")


def test_read_revisitop_numpy_arrays_and_no_jpg_folder(tmp_path):
    # the same ground truth stored with numpy arrays (as some converted files are)
    gnd = [
        {k: np.asarray(v, dtype=np.float64 if k == "bbx" else np.int64) for k, v in g.items()}
        for g in GND_RAW
    ]
    pkl = write_revisitop(tmp_path, gnd=gnd, images=False, name="rparis6k")
    ds = read_revisitop(pkl)
    assert ds.name == "rparis6k"
    assert ds.imlist[0] == "all_souls_000001.jpg"  # no jpg/ folder: images beside the pickle
    assert [g["ok"] for g in ds.gnd] == [[0, 1], [2, 3]]
    assert ds.gnd[0]["bbx"] == [10.5, 20.0, 300.0, 400.0]


def test_read_revisitop_classic_ok_junk_pickle(tmp_path):
    # cirtorch's gnd_oxford5k.pkl: ok/junk per query, no easy/hard -> no protocols
    gnd = [{"ok": [0, 1], "junk": [2], "bbx": [0, 0, 5, 5]}, {"ok": [3], "junk": []}]
    pkl = write_revisitop(tmp_path, gnd=gnd, images=False, name="oxford5k")
    ds = read_revisitop(pkl)
    assert ds.protocols == {} and ds.protocol == ""
    assert [g["ok"] for g in ds.gnd] == [[0, 1], [3]]
    with pytest.raises(DatasetError, match="no easy/hard"):
        read_revisitop(pkl, protocol="hard")


class _RunsCommand:
    """Unpickling this would run a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "gnd_roxford5k.pkl"
    evil.write_bytes(
        pickle.dumps({"imlist": ["a"], "qimlist": ["b"], "gnd": [_RunsCommand(marker)]})
    )
    with pytest.raises(DatasetError, match="refusing to load the global"):
        read_revisitop(evil)
    assert not marker.exists()  # refused before anything ran
    with pytest.raises(DatasetError, match="system"):
        safe_pickle_load(evil)
    other = tmp_path / "eval.pkl"
    other.write_bytes(pickle.dumps([_Evaluates()]))
    with pytest.raises(DatasetError, match="builtins.eval"):
        safe_pickle_load(other)
    # a class instance is refused too
    obj = tmp_path / "obj.pkl"
    obj.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(DatasetError, match="refusing"):
        safe_pickle_load(obj)
    # plain containers, sets and numpy arrays load, with every pickle protocol
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        ok = tmp_path / f"ok{proto}.pkl"
        value = {"a": [1, 2.5, "x", None], "s": {1, 2}, "n": np.arange(3), "i": np.int64(4)}
        ok.write_bytes(pickle.dumps(value, protocol=proto))
        back = safe_pickle_load(ok)
        assert back["a"] == [1, 2.5, "x", None] and back["s"] == {1, 2}
        assert back["n"].tolist() == [0, 1, 2] and back["i"] == 4


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([1, 2], "expected a dict"),
        ({"imlist": IMNAMES, "gnd": []}, "missing key 'qimlist'"),
        ({"imlist": IMNAMES, "qimlist": [1], "gnd": [{}]}, "list of image names"),
        ({"imlist": IMNAMES, "qimlist": QNAMES, "gnd": "x"}, "list of dicts"),
        (
            {"imlist": IMNAMES, "qimlist": QNAMES, "gnd": [GND_RAW[0], {"easy": [9], "hard": []}]},
            r"out of range",
        ),
        ({"imlist": IMNAMES, "qimlist": QNAMES, "gnd": GND_RAW[:1]}, "1 entries"),
    ],
)
def test_read_revisitop_malformed(tmp_path, doc, match):
    pkl = tmp_path / "gnd_roxford5k.pkl"
    pkl.write_bytes(pickle.dumps(doc))
    with pytest.raises(DatasetError, match=match):
        read_revisitop(pkl)


def test_read_revisitop_bad_files(tmp_path):
    (tmp_path / "gnd_roxford5k.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="not a readable ground-truth pickle"):
        read_revisitop(tmp_path)
    (tmp_path / "gnd_rparis6k.pkl").write_bytes(b"")
    with pytest.raises(DatasetError, match="several ground-truth pickles"):
        read_revisitop(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no gnd_"):
        read_revisitop(empty)


# =========================================================================== Oxford / Paris text
def write_oxford(root: Path) -> Path:
    names = ["all_souls_000001", "all_souls_000013", "all_souls_000002", "christ_church_000005"]
    for i, n in enumerate(names):
        jpg(root / "oxbuild_images" / f"{n}.jpg", i)
    gt = root / "gt_files"
    gt.mkdir(parents=True)
    (gt / "all_souls_1_query.txt").write_text("oxc1_all_souls_000013 136.5 34.1 648.5 955.7\n")
    (gt / "all_souls_1_good.txt").write_text("all_souls_000013\nall_souls_000001\n")
    (gt / "all_souls_1_ok.txt").write_text("all_souls_000002\nall_souls_000404\n")  # 404 missing
    (gt / "all_souls_1_junk.txt").write_text("christ_church_000005\n")
    (gt / "all_souls_2_query.txt").write_text("oxc1_all_souls_000001 1 2 3 4\n")
    (gt / "all_souls_2_good.txt").write_text("all_souls_000002\n")
    (gt / "all_souls_2_ok.txt").write_text("")
    # no all_souls_2_junk.txt: reported, read as empty
    (gt / "christ_church_1_query.txt").write_text("oxc1_christ_church_000005 1 2\n")  # bad line
    (gt / "radcliffe_1_query.txt").write_text("oxc1_radcliffe_000777 1 2 3 4\n")  # no image
    return root


def test_read_oxford_gt(tmp_path):
    root = write_oxford(tmp_path / "oxford5k")
    ds = load_dataset(root)
    assert ds.format == "oxford-gt"
    assert ds.imlist == [
        "oxbuild_images/all_souls_000001.jpg",
        "oxbuild_images/all_souls_000002.jpg",
        "oxbuild_images/all_souls_000013.jpg",
        "oxbuild_images/christ_church_000005.jpg",
    ]
    # queries in (landmark, number) order; the unusable ones skipped
    assert ds.qimlist == [
        "oxbuild_images/all_souls_000013.jpg",
        "oxbuild_images/all_souls_000001.jpg",
    ]
    assert ds.gnd[0]["ok"] == [2, 0, 1]  # good (000013, 000001) + ok (000002)
    assert ds.gnd[0]["junk"] == [3]
    assert ds.gnd[0]["bbx"] == [136.5, 34.1, 648.5, 955.7]
    assert ds.gnd[1] == {"ok": [1], "junk": [], "bbx": [1.0, 2.0, 3.0, 4.0]}
    assert ds.query_self_index() == [2, 0]  # queries are gallery images: left out of rankings
    assert kinds(ds) == {"missing-image": 2, "missing-file": 1, "bad-row": 1}
    items = {p["item"] for p in ds.problems}
    assert {"all_souls_000404", "radcliffe_000777", "christ_church_1_query.txt"} <= items


def test_read_oxford_gt_paris_layout(tmp_path):
    # Paris: images nested per landmark, query names without prefix, gt files in the root
    root = tmp_path / "paris6k"
    jpg(root / "paris" / "defense" / "paris_defense_000605.jpg", 1)
    jpg(root / "paris" / "defense" / "paris_defense_000041.jpg", 2)
    jpg(root / "paris" / "eiffel" / "paris_eiffel_000001.jpg", 3)
    (root / "defense_1_query.txt").write_text("paris_defense_000605 10 20 30 40\n")
    (root / "defense_1_good.txt").write_text("paris_defense_000041\n")
    (root / "defense_1_ok.txt").write_text("")
    (root / "defense_1_junk.txt").write_text("paris_eiffel_000001\n")
    ds = read_oxford_gt(root)
    assert ds.qimlist == ["paris/defense/paris_defense_000605.jpg"]
    assert ds.gnd[0]["ok"] == [0] and ds.gnd[0]["junk"] == [2]
    assert ds.problems == []


def test_read_oxford_gt_errors(tmp_path):
    jpg(tmp_path / "a" / "x.jpg")
    with pytest.raises(DatasetError, match="no \\*_query.txt"):
        read_oxford_gt(tmp_path)
    (tmp_path / "a" / "x_1_query.txt").write_text("nothing_here 1 2 3 4\n")
    with pytest.raises(DatasetError, match="no usable query"):
        read_oxford_gt(tmp_path)


# =========================================================================== Holidays
def test_read_holidays(tmp_path):
    root = tmp_path / "holidays"
    for i, n in enumerate([100000, 100001, 100002, 100100, 100201, 100300, 100301]):
        jpg(root / "jpg" / f"{n}.jpg", i)
    jpg(root / "jpg" / "readme.jpg", 99)  # not NNNNNN: ignored
    ds = load_dataset(root)
    assert ds.format == "holidays"
    assert ds.imlist == [
        f"jpg/{n}.jpg" for n in (100000, 100001, 100002, 100100, 100201, 100300, 100301)
    ]
    assert ds.qimlist == ["jpg/100000.jpg", "jpg/100100.jpg", "jpg/100300.jpg"]
    assert [g["ok"] for g in ds.gnd] == [[1, 2], [], [6]]
    assert ds.query_self_index() == [0, 3, 5]  # the query is left out of its own ranking
    # group 1001 has only its query; group 1002 has no query (100201 is gallery only)
    assert kinds(ds) == {"no-positives": 1, "no-query": 1}


def test_read_holidays_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no NNNNNN"):
        read_holidays(tmp_path / "empty")
    jpg(tmp_path / "q" / "100001.jpg")
    with pytest.raises(DatasetError, match="no query image"):
        read_holidays(tmp_path / "q")


# =========================================================================== GLDv2
def gld_path(split: str, image_id: str) -> str:
    return f"{split}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def write_gldv2(root: Path) -> Path:
    root.mkdir(parents=True)
    index = ["aaa0000000000001", "abc0000000000002", "f000000000000003", "0120000000000004"]
    test = [
        "beef000000000001",
        "cafe000000000002",
        "dead000000000003",
        "feed000000000004",
        "face000000000005",
        "fade000000000006",
        "fee1000000000007",
        "f1ee000000000008",
    ]
    (root / "index.csv").write_text("id\n" + "\n".join(index) + "\nbad id!\n")
    (root / "test.csv").write_text(
        "id,url\n" + "\n".join(f"{t},http://x/{t}" for t in test) + "\nonlyonefield\n"
    )
    (root / "retrieval_solution_v2.1.csv").write_text(
        "id,images,Usage\n"
        f"{test[0]},{index[0]} {index[2]},Public\n"
        f"{test[1]},{index[1]} 9990000000000000,Private\n"  # one unknown index id
        f"{test[2]},None,Ignored\n"  # a non-landmark query
        f"{test[6]},None,Public\n"  # also non-landmark: None
        f"{test[7]},,Private\n"  # and an empty solution
        f"{test[3]},{index[3]},Sometimes\n"  # unknown Usage
        f"{test[4]},{index[3]}\n"  # a field missing
        "ffff000000000009,aaa0000000000001,Public\n"  # not in test.csv
    )
    for image_id in index:
        jpg(root / gld_path("index", image_id), int(image_id[-1]))
    for image_id in test:
        jpg(root / gld_path("test", image_id), 10 + int(image_id[-1]))
    return root


def test_read_gldv2(tmp_path):
    root = write_gldv2(tmp_path / "gldv2")
    ds = load_dataset(root)
    assert ds.format == "gldv2"
    assert ds.imlist[1] == "index/a/b/c/abc0000000000002.jpg"
    assert len(ds.imlist) == 4 and all(p.is_file() for p in ds.image_paths())
    assert ds.qimlist == [
        gld_path("test", "beef000000000001"),
        gld_path("test", "cafe000000000002"),
    ]
    assert [g["ok"] for g in ds.gnd] == [[0, 2], [1]]
    assert kinds(ds) == {"bad-row": 5, "unknown-index-id": 1, "non-landmark": 4}
    non_landmark = {p["item"] for p in ds.problems if p["kind"] == "non-landmark"}
    # the Ignored, None and empty rows and the test image without any solution row
    assert non_landmark == {
        "dead000000000003",
        "fade000000000006",
        "fee1000000000007",
        "f1ee000000000008",
    }


def test_read_gldv2_errors(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    (root / "index.csv").write_text("id\naaa0000000000001\n")
    (root / "test.csv").write_text("id\nbeef000000000001\n")
    with pytest.raises(DatasetError, match="no retrieval solution"):
        read_gldv2(root)
    (root / "retrieval_solution_v2.1.csv").write_text("id,images,Usage\n")
    with pytest.raises(DatasetError, match="no test image"):
        read_gldv2(root)
    (root / "index.csv").write_text("name\naaa0000000000001\n")
    with pytest.raises(DatasetError, match="no 'id' column"):
        read_gldv2(root)
    (root / "index.csv").unlink()
    with pytest.raises(DatasetError, match="index.csv"):
        read_gldv2(root)


# =========================================================================== GLD TFRecords
@pytest.fixture(scope="module")
def tfrecord_writer():
    if importlib.util.find_spec("tfrecord") is None:
        pytest.skip("the tfrecord package (extra gld) is not installed")
    from cvretrieval.datasets import _import_tfrecord

    _import_tfrecord()  # imports tfrecord without its optional (slow) torch loader
    from tfrecord.writer import TFRecordWriter

    return TFRecordWriter


def encoded(value: int) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_shard(writer_cls, path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = writer_cls(str(path))
    for r in records:
        w.write(r)
    w.close()
    return path


def test_read_gld_tfrecord(tmp_path, tfrecord_writer):
    shards = tmp_path / "tfrecords"
    write_shard(
        tfrecord_writer,
        shards / "train-00000-of-00002",
        [
            {
                "image/encoded": (encoded(10), "byte"),
                "image/class/label": (7, "int"),
                "image/id": (b"aaaa", "byte"),
            },
            {"image/encoded": (encoded(20), "byte"), "image/class/label": (7, "int")},
            {
                "image/encoded": (encoded(30), "byte"),
                "image/class/label": (9, "int"),
                "image/id": (b"../../escape", "byte"),
            },
            {"image/class/label": (9, "int")},  # no image
        ],
    )
    second = write_shard(
        tfrecord_writer,
        shards / "train-00001-of-00002",
        [
            {"image/encoded": (encoded(40), "byte"), "image/class/label": (9, "int")},
            {"image/encoded": (encoded(50), "byte")},  # no label
            {"image/encoded": (encoded(60), "byte"), "image/class/label": (11, "int")},
        ],
    )
    data = second.read_bytes()
    second.write_bytes(data + data[:20])  # a truncated record at the end
    cache = tmp_path / "cache"
    ds = load_dataset(shards, cache_dir=cache)
    assert ds.format == "gld-tfrecord" and ds.root == cache
    assert ds.imlist == [
        "images/11/train-00001-of-00002-000002.jpg",
        "images/7/aaaa.jpg",
        "images/7/train-00000-of-00002-000001.jpg",
        "images/9/_.._escape.jpg",
        "images/9/train-00001-of-00002-000000.jpg",
    ]
    assert all(p.is_file() for p in ds.image_paths())
    assert all(cache in p.resolve().parents for p in ds.image_paths())  # nothing escapes
    assert (cache / "images/7/aaaa.jpg").read_bytes() == encoded(10)
    # same landmark = positive; landmark 11 has a single image
    assert [g["ok"] for g in ds.gnd] == [[], [2], [1], [4], [3]]
    assert kinds(ds) == {"bad-record": 2, "truncated": 1, "no-positives": 1}
    # the ground truth is cached: the folder reads back without TFRecords
    back = load_dataset(cache)
    assert back.format == "json" and back.imlist == ds.imlist
    assert [g["ok"] for g in back.gnd] == [g["ok"] for g in ds.gnd]
    # a second extraction (resume) gives the same data set; max_records limits the read
    again = read_gld_tfrecord(shards, cache)
    assert again.imlist == ds.imlist
    few = read_gld_tfrecord(shards / "train-00000-of-00002", tmp_path / "few", max_records=2)
    assert few.imlist == ["images/7/aaaa.jpg", "images/7/train-00000-of-00002-000001.jpg"]


def test_read_gld_tfrecord_errors(tmp_path, tfrecord_writer, monkeypatch):
    shard = write_shard(
        tfrecord_writer, tmp_path / "a.tfrecord", [{"image/class/label": (1, "int")}]
    )
    with pytest.raises(DatasetError, match="cache folder"):
        load_dataset(shard)  # detected as gld-tfrecord, but no cache_dir given
    with pytest.raises(DatasetError, match="no usable record"):
        read_gld_tfrecord(shard, tmp_path / "cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no TFRecord file"):
        read_gld_tfrecord(empty, tmp_path / "cache")
    monkeypatch.setitem(sys.modules, "tfrecord", None)
    with pytest.raises(MissingExtraError, match=r"cvretrieval\[gld\]"):
        read_gld_tfrecord(shard, tmp_path / "cache")


# =========================================================================== detection
def test_detection_order(tmp_path):
    # a revisitop folder has a jpg/ sub-folder of images: must not be taken for class-folders
    write_revisitop(tmp_path / "r")
    assert load_dataset(tmp_path / "r").format == "revisitop"
    # Holidays images directly in the folder
    for n in (100000, 100001):
        jpg(tmp_path / "h" / f"{n}.jpg", n % 7)
    assert load_dataset(tmp_path / "h").format == "holidays"
    # a folder of Oxford images with the gt files: oxford-gt, not class-folders
    assert load_dataset(write_oxford(tmp_path / "o")).format == "oxford-gt"
    with pytest.raises(DatasetError, match="cannot read the file"):
        load_dataset(jpg(tmp_path / "x.jpg"))


# =========================================================================== check_dataset
def test_check_dataset(tmp_path):
    root = tmp_path / "set"
    jpg(root / "g" / "a.jpg", 1)
    jpg(root / "g" / "b.jpg", 2)
    jpg(root / "g" / "a_copy.jpg", 1)  # the same bytes as a.jpg
    (root / "g" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    jpg(root / "q" / "q0.jpg", 5)
    doc = {
        "imlist": ["g/a.jpg", "g/b.jpg", "g/a_copy.jpg", "g/broken.jpg", "g/missing.jpg"],
        "qimlist": ["q/q0.jpg", "q/q1.jpg", "g/b.jpg"],
        "gnd": [
            {"ok": [0, 2], "junk": [1]},
            {"ok": [1], "junk": [3, 4]},
            {"ok": []},
        ],
    }
    (root / "gt.json").write_text(json.dumps(doc))
    for decode in (True, False):
        report = check_dataset(root, decode=decode)
        assert report["format"] == "json" and report["images"] == 5 and report["queries"] == 3
        assert report["positives"] == {"min": 0, "mean": 1.0, "max": 2}
        assert report["junk"]["total"] == 3 and report["junk"]["max"] == 2
        assert report["queries_without_positives"] == [{"query": 2, "path": "g/b.jpg"}]
        assert sorted(report["missing"]) == ["g/missing.jpg", "q/q1.jpg"]
        assert [u["path"] for u in report["unreadable"]] == ["g/broken.jpg"]
        assert report["duplicates"] == [["g/a.jpg", "g/a_copy.jpg"]]
        assert report["ok"] is False and report["decoded"] is decode
        json.dumps(report)
    quick = check_dataset(root, decode=False, duplicates=False)
    assert quick["duplicates"] is None and quick["missing"] == report["missing"]
    assert "duplicates: not searched" in format_check(quick)
    text = format_check(report)
    for needle in ("missing files: 2", "g/broken.jpg", "g/a.jpg, g/a_copy.jpg", "PROBLEMS FOUND"):
        assert needle in text


def test_check_dataset_protocols_and_problems(tmp_path):
    write_revisitop(tmp_path / "r")
    for i, n in enumerate(QNAMES):  # query images large enough for their boxes
        jpg(tmp_path / "r" / "jpg" / f"{n}.jpg", 10 + i, size=400)
    report = check_dataset(tmp_path / "r", decode=False)
    assert report["ok"] is True and report["missing"] == [] and report["protocol"] == "medium"
    assert report["protocols"]["hard"]["n_without_positives"] == 1
    assert report["protocols"]["easy"]["positives"] == {"min": 1, "mean": 1.5, "max": 2}
    assert report["problems"][0]["kind"] == "no-positives"
    text = format_check(report)
    assert "protocol hard" in text and "1 no-positives" in text and "result: OK" in text


def test_check_dataset_real_ukbench(ukbench_dir):
    report = check_dataset(ukbench_dir)
    assert report["format"] == "ukbench" and report["images"] == 56
    assert report["positives"] == {"min": 3, "mean": 3.0, "max": 3}
    assert report["missing"] == [] and report["unreadable"] == [] and report["ok"] is True
