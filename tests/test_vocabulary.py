"""Visual vocabularies: known answers on synthetic clusters, exact assignment, I/O."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from cvretrieval.errors import BundleError, NotFittedError
from cvretrieval.features.vocabulary import (
    HammingVocabulary,
    KMeansVocabulary,
    _majority_update,
    load_vocabulary,
    make_vocabulary,
    sample_descriptors,
    save_vocabulary,
)

# --------------------------------------------------------------------------- data


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """The problems here are tiny: OpenMP threads only add start-up and contention costs."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def float_clusters(k=8, d=16, per=60, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    # centres on a widely spaced grid: pairwise distance >= 10, noise std 0.05
    true = rng.permutation(np.eye(d, dtype=np.float32)[:k] * 10.0 + rng.normal(0, 0.5, (k, d)))
    labels = np.repeat(np.arange(k), per)
    x = true[labels] + rng.normal(0, spread, (k * per, d))
    return true.astype(np.float32), x.astype(np.float32), labels


def binary_clusters(k=6, nbytes=32, per=40, flips=3, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (k, nbytes), dtype=np.uint8)
    bits = np.unpackbits(protos, axis=1)
    labels = np.repeat(np.arange(k), per)
    xb = bits[labels].copy()
    for i in range(len(xb)):  # flip a few random bits of each member
        xb[i, rng.choice(8 * nbytes, flips, replace=False)] ^= 1
    return protos, np.packbits(xb, axis=1), labels


def brute_hamming(x, c):
    """(n, k) Hamming distances, by unpacking bits (independent of Faiss)."""
    bx, bc = np.unpackbits(x, axis=1).astype(np.int32), np.unpackbits(c, axis=1).astype(np.int32)
    return (bx[:, None, :] != bc[None, :, :]).sum(-1)


def match_rows(a, b, dist):
    """Best one-to-one matching of the rows of a and b; returns per-pair distances."""
    cost = dist(a, b)
    r, c = linear_sum_assignment(cost)
    return cost[r, c]


# --------------------------------------------------------------------------- sampling


def test_sample_descriptors_bounded_dtype_and_rows_come_from_input():
    rng = np.random.default_rng(1)
    sets = [rng.integers(0, 256, (n, 32), dtype=np.uint8) for n in (0, 10, 500, 3, 0, 250)]
    out = sample_descriptors(sets, max_descriptors=100, random_state=0)
    assert out.shape == (100, 32) and out.dtype == np.uint8
    pool = {r.tobytes() for s in sets for r in s}
    assert all(r.tobytes() in pool for r in out)
    # without replacement: all rows distinct (random 32-byte rows are unique)
    assert len({r.tobytes() for r in out}) == 100


def test_sample_descriptors_returns_everything_when_small_and_keeps_float_dtype():
    sets = [np.arange(6, dtype=np.float64).reshape(3, 2), np.zeros((0, 2)), None]
    out = sample_descriptors(sets, max_descriptors=10)
    np.testing.assert_array_equal(out, sets[0])
    assert out.dtype == np.float64


