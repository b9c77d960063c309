"""Self-calibration: the exact neighbour lists of the calibration sample, the recall the index estimates for
itself against the recall measured on held-out queries, and recall targets (met, or warned about)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vqsearch import Index, errors
from vqsearch.eval import recall_at_k
from vqsearch.index import get_metric
from vqsearch.index.calibration import TRUTH_DEPTH, CalibrationSample
from vqsearch.index.tuning import RecallWarning


def exact_ranking(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """Ranking scores (higher = nearer) of every (query, row) pair in float64, after the metric's preparation."""
    m = get_metric(metric)
    q, b = m.prepare(xq).astype(np.float64), m.prepare(xb).astype(np.float64)
    ip = q @ b.T
    return 2 * ip - (b**2).sum(1)[None] if metric == "l2" else ip


def exact_ids(xq: np.ndarray, xb: np.ndarray, metric: str, k: int = 10) -> np.ndarray:
    return np.argsort(-exact_ranking(xq, xb, metric), axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------- synthetic distributions, built here
def varying_norms(n: int, d: int, seed: int) -> np.ndarray:
    """Clustered directions with log-normal norms (spread ×20 between the 5th and 95th percentile)."""
    r = np.random.default_rng(seed)
    centres = r.standard_normal((24, d))
    x = centres[r.integers(0, 24, n)] + 0.8 * r.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * np.exp(r.normal(0, 0.9, (n, 1)))).astype(np.float32)


def hub_heavy(n: int, d: int, seed: int) -> np.ndarray:
    """Heavy-tailed (Student t, 3 degrees of freedom) coordinates around a shared offset: a few rows are the
    near neighbours of many queries."""
    r = np.random.default_rng(seed)
    t = r.standard_t(3, (n, d)) * np.exp(r.normal(0, 0.5, (n, 1)))
    return (t + 0.5 * r.standard_normal(d)).astype(np.float32)


def low_intrinsic(n: int, d: int, seed: int, intrinsic: int = 6) -> np.ndarray:
    """A 6-dimensional non-linear manifold embedded in d dimensions, with slight noise."""
    r = np.random.default_rng(seed)
    z = r.uniform(-1, 1, (n, intrinsic))
    features = np.concatenate([z, np.sin(3 * z), np.cos(2 * z), z**2], axis=1)
    return (features @ r.standard_normal((features.shape[1], d)) + 0.02 * r.standard_normal((n, d))).astype(np.float32)


def rotated_768(n: int, seed: int) -> np.ndarray:
    """Clustered 96-d data zero-padded to 768 and randomly rotated (a dense 768-d embedding of rank 96)."""
    r = np.random.default_rng(seed)
    centres = r.standard_normal((16, 96)) * 1.5
    low = centres[r.integers(0, 16, n)] + r.standard_normal((n, 96))
    rotation, _ = np.linalg.qr(r.standard_normal((768, 768)))
    return (np.pad(low, ((0, 0), (0, 768 - 96))) @ rotation).astype(np.float32)


# ---------------------------------------------------------------- the calibration sample
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_sample_neighbours_stay_exact_across_writes(metric):
    """Batches, an upsert that moves rows and a re-add: the live lists equal brute force over the live rows."""
    m = get_metric(metric)
    r = np.random.default_rng(3)
    x = varying_norms(1500, 16, seed=4)
    ids = np.arange(1500)
    sample = CalibrationSample.draw(m.prepare(x[:600]), ids[:600])
    for part in (slice(0, 600), slice(600, 1100), slice(1100, 1500)):
        sample = sample.merged(m.prepare(x[part]), ids[part], metric=m)
    moved = r.choice(1500, 200, replace=False)
    x[moved] = varying_norms(200, 16, seed=5)
    sample = sample.merged(m.prepare(x[moved]), ids[moved], metric=m)
    deleted = r.choice(1500, 30, replace=False)
    live = ~np.isin(sample.truth_ids, deleted)
    rows, got, _ = sample.exact_top(10, live)
    scores = exact_ranking(sample.queries, x, metric)
    scores[:, deleted] = -np.inf
    scores[np.arange(sample.size), sample.self_ids] = -np.inf  # a query is not its own neighbour
    want = np.argsort(-scores, axis=1, kind="stable")[rows, :10]
    assert rows.size >= sample.size - 5
    # exact up to float32 ties: compare the exact scores of the ids found with those of the true ones
    np.testing.assert_allclose(np.take_along_axis(scores[rows], got, 1), np.take_along_axis(scores[rows], want, 1),
                               rtol=1e-4, atol=1e-4)
    assert sample.truth_ids.shape[1] == TRUTH_DEPTH


