"""Index: one search contract (padding, include), the data API (count, scroll, update_metadata), closed
indexes, progress bars.  Regression tests for issue 15's Python-side bugs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from vqtest_data import clustered

from vqsearch import Index, errors
from vqsearch.index import SearchResult
from vqsearch.index.codecs import encode_chunked
from vqsearch.index.metric import get_metric

MISSING = {"cosine": -np.inf, "ip": -np.inf, "l2": np.inf}


@pytest.fixture(scope="module")
def data():
    x = clustered(1200, 32, seed=3)
    return x[:1000], x[1000:1010]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_k_above_n_and_empty_index_pad_like_faiss(metric, data):
    xb, xq = data
    idx = Index.create(None, dim=32, metric=metric)
    dist, ids = idx.search(xq[:3], k=4)  # empty (and untrained) index: all padding, no error
    assert ids.shape == dist.shape == (3, 4) and (ids == -1).all() and (dist == MISSING[metric]).all()
    assert ids.dtype == np.int64 and dist.dtype == np.float32
    idx.add(xb[:50], progress=False)
    dist, ids = idx.search(xq[:3], k=60)  # issue 15: used to raise "k=60 exceeds the number of vectors"
    assert ids.shape == (3, 60)
    assert (np.sort(ids[:, :50], axis=1) == np.arange(50)).all()  # every row once, then padding
    assert (ids[:, 50:] == -1).all() and (dist[:, 50:] == MISSING[metric]).all()
    assert np.isfinite(dist[:, :50]).all()
    d10, i10 = idx.search(xq[:3], k=10)
    assert np.array_equal(i10, ids[:, :10]) and np.allclose(d10, dist[:, :10])
    with pytest.raises(errors.InvalidInput, match="unknown"):  # filters are still checked on an empty index
        Index.create(None, dim=32, metric=metric).search(xq[:1], k=2, filter={"nope": 1})


def test_metadata_after_a_filtered_search_accepts_padding(data):
    xb, xq = data
    idx = Index.create(None, dim=32)
    section = np.where(np.arange(300) % 100 == 0, "rare", "common")
    idx.add(xb[:300], metadata={"section": section}, progress=False)
    _, ids = idx.search(xq[:2], k=10, filter={"section": "rare"})
    assert (ids[:, :3] >= 0).all() and (ids[:, 3:] == -1).all()
    # issue 15: "InvalidInput: ids must be non-negative, got -1"
    for missing in ("null", "raise"):
        table = idx.get_metadata(ids[0], missing=missing)
        assert table.column("section").to_pylist() == ["rare"] * 3 + [None] * 7
    with pytest.raises(errors.InvalidInput, match="non-negative"):
        idx.get_metadata([-2])
    with pytest.raises(errors.UnknownIds, match="1 id"):
        idx.get_metadata([0, 5000])
    assert idx.get_metadata([0, 5000], missing="null").column("section").to_pylist() == ["rare", None]


def test_search_include_returns_hits_with_metadata(data):
    xb, xq = data
    idx = Index.create(None, dim=32, metric="l2")
    n = 200
    idx.add(xb[:n], ids=np.arange(n) + 1000, progress=False,
            metadata=pa.table({"name": [f"p{i}" for i in range(n)], "year": np.arange(n) % 7}))
    dist, ids = idx.search(xq, k=5)
    res = idx.search(xq, k=5, include=["name", "year"])
    assert isinstance(res, SearchResult) and len(res) == xq.shape[0]
    assert np.array_equal(res.ids, ids) and np.array_equal(res.distances, dist)
    d2, i2 = res  # unpacks like the plain answer
    assert np.array_equal(i2, ids)
    assert res.metadata.num_rows == ids.size
    assert res.metadata.column("name").to_pylist() == [f"p{i - 1000}" for i in ids.ravel()]
    assert res.column("year")[0] == [int((i - 1000) % 7) for i in ids[0]]
    # a filter that keeps fewer than k rows: padded slots are null rows, dropped by to_arrow()
    few = idx.search(xq[:2], k=40, filter={"year": 3}, include=["year"])
    real = few.ids >= 0
    assert (~real).any() and set(few.metadata.column("year").drop_null().to_pylist()) == {3}
    assert few.metadata.column("year").null_count == int((~real).sum())
    table = few.to_arrow()
    assert table.column_names == ["query", "rank", "id", "distance", "year"]
    assert table.num_rows == int(real.sum()) and table.column("id").to_pylist() == few.ids[real].tolist()
    frame = idx.search(xq[:1], k=3, include=["name"]).to_pandas()
    assert list(frame.columns) == ["query", "rank", "id", "distance", "name"] and len(frame) == 3
    assert idx.search(xq[:1], k=3, include=[]).metadata.num_columns == 0
    with pytest.raises(errors.InvalidInput, match="unknown metadata column"):
        idx.search(xq, k=3, include=["nope"])
    with pytest.raises(errors.InvalidInput, match="include must be a list"):
        idx.search(xq, k=3, include="name")


def test_count_scroll_and_update_metadata(data):
    xb, xq = data
    idx = Index.create(None, dim=32)
    n = 500
    idx.add(xb[:n], metadata={"tag": np.where(np.arange(n) % 5 == 0, "five", "other")}, progress=False)
    assert idx.count() == n and idx.count({"tag": "five"}) == 100
    assert idx.count({"id": {"lt": 10}}) == 10
    seen, after = [], None
    while True:
        page = idx.scroll({"tag": "five"}, after=after, limit=33, columns=["tag"])
        seen.extend(page.ids.tolist())
        assert set(page.metadata.column("tag").to_pylist()) <= {"five"}
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == list(range(0, n, 5))
    before = idx.search(xq, k=5)
    version = idx.version
    idx.update_metadata([0, 1, 2], {"tag": ["x", None, "y"], "score": [0.5, 1.5, 2.5]})
    assert idx.version == version + 1 or idx.versions()[-1].version > version  # one commit (+ compaction)
    meta = idx.get_metadata([0, 1, 2, 3])
    assert meta.column("tag").to_pylist() == ["x", None, "y", "other"]
    assert meta.column("score").to_pylist() == [0.5, 1.5, 2.5, None]
    after_update = idx.search(xq, k=5)
    assert np.array_equal(before[1], after_update[1]) and np.allclose(before[0], after_update[0])  # no re-encode
    assert idx.count({"tag": "five"}) == 99
    with pytest.raises(errors.UnknownIds, match="not"):
        idx.update_metadata([0, 99999], {"tag": ["a", "b"]})
    assert idx.get_metadata([0]).column("tag").to_pylist() == ["x"]  # nothing changed
    with pytest.raises(errors.EmptyInput, match="no ids"):
        idx.update_metadata([], {"tag": []})
    v = idx.versions()
    assert [x.version for x in v] == sorted(x.version for x in v) and v[-1].rows == n


def test_a_closed_index_raises_on_every_call(data, tmp_path):
    xb, xq = data
    idx = Index.create(tmp_path / "c", dim=32)
    idx.add(xb[:100], metadata={"a": np.arange(100)}, progress=False)
    idx.close()
    calls = {
        "search": lambda: idx.search(xq, k=3), "get_metadata": lambda: idx.get_metadata([0]),
        "count": lambda: idx.count(), "scroll": lambda: idx.scroll(), "len": lambda: len(idx),
        "add": lambda: idx.add(xb[:1]), "upsert": lambda: idx.upsert(xb[:1], [0]),
        "delete": lambda: idx.delete([0]), "update_metadata": lambda: idx.update_metadata([0], {"a": [1]}),
        "reconstruct": lambda: idx.reconstruct([0]), "stats": lambda: idx.stats(),
        "versions": lambda: idx.versions(), "compact": lambda: idx.compact(),
    }
    messages = set()
    for _name, call in calls.items():
        with pytest.raises(errors.Conflict, match="the index is closed") as info:
            call()
        messages.add(str(info.value))
    assert len(messages) == 1 and str(tmp_path) not in messages.pop()
    assert "closed" in repr(idx) and idx.closed
    with Index.open(tmp_path / "c") as again:  # reopening works and nothing was written
        assert len(again) == 100


class _RecordingBar:
    def __init__(self) -> None:
        self.updates: list[float] = []

    def update(self, n: float) -> None:
        self.updates.append(n)


def test_write_progress_moves_and_can_be_disabled(data, capsys):
    xb, _ = data
    x = np.tile(xb, (20, 1))[:20_000]  # issue 15: 20k vectors used to be encoded without any bar
    idx = Index.create(None, dim=32, rescore="sq8")
    idx.train(x[:1000])
    bar = _RecordingBar()
    metric = get_metric("cosine")
    encode_chunked(idx.scan_quantizer, metric.prepare(x), bar, 0.5)
    assert len(bar.updates) >= 8 and sum(bar.updates) == pytest.approx(10_000)
    capsys.readouterr()
    idx.add(x[:3000], progress=False)
    assert "adding" not in capsys.readouterr().err
    idx.add(x[3000:6000], progress=True)
    err = capsys.readouterr().err
    assert "encoding" in err or "writing" in err or "adding" in err
    assert len(idx) == 6000
