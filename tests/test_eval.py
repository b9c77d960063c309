"""vqsearch.eval: recall@k (plain and tie-aware), label@k and the warm-up timer, on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from vqsearch import errors
from vqsearch.eval import label_at_k, recall_at_k, tie_aware_recall_at_k, timed


def test_recall_counts_the_overlap_of_the_top_k():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[3, 1, 9, 2], [-1, -1, 5, 6]])
    # k = 3: [3, 1, 9] vs [1, 2, 3] and [-1, -1, 5] vs [5, 6, 7]
    assert recall_at_k(found, truth, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert recall_at_k(found, truth) == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert recall_at_k(np.full((1, 2), -1), np.array([[-1, 4]]), 2) == 0.0  # padding never counts
    assert recall_at_k(truth.astype(np.uint64), truth.astype(np.int32)) == 1.0  # dtypes do not matter


def test_tie_aware_recall_counts_ties_with_the_kth_neighbour():
    # exact scores of 5 rows: the 2nd and 3rd tie, so for k = 2 either is a right answer
    truth_scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    found_scores = np.array([[0.9, 0.5]])  # row 2 returned instead of row 1: same score
    assert tie_aware_recall_at_k(found_scores, truth_scores, 2) == 1.0
    assert tie_aware_recall_at_k(np.array([[0.9, 0.1]]), truth_scores, 2) == 0.5
    assert tie_aware_recall_at_k(np.array([[0.9, np.nan]]), truth_scores, 2) == 0.5  # a missing result
    distances = np.array([[0.1, 0.4, 0.4, 2.0]])  # l2: smaller is better
    assert tie_aware_recall_at_k(np.array([[0.4, 0.1]]), distances, 2, higher_is_better=False) == 1.0
    assert tie_aware_recall_at_k(np.array([[2.0, 0.1]]), distances, 2, higher_is_better=False) == 0.5


def test_label_at_k():
    ids = np.array([[4, 7, 1], [2, 3, 5], [-1, -1, -1]])
    assert label_at_k(ids, [7, 5, 0], 2) == pytest.approx(1 / 3)
    assert label_at_k(ids, [7, 5, 0]) == pytest.approx(2 / 3)


def test_bad_arguments_raise_typed_errors():
    truth = np.zeros((2, 3), np.int64)
    with pytest.raises(errors.InvalidInput, match=r"k must be an integer in \[1, 3\], got 4"):
        recall_at_k(truth, truth, 4)
    with pytest.raises(errors.InvalidInput, match="ids has 1 queries, truth has 2"):
        recall_at_k(truth[:1], truth)
    with pytest.raises(errors.InvalidInput, match=r"must be 2-D \(nq, k\)"):
        recall_at_k(truth[0], truth)
    with pytest.raises(errors.InvalidInput, match="ids has 2 queries, labels has 3"):
        label_at_k(truth, [1, 2, 3])
    with pytest.raises(errors.InvalidInput, match="repeat must be >= 1"):
        timed(lambda: None, repeat=0)


def test_timed_drops_warm_up_calls_and_returns_the_last_result():
    calls = []
    result, seconds = timed(lambda: calls.append(len(calls)) or len(calls), repeat=3, warmup=2)
    assert len(calls) == 5 and result == 5 and 0 <= seconds < 60