def test_training_sample_queries_find_their_rows():
    """Queries drawn by train() are matched to their rows when those are added, and excluded as neighbours."""
    x = varying_norms(800, 16, seed=6)
    idx = Index.create(None, dim=16, metric="l2", scan="binary", rescore="float16", target_recall=None)
    idx.train(x)
    idx.add(x[::-1].copy(), ids=np.arange(799, -1, -1))
    stats = idx.stats()
    assert stats["calibration"]["queries"] >= 500
    assert 0.9 <= stats["estimated_recall"] <= 1.0


def test_too_few_rows_give_no_estimate():
    idx = Index.create(None, dim=8, scan="binary", rescore="float16")
    idx.add(np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32))
    assert idx.stats()["estimated_recall"] is None
    with pytest.warns(RecallWarning, match="no recall estimate"):
        idx.search(np.ones((1, 8), np.float32), k=3, target_recall=0.9)


def test_bad_targets_are_rejected():
    with pytest.raises(errors.InvalidInput, match="target_recall"):
        Index.create(None, dim=8, target_recall=1.5)
    idx = Index.create(None, dim=8, scan="binary", rescore="float16")
    idx.add(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    with pytest.raises(errors.InvalidInput, match="target_recall"):
        idx.search(np.ones((1, 8), np.float32), k=3, target_recall=0)


# ---------------------------------------------------------------- estimates against held-out queries
CASES = [
    # (name, data, metric, create arguments)
    ("varying-norms-l2", lambda: varying_norms(4300, 64, seed=1), "l2", {"rescore": "sq8"}),
    ("varying-norms-ip", lambda: varying_norms(4300, 64, seed=2), "ip", {"rescore": "sq8"}),
    ("hub-heavy-l2", lambda: hub_heavy(3300, 32, seed=3), "l2", {}),
    ("low-intrinsic-cosine", lambda: low_intrinsic(4300, 64, seed=4), "cosine", {"rescore": "sq8"}),
    ("rotated-768-cosine", lambda: rotated_768(1800, seed=5), "cosine", {"rescore": "sq8"}),
    ("ivf-varying-norms-l2", lambda: varying_norms(4300, 32, seed=8), "l2",
     {"rescore": "float16", "ivf": {"nlist": 32}}),
]


@pytest.mark.parametrize("name,make,metric,kwargs", CASES, ids=[c[0] for c in CASES])
def test_estimate_matches_held_out_recall_and_target_is_met_or_warned(name, make, metric, kwargs, tmp_path):
    x = make()
    xb, xq = x[:-300], x[-300:]
    truth = exact_ids(xq, xb, metric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = Index.create(tmp_path / "i", dim=x.shape[1], metric=metric, **kwargs)
        idx.add(xb)
    warned = [w for w in caught if issubclass(w.category, RecallWarning)]
    stats = idx.stats()
    estimate = stats["estimated_recall"]
    _, ids = idx.search(xq, k=10)
    measured = recall_at_k(ids, truth)
    assert isinstance(estimate, float)
    assert abs(estimate - measured) <= 0.05, f"{name}: estimated {estimate:.3f}, held-out {measured:.3f}"
    if measured < 0.95:  # the default target is 0.95: missing it must have been said, with the estimate
        assert warned and stats["recall_warning"], f"{name}: recall {measured:.3f} < 0.95 without a warning"
    if warned:  # the warning is the one stats() reports; it names the estimate and what would reach the target
        text = str(warned[-1].message)
        assert text == stats["recall_warning"] and "recall" in text and "float16" in text
    else:
        assert stats["recall_warning"] is None
    if "ivf" in kwargs:  # the default nprobe comes from the curve, not from nlist / 4
        assert idx.config.tuned == ("oversample", "nprobe") and stats["search_defaults"]["nprobe"] is not None
    # The curve and the sample are stored with the index: a reopened index reports the same.
    idx.close()
    with Index.open(tmp_path / "i") as again:
        assert again.stats()["estimated_recall"] == estimate
        assert again.stats()["search_defaults"] == stats["search_defaults"]


def test_per_search_target_and_unreachable_target_warn():
    x = varying_norms(3300, 32, seed=7)
    xb, xq = x[:-300], x[-300:]
    truth = exact_ids(xq, xb, "ip")
    idx = Index.create(None, dim=32, metric="ip", scan="binary", rescore="float16", target_recall=None)
    idx.add(xb)
    assert idx.stats()["recall_warning"] is None  # no target: the configured settings, no warning
    _, ids = idx.search(xq, k=10, target_recall=0.9)
    assert recall_at_k(ids, truth) >= 0.9 - 0.03
    low = Index.create(None, dim=32, metric="ip", scan="binary", rescore=None, target_recall=None)
    low.add(xb)
    with pytest.warns(RecallWarning, match=r"recall@10 is 0\.\d+ at best.*float16"):
        low.search(xq[:5], k=10, target_recall=0.999)


def test_choice_is_the_cheapest_setting_meeting_the_target_with_margin():
    from vqsearch.index.recall_curve import CurvePoint, RecallCurve

    def point(p, o, recall, seconds):
        return CurvePoint(p, o, recall, 0.002, seconds)

    def pick(choice):
        return choice.oversample, choice.nprobe

    curve = RecallCurve((point(8, 2, 0.80, 1.0), point(8, 4, 0.93, 1.2), point(8, 8, 0.985, 1.6),
                         point(8, 16, 0.99, 2.5), point(16, 2, 0.85, 1.5), point(16, 4, 0.98, 1.7),
                         point(16, 8, 0.997, 2.1)),
                        {8: 0.98, 16: 0.995}, n_rows=10_000, n_queries=512, rescore="sq8")
    # 0.95 needs recall - 2·0.002 - RECALL_MARGIN (0.025) >= 0.95: (8, 8) at 1.6 s beats (16, 4) at 1.7 s
    assert pick(curve.choose(0.95)) == (8, 8)
    assert pick(curve.choose(0.95, nprobe=16)) == (4, 16)
    assert pick(curve.choose(0.95, oversample=4)) == (4, 16)
    assert pick(curve.choose(0.95, nprobe=12)) == (8, 12)  # unmeasured nprobe: measured as the one below
    assert curve.choose(0.95).warning is None
    high = curve.choose(0.99)  # 0.997 measured, but not with the margin: the best setting, and a warning
    assert pick(high) == (8, 16) and "recall@10 is 0.997" in high.warning and "too close" in high.warning
    far = curve.choose(0.999)
    assert "below the target" in far.warning and "'sq8' limit it" not in far.warning  # exact rescoring: 0.995
    assert "finer scan codes" in far.warning


def test_curve_is_measured_again_when_the_index_doubles_and_at_compaction():
    x = varying_norms(2000, 16, seed=9)
    idx = Index.create(None, dim=16, metric="l2", scan="binary", rescore="float16", target_recall=None)
    idx.add(x[:600])
    assert idx.stats()["calibration"]["rows"] == 600
    idx.add(x[600:1300])  # more than doubled: measured again, the sample's lists now span both batches
    assert idx.stats()["calibration"]["rows"] == 1300
    idx.add(x[1300:1400])
    assert idx.stats()["calibration"]["rows"] == 1300  # a small write keeps the curve
    idx.delete(np.arange(100))
    idx.compact()
    stats = idx.stats()
    assert stats["calibration"]["rows"] == 1300 and 0.9 <= stats["estimated_recall"] <= 1.0  # 1,400 - 100 rows
