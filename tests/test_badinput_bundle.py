"""Damaged bundles: every file of a real bundle missing, truncated, emptied or swapped for
garbage. Loading and searching either work or fail with one line of the project's own
error type naming a file; never another exception, never a traceback, never a hang."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from conftest import cli_run, textured_image

from cvretrieval.errors import CVRetrievalError
from cvretrieval.retriever import Retriever

DAMAGES = ("missing", "empty", "truncated", "garbage")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("bundle")
    paths = []
    for i in range(8):
        p = root / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), textured_image(i, (160, 200))[:, :, ::-1])
        paths.append(p)
    from cvretrieval.embedders import make_embedder

    Retriever(make_embedder("bovw-orb", n_words=16), n_jobs=1, rerank=["sv"]).build(
        paths, output=root / "b")
    return root / "b", paths


def _files(bundle: Path) -> list[str]:
    return sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*")
                  if p.is_file() and p.name != "lock" and not p.name.endswith(("-wal", "-shm")))


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"\x00garbage\xff" * 37)


def _cases() -> list[tuple[str, str]]:
    # the file list of a bundle of this shape (checked against the real one below)
    return [(f, how) for f in (
        "manifest.json", "catalog-000001.sqlite", "index-000001.bin",
        "embedder-000001/embedder.json", "embedder-000001/idf.npy",
        "embedder-000001/vocabulary/centers.npy", "embedder-000001/vocabulary/vocabulary.json",
        "segments/000001/ids.npy", "segments/000001/vectors.npy", "segments/000001/index.bin",
        "segments/000001/features/featurestore.json", "segments/000001/features/offsets.npy",
        "segments/000001/features/keypoints.npy", "segments/000001/features/words.npy",
    ) for how in DAMAGES]


def test_the_case_list_covers_the_bundle(pristine):
    bundle, _ = pristine
    listed = {f for f, _ in _cases()}
    assert set(_files(bundle)) <= listed, set(_files(bundle)) - listed


@pytest.mark.parametrize("name, how", _cases())
def test_damaged_file_fails_with_one_line(pristine, tmp_path, name, how):
    bundle, paths = pristine
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    if not (b / name).exists():
        pytest.skip(f"{name} is not written for this bundle")
    _damage(b / name, how)
    try:
        ret = Retriever.load(b)
        ret.search(paths[0], k=3)
        ret.search(paths[1], k=3, rerank="sv")
    except CVRetrievalError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return
    # nothing raised: the damage must have been harmless (e.g. a file rebuilt on the fly)
    assert Retriever.load(b).search(paths[0], k=1)[0].path == str(paths[0].resolve())


@pytest.mark.parametrize("how", ["missing", "garbage"])
@pytest.mark.parametrize("index, name", [("flat", "vectors.npy"), ("hnsw", "index.bin")])
def test_cli_on_a_damaged_bundle_prints_one_line(pristine, tmp_path, how, index, name):
    """A flat index is read from the segment's vectors (no shard file); others from
    their shard."""
    bundle, paths = pristine
    b = tmp_path / "b"
    if index == "flat":
        shutil.copytree(bundle, b)
        assert not (b / "segments" / "000001" / "index.bin").exists()
    else:
        from cvretrieval.embedders import make_embedder

        Retriever(make_embedder("bovw-orb", n_words=16), n_jobs=1, index=index).build(
            paths, output=b)
    _damage(b / "segments" / "000001" / name, how)
    r = cli_run("search", b, paths[0], ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_swapped_vocabulary_from_another_bundle_is_refused(pristine, tmp_path):
    bundle, paths = pristine
    from cvretrieval.embedders import make_embedder

    other = Retriever(make_embedder("bovw-orb", n_words=16, random_state=7), n_jobs=1,
                      random_state=7).build(paths, output=tmp_path / "other")
    assert other is not None
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    src = tmp_path / "other" / "embedder-000001" / "vocabulary" / "centers.npy"
    shutil.copy(src, b / "embedder-000001" / "vocabulary" / "centers.npy")
    with pytest.raises(CVRetrievalError, match="checksum"):
        Retriever.load(b)


def test_manifest_with_wrong_types_is_named(pristine, tmp_path):
    bundle, paths = pristine
    for key, value in (("index", "flat"), ("options", []), ("metric", "cosine"),
                       ("segments", "all"), ("next_id", -3), ("counts", None)):
        b = tmp_path / f"b-{key}"
        shutil.copytree(bundle, b)
        m = json.loads((b / "manifest.json").read_text())
        m[key] = value
        (b / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(CVRetrievalError, match=key):
            Retriever.load(b)