def test_sample_descriptors_deterministic_and_seed_dependent():
    sets = [np.arange(1000 * i, 1000 * i + n).reshape(-1, 1) for i, n in enumerate((300, 700))]
    a = sample_descriptors(sets, 50, random_state=3)
    b = sample_descriptors(sets, 50, random_state=3)
    c = sample_descriptors(sets, 50, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_descriptors_uniform_across_sets():
    # set sizes 100 and 900: a uniform draw takes ~10% from the first set
    sets = [np.zeros((100, 1), np.int64), np.ones((900, 1), np.int64)]
    fractions = [(sample_descriptors(sets, 200, random_state=s) == 0).mean() for s in range(200)]
    assert abs(np.mean(fractions) - 0.1) < 0.01
    # every single row is drawn with probability 200/1000
    counts = np.zeros(1000)
    ids = [np.arange(100).reshape(-1, 1), np.arange(100, 1000).reshape(-1, 1)]
    for s in range(300):
        counts[sample_descriptors(ids, 200, random_state=s)[:, 0]] += 1
    assert abs(counts.mean() / 300 - 0.2) < 1e-9
    assert counts.min() > 300 * 0.2 - 40 and counts.max() < 300 * 0.2 + 40


def test_sample_descriptors_all_empty_raises():
    with pytest.raises(ValueError, match="no key points"):
        sample_descriptors([np.zeros((0, 128), np.float32), np.zeros((0, 128), np.float32)])
    with pytest.raises(ValueError, match="no key points"):
        sample_descriptors([])


def test_sample_descriptors_mixed_widths_raise():
    with pytest.raises(ValueError, match="mixing"):
        sample_descriptors([np.zeros((2, 32), np.uint8), np.zeros((2, 61), np.uint8)])


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("init,k,n_init", [("k-means++", 8, 1), ("random", 3, 30)])
def test_kmeans_recovers_well_separated_centres(init, k, n_init):
    true, x, labels = float_clusters(k=k)
    # uniform seeding covers all k clusters with probability k!/k^k per run (2/9 for k=3),
    # so it needs restarts (0.78^30 < 0.1% failure); k-means++ needs none on such data
    voc = KMeansVocabulary(n_words=k, init=init, n_init=n_init, random_state=0).fit(x)
    assert voc.centers_.shape == (k, 16) and voc.centers_.dtype == np.float32
    d = match_rows(voc.centers_, true, lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1))
    # the mean of 60 points with noise std 0.05 is within ~0.05 of the true centre
    assert d.max() < 0.1
    # and the clusters are the generating ones (same partition up to relabelling)
    words = voc.assign(x)
    for c in range(k):
        assert len(np.unique(words[labels == c])) == 1
    assert len(np.unique(words)) == k


def test_kmeans_assign_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    voc = KMeansVocabulary(n_words=50, niter=5).fit(x)
    q = rng.normal(size=(1000, 24)).astype(np.float32)
    words = voc.assign(q, batch_size=97)  # several batches, ragged last one
    assert words.dtype == np.int64 and words.shape == (1000,)
    d = ((q[:, None, :].astype(np.float64) - voc.centers_[None].astype(np.float64)) ** 2).sum(-1)
    best = d.argmin(1)
    chosen = d[np.arange(1000), words]
    # exact up to float rounding: the chosen centre is (one of) the nearest
    np.testing.assert_allclose(chosen, d.min(1), rtol=1e-5, atol=1e-5)
    sorted_d = np.sort(d, axis=1)
    clear = (sorted_d[:, 1] - sorted_d[:, 0]) > 1e-3
    np.testing.assert_array_equal(words[clear], best[clear])


def test_kmeans_assign_agrees_with_faiss_flat_search_on_sift_range_data():
    # the one-GEMM assignment against the Faiss exhaustive search it replaced, on
    # descriptors in SIFT's range (0..255, norms ~512), where rounding matters most
    import faiss

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(6000, 128)).astype(np.float32)
    voc = KMeansVocabulary(n_words=300, niter=3).fit(x)
    q = rng.integers(0, 256, size=(700, 128)).astype(np.float32)
    ids, dist = voc.assign_multi(q, 1)
    index = faiss.IndexFlatL2(128)
    index.add(voc.centers_)
    d_ref, i_ref = index.search(q, 1)
    np.testing.assert_allclose(dist[:, 0], d_ref[:, 0], rtol=1e-4)
    assert (ids[:, 0] == i_ref[:, 0]).mean() > 0.99  # differences only at near-ties
    assert voc.distortion(q) == pytest.approx(float(d_ref.mean()), rel=1e-5)


def test_kmeans_assign_multi_sorted_and_consistent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, 8)).astype(np.float32)
    voc = KMeansVocabulary(n_words=20, niter=5).fit(x)
    ids, dist = voc.assign_multi(x[:100], 4)
    assert ids.shape == dist.shape == (100, 4)
    assert ids.dtype == np.int64 and dist.dtype == np.float32
    assert np.all(np.diff(dist, axis=1) >= 0)
    ref = ((x[:100, None, :] - voc.centers_[ids]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ids[:, 0], voc.assign(x[:100]))
    with pytest.raises(ValueError, match="m must be"):
        voc.assign_multi(x, 21)


@pytest.mark.parametrize(
    "cls,data",
    [
        (KMeansVocabulary, np.random.default_rng(4).normal(size=(500, 8)).astype(np.float32)),
        (HammingVocabulary, np.random.default_rng(4).integers(0, 256, (500, 32), dtype=np.uint8)),
    ],
)
def test_centres_are_assigned_to_themselves(cls, data):
    voc = cls(n_words=30).fit(data)
    # k-majority centres may coincide only if two clusters are identical: check distinctness
    assert len({c.tobytes() for c in voc.centers_}) == 30
    np.testing.assert_array_equal(voc.assign(voc.centers_), np.arange(30))


@pytest.mark.parametrize(
    "cls,dim,dtype", [(KMeansVocabulary, 8, np.float32), (HammingVocabulary, 32, np.uint8)]
)
def test_empty_input_gives_empty_output(cls, dim, dtype):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (200, dim)).astype(dtype)
    voc = cls(n_words=5).fit(x)
    for empty in (np.zeros((0, dim), dtype), np.zeros((0,), dtype)):
        out = voc.assign(empty)
        assert out.shape == (0,) and out.dtype == np.int64
    ids, dist = voc.assign_multi(np.zeros((0, dim), dtype), 2)
    assert ids.shape == (0, 2) and dist.shape == (0, 2)


