"""Retriever post-processing (PCA-whitening, DBA) and query expansion, end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvretrieval.retriever import Retriever, parse_rerank


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from conftest import textured_image

    root = tmp_path_factory.mktemp("imgs")
    for i in range(24):
        img = textured_image(100 + i // 3)  # 8 groups of 3 near-duplicates
        img = cv2.GaussianBlur(img, (3, 3), 0.3 + 0.4 * (i % 3))
        cv2.imwrite(str(root / f"{i:02d}.png"), img)
    return root


def test_parse_rerank():
    assert parse_rerank("qe,sv") == ("sv", "qe")
    assert parse_rerank(["QE"]) == ("qe",)
    assert parse_rerank("") == ()
    with pytest.raises(ValueError, match="unknown re-ranking"):
        parse_rerank("magic")


def test_qe_with_k_zero_leaves_the_ranking_unchanged(folder):
    ret = Retriever("hog", n_jobs=1).build(folder, progress=False)
    X = ret.rows(range(len(ret)))
    D0, I0 = ret.search_vectors(X, 10)
    ret.qe_k = 0
    D1, I1 = ret.search_vectors(X, 10, rerank="qe")
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_allclose(D0, D1)


def test_qe_keeps_near_duplicates_on_top_and_survives_save_load(folder, tmp_path):
    ret = Retriever("hog", n_jobs=1, rerank="qe", qe_k=2).build(folder, progress=False)
    X = ret.rows(range(len(ret)))
    _, ids = ret.search_vectors(X, 3)
    groups = np.arange(24) // 3
    # every query's top 3 is its own group of near-duplicates
    assert (groups[ids] == groups[:, None]).all()
    ret.save(tmp_path / "b")
    back = Retriever.load(tmp_path / "b", n_jobs=1)
    assert back.rerank == ("qe",) and back.qe_k == 2
    D2, ids2 = back.search_vectors(X, 3)  # vectors read from the segments
    np.testing.assert_array_equal(ids, ids2)


def test_pca_whitening_reduces_dimension_and_round_trips(folder, tmp_path):
    ret = Retriever("hog", n_jobs=1, pca_whiten=8).build(folder, progress=False)
    assert ret.dim == 8 and ret.index.d == 8
    hits = ret.search(folder / "04.png", k=3)
    assert {h.id // 3 for h in hits} == {1}
    ret.save(tmp_path / "w")
    back = Retriever.load(tmp_path / "w", n_jobs=1)
    again = back.search(folder / "04.png", k=3)
    assert [h.id for h in again] == [h.id for h in hits]
    np.testing.assert_allclose([h.score for h in again], [h.score for h in hits], atol=1e-5)


def test_dba_builds_adds_and_ranks_groups_first(folder, tmp_path):
    paths = sorted(folder.glob("*.png"))
    ret = Retriever("hog", n_jobs=1, dba=2).build(paths[:18], progress=False)
    ret.add(paths[18:], progress=False)
    assert len(ret) == 24
    hits = ret.search(paths[20], k=3)
    assert {h.id // 3 for h in hits} == {6}


def test_spatial_verification_needs_stored_features(folder):
    ret = Retriever("hog", n_jobs=1).build(folder, progress=False)
    with pytest.raises(ValueError, match="--rerank sv"):
        ret.search(folder / "00.png", k=3, rerank="sv")


@pytest.fixture(scope="module")
def copies_set(tmp_path_factory):
    """6 textured 'photos': 3 queries with 2 attacked copies each, 3 distractors."""
    from conftest import textured_image

    from cvretrieval.copies import make_copies

    photos = [(f"p{i}", textured_image(700 + i, (300, 400))) for i in range(6)]
    out = tmp_path_factory.mktemp("copies")
    return make_copies(photos, out, n_queries=3, copies_per_query=2, n_distractors=3,
                       attacks=("rotate", "crop"), seed=3)


@pytest.mark.parametrize("features", ["bovw-orb", "hog"])
def test_spatial_verification_puts_copies_first_and_round_trips(copies_set, tmp_path, features):
    from cvretrieval.datasets import load_dataset
    from cvretrieval.embedders import make_embedder

    data = load_dataset(copies_set)
    params = {"n_words": 300, "n_features": 500} if features.startswith("bovw") else {}
    ret = Retriever(make_embedder(features, **params), n_jobs=1, rerank="sv", sv_top=20,
                    sv_min_inliers=20).build(data.image_paths(), progress=False)
    assert ret.supports_rerank == ["sv", "qe"]
    gallery = [str(p.resolve()) for p in data.image_paths()]
    for qi, q in enumerate(data.query_paths()):
        hits = ret.search(q, k=2)
        found = {gallery.index(h.path) for h in hits}
        assert found == set(data.gnd[qi]["ok"]), (features, qi, hits)
    ret.save(tmp_path / "b")
    back = Retriever.load(tmp_path / "b", n_jobs=1)
    assert back.store_features and back.rerank == ("sv",)
    q = data.query_paths()[0]
    assert [h.id for h in back.search(q, k=5)] == [h.id for h in ret.search(q, k=5)]
    # sv then qe: still the copies first
    hits = back.search(q, k=2, rerank="sv,qe")
    assert {gallery.index(h.path) for h in hits} == set(data.gnd[0]["ok"])


def test_add_appends_key_points(copies_set, tmp_path):
    from cvretrieval.datasets import load_dataset
    from cvretrieval.embedders import make_embedder

    data = load_dataset(copies_set)
    paths = data.image_paths()
    ret = Retriever(make_embedder("bovw-orb", n_words=300, n_features=500), n_jobs=1,
                    store_features=True).build(paths[:5], progress=False)
    ret.save(tmp_path / "b")
    back = Retriever.load(tmp_path / "b", n_jobs=1)
    back.add(paths[5:], progress=False)
    assert len(back.feature_store()) == len(back.catalog) == len(paths)
    back.save(tmp_path / "b")
    again = Retriever.load(tmp_path / "b", n_jobs=1)
    assert len(again.feature_store()) == len(paths)
    hits = again.search(data.query_paths()[1], k=2, rerank="sv")
    assert len(hits) == 2


def test_sparse_index_ranks_like_flat_and_round_trips(copies_set, tmp_path):
    from cvretrieval.datasets import load_dataset
    from cvretrieval.embedders import make_embedder

    data = load_dataset(copies_set)
    paths = data.image_paths()

    def build(index, **kw):
        emb = make_embedder("bovw-orb", n_words=200, n_features=400, **kw)
        return Retriever(emb, index=index, n_jobs=1).build(paths, progress=False)

    dense, sparse = build("flat"), build("sparse")
    for q in data.query_paths():
        a, b = dense.search(q, k=5), sparse.search(q, k=5)
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert [h.id for h in a][:2] == [h.id for h in b][:2]
    sparse.save(tmp_path / "s")
    back = Retriever.load(tmp_path / "s", n_jobs=1)
    assert back.sparse and back.index.ntotal == len(paths)
    q = data.query_paths()[0]
    assert [h.id for h in back.search(q, k=5)] == [h.id for h in sparse.search(q, k=5)]
    with pytest.raises(ValueError, match="dense vectors"):
        Retriever(make_embedder("bovw-orb"), index="sparse", pca_whiten=8)
    # query expansion works on sparse vectors too: the copies stay on top
    gallery = [str(p.resolve()) for p in paths]
    for qi, q in enumerate(data.query_paths()):
        found = {gallery.index(h.path) for h in back.search(q, k=2, rerank="qe")}
        assert found == set(data.gnd[qi]["ok"])
    with pytest.raises(ValueError, match="sparse vectors"):
        Retriever("hog", index="sparse")


def test_hnsw_assignment_and_power_tf(copies_set):
    from cvretrieval.datasets import load_dataset
    from cvretrieval.embedders import make_embedder

    data = load_dataset(copies_set)
    emb = make_embedder("bovw-orb", n_words=200, n_features=400, assignment="hnsw", power=0.5)
    ret = Retriever(emb, index="sparse", n_jobs=1, rerank="sv,qe").build(
        data.image_paths(), progress=False)
    gallery = [str(p.resolve()) for p in data.image_paths()]
    for qi, q in enumerate(data.query_paths()):
        found = {gallery.index(h.path) for h in ret.search(q, k=2)}
        assert found == set(data.gnd[qi]["ok"])
