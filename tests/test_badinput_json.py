"""Bad-input corpus, JSON manifests: any bytes give a dict or a one-line error naming the file.

Known-bad documents are listed as cases; hypothesis then throws arbitrary bytes and
arbitrary (deeply nested) JSON at :func:`cvretrieval._json.read_json_manifest`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _badinput import deadline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvretrieval._json import read_json, read_json_manifest
from cvretrieval.errors import BundleError, DatasetError

HINT = "rebuild the bundle"
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is reused: each example rewrites it

# (id, bytes, expected: "dict" or a phrase of the BundleError)
CASES = [
    ("object", b'{"a": 1}', "dict"),
    ("object-with-bom", b'\xef\xbb\xbf{"a": 1}', "dict"),
    ("nan-and-infinity", b'{"a": NaN, "b": Infinity}', "dict"),
    ("duplicate-keys", b'{"a": 1, "a": 2}', "dict"),
    ("unicode-keys", '{"фото": "写真"}'.encode(), "dict"),
    ("lone-surrogate-escape", b'{"a": "\\ud800"}', "dict"),
    ("nested-100", b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "dict"),
    ("empty", b"", "not valid JSON"),
    ("whitespace", b"  \n\t ", "not valid JSON"),
    ("truncated", b'{"a": [1, 2', "not valid JSON"),
    ("trailing-garbage", b'{"a": 1} x', "not valid JSON"),
    ("single-quotes", b"{'a': 1}", "not valid JSON"),
    ("nul-bytes", b"\0" * 16, "not valid JSON"),
    ("binary", bytes(range(256)), "not valid JSON"),
    ("latin-1", '{"a": "café"}'.encode("latin-1"), "not valid JSON"),
    ("utf-16", '{"a": 1}'.encode("utf-16"), "not valid JSON"),
    ("deep-array", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("deep-object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    ("deep-unclosed", b"[" * 100_000, "JSON"),
    ("huge-integer", b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ("array", b"[1, 2]", "must hold a JSON object, got list"),
    ("string", b'"text"', "must hold a JSON object, got str"),
    ("number", b"42", "must hold a JSON object, got int"),
    ("null", b"null", "must hold a JSON object, got NoneType"),
    ("true", b"true", "must hold a JSON object, got bool"),
]


def check_error(message: str, path: Path, phrase: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert str(path) in message, message
    assert phrase in message, message
    assert len(message) < 500, message


@pytest.mark.parametrize("data, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_manifest_case(tmp_path, data, expected):
    path = tmp_path / "manifest.json"
    path.write_bytes(data)
    with deadline(20):
        if expected == "dict":
            assert isinstance(read_json_manifest(path), dict)
            return
        with pytest.raises(BundleError) as info:
            read_json_manifest(path, hint=HINT)
    check_error(str(info.value), path, expected)
    assert HINT in str(info.value)


@pytest.mark.parametrize(
    "make, phrase",
    [
        (lambda p: os.mkfifo(p), "FIFO"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: os.symlink(p.name, p), "loop"),
        (lambda p: os.symlink("nowhere.json", p), "broken symbolic link"),
        (lambda p: None, "does not exist"),
    ],
    ids=["fifo", "directory", "loop", "broken-link", "missing"],
)
def test_manifest_that_is_not_a_regular_file(tmp_path, make, phrase):
    path = tmp_path / "manifest.json"
    make(path)
    with deadline(10), pytest.raises(BundleError) as info:
        read_json_manifest(path, hint=HINT)
    check_error(str(info.value), path, phrase)


def test_missing_says_what_it_means(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(BundleError, match="is missing: the bundle is incomplete"):
        read_json_manifest(path, missing="the bundle is incomplete")


def test_format_version_is_checked(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format_version": 2}))
    with pytest.raises(BundleError, match="format_version 2, but this cvretrieval reads 3"):
        read_json_manifest(path, format_version=3)
    assert read_json_manifest(path, format_version=2) == {"format_version": 2}


def test_read_json_any_value_and_error_type(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[1, 2]")
    assert read_json(path) == [1, 2]
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(DatasetError) as info:
        read_json(path, error=DatasetError, hint="fix the ground truth")
    check_error(str(info.value), path, "fix the ground truth")


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.binary(max_size=300))
def test_any_bytes_give_a_dict_or_one_line_error(tmp_path, data):
    path = tmp_path / "manifest.json"
    path.write_bytes(data)
    try:
        doc = read_json_manifest(path)
    except BundleError as exc:
        check_error(str(exc), path, "manifest.json")
    else:
        assert isinstance(doc, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE_OK)
@given(value=json_values, depth=st.integers(0, 3000), cut=st.integers(0, 40))
def test_any_json_nested_or_cut_gives_a_dict_or_one_line_error(tmp_path, value, depth, cut):
    text = "[" * depth + json.dumps(value) + "]" * depth
    if cut:
        text = text[:-cut]
    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="utf-8")
    try:
        doc = read_json_manifest(path)
    except BundleError as exc:
        check_error(str(exc), path, "manifest.json")
    else:
        assert isinstance(doc, dict) and depth == 0 and isinstance(value, dict)
