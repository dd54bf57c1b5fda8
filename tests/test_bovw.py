"""BoVW maths: tf, df, idf and tf-idf checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from cvretrieval.features.bovw import (
    document_frequencies,
    idf_weights,
    term_frequencies,
    tfidf,
    to_dense,
    vocabulary_warning,
)

# three images over a 5-word vocabulary; word 4 never occurs
WORDS = [np.array([0, 1, 1, 3, 1]), np.array([], dtype=np.int64), np.array([3, 0, 2, 0])]
TF_HAND = np.array([[1, 3, 0, 1, 0], [0, 0, 0, 0, 0], [2, 0, 1, 1, 0]], dtype=np.float32)


def test_term_frequencies_counts_by_hand():
    tf = term_frequencies(WORDS, 5)
    assert sp.issparse(tf) and tf.format == "csr" and tf.dtype == np.float32
    assert tf.shape == (3, 5)
    np.testing.assert_array_equal(tf.toarray(), TF_HAND)
    assert tf.has_canonical_format and tf.nnz == 6


def test_term_frequencies_sublinear_by_hand():
    tf = term_frequencies(WORDS, 5, sublinear=True).toarray()
    expected = np.zeros((3, 5))
    expected[0, [0, 1, 3]] = [1.0, 1.0 + math.log(3), 1.0]
    expected[2, [0, 2, 3]] = [1.0 + math.log(2), 1.0, 1.0]
    np.testing.assert_allclose(tf, expected, rtol=1e-6)


def test_term_frequencies_weights_by_hand():
    w = [np.array([0.5, 0.25, 0.25, 1.0, 2.0]), np.array([]), np.array([1.0, 0.1, 0.2, 0.3])]
    tf = term_frequencies(WORDS, 5, weights=w).toarray()
    expected = np.array([[0.5, 2.5, 0, 1.0, 0], [0] * 5, [0.4, 0, 0.2, 1.0, 0]])
    np.testing.assert_allclose(tf, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="cannot be combined"):
        term_frequencies(WORDS, 5, weights=w, sublinear=True)
    with pytest.raises(ValueError, match="weights 2"):
        term_frequencies(WORDS, 5, weights=w[:2] + [np.ones(3)])


def test_term_frequencies_edge_cases():
    assert term_frequencies([], 7).shape == (0, 7)
    assert term_frequencies([np.array([], dtype=np.int64)] * 2, 3).nnz == 0
    with pytest.raises(ValueError, match=r"word id 5, outside \[0, 5\)"):
        term_frequencies([np.array([0, 5])], 5)
    with pytest.raises(ValueError, match="word id -1"):
        term_frequencies([np.array([-1, 2])], 5)
    with pytest.raises(ValueError, match="integer"):
        term_frequencies([np.array([0.5])], 5)


def test_document_frequencies_by_hand():
    df = document_frequencies(term_frequencies(WORDS, 5))
    assert df.dtype == np.int64
    np.testing.assert_array_equal(df, [2, 1, 1, 2, 0])
    # dense input and explicit zeros count as absent
    np.testing.assert_array_equal(document_frequencies(TF_HAND), [2, 1, 1, 2, 0])
    m = sp.csr_matrix((np.array([0.0, 2.0]), np.array([1, 2]), np.array([0, 2])), shape=(1, 3))
    np.testing.assert_array_equal(document_frequencies(m), [0, 0, 1])


def test_idf_by_hand():
    idf = idf_weights(np.array([2, 1, 1, 2, 0]), 3, smooth=False)
    assert idf.dtype == np.float32 and idf.shape == (5,)
    np.testing.assert_allclose(
        idf, [math.log(3 / 2), math.log(3), math.log(3), math.log(3 / 2), 0.0], rtol=1e-6
    )
    # a word in every document carries no information
    assert idf_weights(np.array([4]), 4, smooth=False)[0] == 0.0
    with pytest.raises(ValueError, match=r"\[0, n_docs=3\]"):
        idf_weights(np.array([4]), 3)
    with pytest.raises(ValueError, match="n_docs"):
        idf_weights(np.array([0]), 0)


def test_smoothed_idf_by_hand_never_zero():
    # issue 13: ln(N/df) gives 0 to a word in every image; the default ln((1 + N) / df)
    # never does (ln(1 + N) for a word in no image)
    idf = idf_weights(np.array([2, 1, 1, 2, 0, 3]), 3)
    expected = [math.log(4 / 2), math.log(4), math.log(4), math.log(4 / 2), math.log(4),
                math.log(4 / 3)]
    np.testing.assert_allclose(idf, expected, rtol=1e-6)
    assert (idf > 0).all()


def test_word_in_every_image_keeps_vectors_nonzero():
    # issue 13 defect 3: every word in every image -> all-zero vectors with raw idf
    words = [np.array([0, 1, 1, 2]), np.array([2, 1, 0, 0]), np.array([0, 1, 2])]
    tf = term_frequencies(words, 3)
    raw = tfidf(tf, idf_weights(document_frequencies(tf), 3, smooth=False)).toarray()
    assert not raw.any()  # the defect, reproduced with the unsmoothed weights
    x = tfidf(tf, idf_weights(document_frequencies(tf), 3)).toarray()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-6)
    # image 0 = (1, 2, 1)/sqrt(6): its best match is itself
    assert np.argmax(x @ x[0]) == 0


def test_vocabulary_warning():
    assert vocabulary_warning(np.full(32, 30), 30) is not None
    assert "too small" in vocabulary_warning(np.full(32, 30), 30)
    df = np.r_[np.full(5, 30), np.full(95, 3)]  # 5 % of the words are everywhere: fine
    assert vocabulary_warning(df, 30) is None
    assert vocabulary_warning(np.full(4, 3), 3) is None  # too few images to judge


def test_tfidf_by_hand_and_unit_rows():
    idf = idf_weights(document_frequencies(term_frequencies(WORDS, 5)), 3, smooth=False)
    x = tfidf(term_frequencies(WORDS, 5), idf)
    assert x.format == "csr" and x.dtype == np.float32
    a, b = math.log(1.5), math.log(3)
    row0 = np.array([1 * a, 3 * b, 0, 1 * a, 0])
    row2 = np.array([2 * a, 0, 1 * b, 1 * a, 0])
    expected = np.vstack([row0 / np.linalg.norm(row0), np.zeros(5), row2 / np.linalg.norm(row2)])
    np.testing.assert_allclose(x.toarray(), expected, rtol=1e-6, atol=1e-7)
    norms = np.linalg.norm(x.toarray(), axis=1)
    np.testing.assert_allclose(norms, [1, 0, 1], rtol=1e-6)
    raw = tfidf(term_frequencies(WORDS, 5), idf, normalize=False).toarray()
    np.testing.assert_allclose(raw[0], row0, rtol=1e-6)


def test_tfidf_zero_rows_stay_zero_no_nan():
    # words 0 and 1 appear in images 0 and 1, word 2 only in image 0: with N = 2,
    # idf = [0, 0, ln 2]; image 1 holds only zero-idf words, image 2 no words at all
    tf = term_frequencies([np.array([0, 1, 2]), np.array([0, 1, 1]), np.array([], int)], 3)
    idf = idf_weights(document_frequencies(tf[:2]), 2, smooth=False)
    np.testing.assert_allclose(idf, [0, 0, math.log(2)], rtol=1e-6)
    x = tfidf(tf, idf).toarray()
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[1:], 0)
    np.testing.assert_allclose(x[0], [0, 0, 1], rtol=1e-6)
    assert tfidf(sp.csr_matrix((0, 4), dtype=np.float32), np.ones(4)).shape == (0, 4)
    with pytest.raises(ValueError, match="idf has 2"):
        tfidf(tf, np.ones(2))


def test_tf_normalisation_irrelevant_after_l2():
    # Sivic & Zisserman divide tf by the word count of the image; after L2 it is the same
    tf = term_frequencies(WORDS, 5)
    idf = np.array([0.3, 1.2, 0.7, 2.0, 0.5], np.float32)
    counts = np.asarray(tf.sum(axis=1)).ravel()
    divided = sp.diags(1 / np.maximum(counts, 1)) @ tf
    np.testing.assert_allclose(tfidf(divided, idf).toarray(), tfidf(tf, idf).toarray(), rtol=1e-6)


def test_to_dense():
    tf = term_frequencies(WORDS, 5)
    d = to_dense(tf)
    assert d.dtype == np.float32 and d.flags.c_contiguous and d.shape == (3, 5)
    np.testing.assert_array_equal(d, TF_HAND)
    f = to_dense(np.asfortranarray(TF_HAND.astype(np.float64)))
    assert f.flags.c_contiguous and f.dtype == np.float32
