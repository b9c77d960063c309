"""Train once, encode everywhere: Index.trained_state / load_trained_state / encode / contains."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from vqtest_data import clustered

from vqsearch import EncodedVectors, Index, errors


@pytest.fixture(scope="module")
def data():
    x = clustered(3000, 32, seed=7)
    return x[:2500], x[2500:2540]


@pytest.mark.parametrize("metric,ivf", [("cosine", None), ("l2", {"nlist": 16, "nprobe": 4})])
def test_shared_state_scores_like_one_index(metric, ivf, data, tmp_path):
    xb, xq = data
    opts = {"dim": 32, "metric": metric, "scan": "binary", "rescore": "sq8", "ivf": ivf}
    trainer = Index.create(tmp_path / "t", **opts).train(xb[:1000])
    state = trainer.trained_state()
    whole = Index.create(tmp_path / "whole", **opts).load_trained_state(state)
    whole.add(xb, ids=np.arange(len(xb)))
    halves = [Index.create(tmp_path / f"h{i}", **opts).load_trained_state(state) for i in range(2)]
    assert {whole.state_id, halves[0].state_id, halves[1].state_id} == {trainer.state_id}
    # Encoding on a third index (as a remote worker would) gives codes the owners accept.
    encoded = trainer.encode(xb)
    encoded = pickle.loads(pickle.dumps(encoded))
    halves[0].add(encoded.take(np.arange(0, 2500, 2)), ids=np.arange(0, 2500, 2))
    halves[1].add(EncodedVectors.concat([encoded.take(np.arange(1, 1250, 2)), encoded.take(np.arange(1251, 2500, 2))]),
                  ids=np.arange(1, 2500, 2))
    # Both halves score their rows exactly as the whole index does: with every row a rescoring candidate
    # (oversample × k ≥ n), the merged top-10 of the halves is the whole index's top-10, scores included.
    d, i = whole.search(xq, k=10, oversample=250)
    parts = [h.search(xq, k=10, oversample=250) for h in halves]
    dd = np.concatenate([p[0] for p in parts], axis=1)
    ii = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(dd if metric == "l2" else -dd, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.take_along_axis(ii, order, axis=1), i)
    np.testing.assert_array_equal(np.take_along_axis(dd, order, axis=1), d)
    # Reopened from disk, a shard keeps the shared state.
    halves[0].close()
    assert Index.open(tmp_path / "h0").state_id == trainer.state_id


def test_state_mismatch_and_corruption_are_refused(data, tmp_path):
    xb, _ = data
    trainer = Index.create(None, dim=32, scan="binary", rescore="sq8").train(xb)
    state = trainer.trained_state()
    with pytest.raises(errors.InvalidInput, match="rescore"):
        Index.create(None, dim=32, scan="binary", rescore="float16").load_trained_state(state)
    with pytest.raises(errors.InvalidInput, match="metric"):
        Index.create(None, dim=32, metric="ip", scan="binary", rescore="sq8").load_trained_state(state)
    with pytest.raises(errors.CorruptData, match="sha256"):
        Index.create(None, dim=32, scan="binary", rescore="sq8").load_trained_state(state[:-40] + state[-39:] + b"x")
    with pytest.raises(errors.CorruptData, match="not a vqsearch trained state"):
        Index.create(None, dim=32, scan="binary", rescore="sq8").load_trained_state(b"garbage")
    with pytest.raises(errors.InvalidInput, match="already trained"):
        trainer.load_trained_state(state)
    with pytest.raises(errors.InvalidInput, match="not trained"):
        Index.create(None, dim=32).trained_state()
    other = Index.create(None, dim=32, scan="binary", rescore="sq8").train(xb[::-1].copy())
    assert other.state_id != trainer.state_id
    with pytest.raises(errors.InvalidInput, match="another trained state"):
        other.add(trainer.encode(xb[:10]), ids=np.arange(10))
    assert len(other) == 0


def test_contains(data):
    xb, _ = data
    idx = Index.create(None, dim=32, scan="binary", rescore=None)
    idx.add(xb[:100], ids=np.arange(100, 200))
    idx.delete([150])
    np.testing.assert_array_equal(idx.contains([99, 100, 150, 199, 200]), [False, True, False, True, False])