def test_kmeans_reproducible_with_random_state():
    x = np.random.default_rng(6).normal(size=(2000, 16)).astype(np.float32)
    a = KMeansVocabulary(n_words=25, random_state=7).fit(x).centers_
    b = KMeansVocabulary(n_words=25, random_state=7).fit(x).centers_
    c = KMeansVocabulary(n_words=25, random_state=8).fit(x).centers_
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    "cls,x",
    [
        (KMeansVocabulary, np.zeros((9, 4), np.float32)),
        (HammingVocabulary, np.zeros((9, 4), np.uint8)),
    ],
)
def test_too_few_descriptors(cls, x):
    with pytest.raises(ValueError, match=r"10 words from 9 descriptors.*fewer words.*more images"):
        cls(n_words=10).fit(x)


@pytest.mark.parametrize("cls", [KMeansVocabulary, HammingVocabulary])
def test_not_fitted(cls):
    voc = cls(n_words=3)
    for call in (
        lambda: voc.assign(np.zeros((1, 32), np.uint8)),
        lambda: voc.dim,
        lambda: save_vocabulary(voc, "nowhere"),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_kmeans_distortion_is_mean_squared_distance():
    x = np.random.default_rng(9).normal(size=(600, 6)).astype(np.float32)
    voc = KMeansVocabulary(n_words=12, niter=5).fit(x)
    d = ((x[:, None, :].astype(np.float64) - voc.centers_[None]) ** 2).sum(-1).min(1)
    assert voc.distortion(x) == pytest.approx(d.mean(), rel=1e-4)
    assert voc.objective(x) == voc.distortion(x)


def test_init_does_no_work_and_get_params():
    voc = KMeansVocabulary(n_words=-5)  # validated in fit, not here
    assert voc.get_params()["n_words"] == -5
    with pytest.raises(ValueError, match="n_words"):
        voc.fit(np.zeros((10, 2), np.float32))
    assert not hasattr(voc, "centers_")


# --------------------------------------------------------------------------- Hamming


def test_majority_update_hand_example():
    # 1-byte descriptors (bits MSB first); cluster 0 = first three, cluster 1 = last two
    x = np.array([[0b11110000], [0b11001100], [0b10101010], [0b00000001], [0b00000011]], np.uint8)
    labels = np.array([0, 0, 0, 1, 1])
    centers, sizes = _majority_update(np.unpackbits(x, axis=1), labels, 3)
    # cluster 0 bit votes: 3,2,2,1,2,1,1,0 of 3 -> 1,1,1,0,1,0,0,0
    # cluster 1 bit votes: 0,...,0,1,2 of 2 -> bit 1 is a 1-1 tie -> 0, bit 0 -> 1
    np.testing.assert_array_equal(centers[:, 0], [0b11101000, 0b00000001, 0])
    np.testing.assert_array_equal(sizes, [3, 2, 0])


def test_hamming_single_word_is_bitwise_majority():
    x = np.array([[0b11110000, 0xFF], [0b11001100, 0x00], [0b10101010, 0x0F]], np.uint8)
    voc = HammingVocabulary(n_words=1).fit(x)
    np.testing.assert_array_equal(voc.centers_, [[0b11101000, 0x0F]])
    assert voc.centers_.dtype == np.uint8 and voc.binary and voc.n_bits == 16


@pytest.mark.parametrize("init,k,n_init", [("k-means++", 6, 1), ("random", 3, 30)])
def test_hamming_recovers_prototypes_exactly(init, k, n_init):
    protos, x, labels = binary_clusters(k=k)
    voc = HammingVocabulary(n_words=k, init=init, n_init=n_init, random_state=0).fit(x)
    # with 3 flipped bits of 256 per member, the majority of 40 members is the prototype
    assert {c.tobytes() for c in voc.centers_} == {p.tobytes() for p in protos}
    words = voc.assign(x)
    for c in range(k):
        assert len(np.unique(words[labels == c])) == 1
    assert voc.distortion(x) == pytest.approx(3.0)  # each member is exactly 3 bits away
    assert voc.n_iter_ < voc.niter  # converged early


def test_hamming_assign_matches_brute_force():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    voc = HammingVocabulary(n_words=40, niter=4).fit(x)
    q = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    words = voc.assign(q, batch_size=64)
    d = brute_hamming(q, voc.centers_)
    # ties are frequent in Hamming space: the chosen word must be at the minimum distance,
    # and must be the brute-force argmin wherever that minimum is unique
    np.testing.assert_array_equal(d[np.arange(500), words], d.min(1))
    unique = (d == d.min(1, keepdims=True)).sum(1) == 1
    assert unique.sum() > 100
    np.testing.assert_array_equal(words[unique], d.argmin(1)[unique])
    ids, dist = voc.assign_multi(q, 3)
    np.testing.assert_array_equal(dist, np.take_along_axis(d, ids, 1))
    np.testing.assert_array_equal(dist, np.sort(d, 1)[:, :3])
    assert voc.distortion(q) == pytest.approx(d.min(1).mean())


def test_hamming_reproducible_and_rejects_float():
    x = np.random.default_rng(11).integers(0, 256, (1000, 32), dtype=np.uint8)
    a = HammingVocabulary(n_words=20, random_state=1).fit(x).centers_
    b = HammingVocabulary(n_words=20, random_state=1).fit(x).centers_
    c = HammingVocabulary(n_words=20, random_state=2).fit(x).centers_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(TypeError, match="uint8"):
        HammingVocabulary(n_words=2).fit(x.astype(np.float32))


def test_hamming_improves_on_its_initialisation():
    x = np.random.default_rng(12).integers(0, 256, (3000, 32), dtype=np.uint8)
    one = HammingVocabulary(n_words=30, niter=1).fit(x)  # initial seeds + one update
    many = HammingVocabulary(n_words=30, niter=10).fit(x)
    seeds_only = HammingVocabulary(n_words=30)._init_centers(x, 30, np.random.default_rng(0))
    seed_dist = brute_hamming(x, seeds_only).min(1).mean()
    assert many.distortion(x) <= one.distortion(x) < seed_dist


def test_make_vocabulary():
    v = make_vocabulary(64, binary=True, random_state=3, niter=4)
    assert isinstance(v, HammingVocabulary) and v.n_words == 64 and v.niter == 4
    assert v.random_state == 3
    assert isinstance(make_vocabulary(10, binary=False), KMeansVocabulary)


# --------------------------------------------------------------------------- save / load


@pytest.fixture(scope="module", params=["kmeans", "hamming"])
def fitted(request):
    """A small fitted vocabulary of each kind (fitted once per module: treat as read-only)."""
    rng = np.random.default_rng(13)
    if request.param == "kmeans":
        x = rng.normal(size=(600, 16)).astype(np.float32)
        voc = KMeansVocabulary(n_words=20, niter=5, random_state=5)
    else:
        x = rng.integers(0, 256, (600, 32), dtype=np.uint8)
        voc = HammingVocabulary(n_words=20, niter=5, random_state=5)
    return voc.fit(x), x


def test_save_load_round_trip(fitted, tmp_path):
    voc, x = fitted
    voc = copy.deepcopy(voc)  # the fixture is shared; also checks copies drop the index cache
    voc.meta_ = {"detector": "orb", "n_images": 12}
    save_vocabulary(voc, tmp_path / "a" / "voc")
    doc = json.loads((tmp_path / "a" / "voc" / "vocabulary.json").read_text())
    assert doc["format_version"] == 1 and doc["kind"] == voc.kind
    assert doc["n_words"] == 20 and doc["dim"] == x.shape[1]
    assert doc["params"]["random_state"] == 5 and doc["meta"]["detector"] == "orb"
    back = load_vocabulary(tmp_path / "a" / "voc")
    assert type(back) is type(voc) and back.get_params() == voc.get_params()
    np.testing.assert_array_equal(back.centers_, voc.centers_)
    assert back.centers_.dtype == voc.centers_.dtype
    np.testing.assert_array_equal(back.assign(x), voc.assign(x))
    assert back.meta_ == {"detector": "orb", "n_images": 12}
    # overwrite in place
    save_vocabulary(back, tmp_path / "a" / "voc")
    assert sorted(p.name for p in (tmp_path / "a" / "voc").iterdir()) == [
        "centers.npy",
        "vocabulary.json",
    ]


def test_pickling_leaves_the_original_index_cache_alone(fitted):
    voc, x = fitted
    index = voc._get_index()
    clone = pickle.loads(pickle.dumps(voc))  # what joblib does for every worker chunk
    assert "_derived_cache" not in clone.__dict__ and voc._get_index() is index
    np.testing.assert_array_equal(clone.assign(x), voc.assign(x))


def _hint(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert str(path) in msg and "cvret vocab build" in msg and "\n" not in msg


def test_load_missing(tmp_path):
    with pytest.raises(BundleError) as e:
        load_vocabulary(tmp_path / "nope")
    _hint(e, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="vocabulary.json") as e:
        load_vocabulary(tmp_path / "empty")
    _hint(e, tmp_path / "empty")


def test_load_missing_centres(fitted, tmp_path):
    save_vocabulary(fitted[0], tmp_path)
    (tmp_path / "centers.npy").unlink()
    with pytest.raises(BundleError, match="centers.npy") as e:
        load_vocabulary(tmp_path)
    _hint(e, tmp_path)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: json.dumps({**d, "format_version": 99}), "format_version 99"),
        (
            lambda d: json.dumps({k: v for k, v in d.items() if k != "format_version"}),
            "format_version None",
        ),
        (lambda d: json.dumps({**d, "kind": "pq"}), "kind"),
        (lambda d: json.dumps({**d, "n_words": d["n_words"] + 1}), "shape"),
        (lambda d: json.dumps({**d, "dim": 7}), "shape"),
        (lambda d: json.dumps({**d, "dtype": "float64"}), "dtype"),
        (lambda d: json.dumps({**d, "params": {**d["params"], "bogus": 1}}), "parameters"),
        (lambda d: json.dumps([1, 2]), "JSON object"),
    ],
)
def test_load_corrupted_json(fitted, tmp_path, edit, match):
    save_vocabulary(fitted[0], tmp_path)
    path = tmp_path / "vocabulary.json"
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(BundleError, match=match) as e:
        load_vocabulary(tmp_path)
    _hint(e, tmp_path)


