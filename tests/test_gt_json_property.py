"""Property-based tests of the ground-truth JSON reader (issue 13).

Any JSON value, written to a file, either loads into a valid data set or raises
:class:`cvretrieval.errors.DatasetError` with a one-line message; never another
exception, never a hang. Deep nesting and a 50 MB file are included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cvretrieval.datasets import RetrievalDataset, read_gt_json
from cvretrieval.errors import DatasetError

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
paths = st.sampled_from(
    ["a.jpg", "b.jpg", "sub/c.jpg", "./d.jpg", "../x.jpg", "/abs.jpg", "", "a/../b.jpg", "e\\f.jpg"]
) | st.text(max_size=10)
indices = st.integers(min_value=-3, max_value=12) | scalars
index_lists = st.lists(indices, max_size=6) | json_values
graded = st.lists(
    st.tuples(st.integers(-1, 8), st.floats(allow_nan=True) | st.integers(-2, 3)).map(list)
    | json_values,
    max_size=5,
) | json_values
entries = st.fixed_dictionaries(
    {},
    optional={
        "ok": index_lists,
        "junk": index_lists,
        "bbx": st.lists(st.floats(allow_nan=True) | st.integers(), min_size=0, max_size=5)
        | json_values,
        "graded": graded,
    },
)
near_valid = st.fixed_dictionaries(
    {
        "imlist": st.lists(paths, min_size=0, max_size=8) | json_values,
        "qimlist": st.lists(paths, min_size=0, max_size=4) | json_values,
        "gnd": st.lists(entries | json_values, max_size=4) | json_values,
    },
    optional={
        "name": json_values,
        "protocol": st.sampled_from(["easy", "hard", ""]) | json_values,
        "protocols": st.dictionaries(
            st.sampled_from(["easy", "hard"]), st.lists(entries, max_size=4) | json_values
        )
        | json_values,
    },
)


ONE = {"imlist": ["a.jpg"], "qimlist": ["a.jpg"], "gnd": [{"ok": []}]}


def _check_outcome(path: Path) -> None:
    try:
        ds = read_gt_json(path)
    except DatasetError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert len(msg) < 1000, msg
        return
    assert isinstance(ds, RetrievalDataset)
    n, nq = len(ds.imlist), len(ds.qimlist)
    assert n > 0 and nq > 0 and len(ds.gnd) == nq
    for i in range(nq):
        entry = ds.gnd[i]
        ok = ds.positives(i)
        assert ok.dtype == np.int64 and entry["ok"] == ok.tolist()
        assert all(0 <= j < n for j in entry["ok"] + entry["junk"])
        g = ds.graded(i)
        if g is not None:
            idx, grades = g
            assert len(set(idx.tolist())) == len(idx) and (grades >= 0).all()
            assert np.isfinite(grades).all()
        box = entry.get("bbx")
        assert box is None or (len(box) == 4 and np.isfinite(box).all())
    for p in ds.imlist + ds.qimlist:
        assert not p.startswith("/") and ".." not in p.replace("\\", "/").split("/")


@pytest.fixture(scope="module")
def gt_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prop") / "gt.json"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values | near_valid)
@example(doc={**ONE, "gnd": [{"graded": [[0, 2.5]]}]})
@example(doc={**ONE, "gnd": [{"ok": [2**70]}]})
@example(doc={**ONE, "gnd": [{"ok": [0], "bbx": [2**2000, 0, 1, 1]}]})
@example(doc={**ONE, "gnd": [{"graded": [[0, 1], [0, 2]]}]})
@example(doc={**ONE, "imlist": ["\ud800"]})
def test_any_json_loads_or_raises_dataset_error(gt_path, doc):
    gt_path.write_text(json.dumps(doc), encoding="utf-8", errors="surrogatepass")
    _check_outcome(gt_path)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8")))
@example(raw=b"1" * 10_000)  # more digits than int() accepts
@example(raw=b'{"imlist": ["a.jpg"], "qimlist": ["a.jpg"], "gnd": [{"ok": [NaN]}]}')
@example(raw=b"\xef\xbb\xbf{}")  # a byte-order mark
def test_any_bytes_load_or_raise_dataset_error(gt_path, raw):
    gt_path.write_bytes(raw)
    _check_outcome(gt_path)


@settings(max_examples=12, deadline=None)
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":', '{"gnd":[']))
def test_deep_nesting_raises_dataset_error_or_loads(gt_path, depth, opener):
    closer = {"[": "]", '{"a":': "}", '{"gnd":[': "]}"}[opener]
    inner = "1" if opener == '{"a":' else ""
    gt_path.write_text(opener * depth + inner + closer * depth)
    _check_outcome(gt_path)


def test_a_50_mb_file(tmp_path):
    """A 50 MB ground truth loads (a long unknown key) and a 50 MB broken one fails cleanly."""
    size = 50 * 1024 * 1024
    root = tmp_path / "big"
    root.mkdir()
    head = '{"imlist": ["a.jpg", "b.jpg"], "qimlist": ["a.jpg"], "gnd": [{"ok": [1]}], "padding": "'
    tail = '"}'
    good = root / "gt.json"
    with good.open("w") as f:
        f.write(head)
        f.write("x" * (size - len(head) - len(tail)))
        f.write(tail)
    assert good.stat().st_size == size
    ds = read_gt_json(good)
    assert ds.imlist == ["a.jpg", "b.jpg"] and ds.gnd[0]["ok"] == [1]

    broken = root / "broken.json"
    with broken.open("w") as f:
        f.write('{"imlist": [')
        chunk = '"a.jpg", ' * 100_000
        while f.tell() < size:
            f.write(chunk)
    with pytest.raises(DatasetError) as info:
        read_gt_json(broken)
    msg = str(info.value)
    assert "broken.json" in msg and "\n" not in msg and len(msg) < 500