def test_load_centres_mismatch(fitted, tmp_path):
    voc, _ = fitted
    save_vocabulary(voc, tmp_path)
    np.save(tmp_path / "centers.npy", voc.centers_[:-1])
    with pytest.raises(BundleError, match="shape"):
        load_vocabulary(tmp_path)
    np.save(tmp_path / "centers.npy", voc.centers_.astype(np.float64))
    with pytest.raises(BundleError, match="dtype"):
        load_vocabulary(tmp_path)
    (tmp_path / "centers.npy").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot be read"):
        load_vocabulary(tmp_path)


def test_load_refuses_pickled_centres(fitted, tmp_path):
    voc, _ = fitted
    save_vocabulary(voc, tmp_path)
    np.save(tmp_path / "centers.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match="cannot be read"):
        load_vocabulary(tmp_path)


def test_majority_of_packed_equals_counting_bits():
    """The bincount form of the k-majority update against counting every bit by hand."""
    from cvretrieval.features.kmajority import majority_of_packed

    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (500, 4), dtype=np.uint8)
    x[:50] = 0b10110000  # a cluster with a clear majority pattern
    labels = rng.integers(0, 7, 500)
    labels[:50] = 3
    centers, sizes = majority_of_packed(x, labels, 9)  # clusters 7 and 8 are empty
    bits = np.unpackbits(x, axis=1)
    for c in range(9):
        members = bits[labels == c]
        assert sizes[c] == len(members)
        want = (2 * members.sum(axis=0) > len(members)).astype(np.uint8)
        np.testing.assert_array_equal(np.unpackbits(centers[c]), want)
    assert not centers[7].any() and not centers[8].any()
