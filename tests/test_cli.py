"""The vqsearch command line, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vqtest_data import clustered

from vqsearch import Index
from vqsearch.cli import main


def test_version_and_quantizers(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"
    assert main(["quantizers"]) == 0
    out = capsys.readouterr().out
    assert "binary" in out and "e8p" in out


@pytest.mark.parametrize("fmt", ["npy", "fvecs", "parquet"])
def test_build_search_info_compact(fmt, tmp_path, capsys):
    x = clustered(3000, 32, seed=2)
    src = tmp_path / f"vectors.{fmt}"
    if fmt == "npy":
        np.save(src, x)
    elif fmt == "fvecs":
        rows = np.hstack([np.full((len(x), 1), 32, np.int32), x.view(np.int32)])
        rows.tofile(src)
    else:
        pq.write_table(pa.table({"emb": pa.array(list(x)), "tag": np.arange(len(x)) % 3}), src)
    np.save(tmp_path / "q.npy", x[:4])
    path = tmp_path / "idx"
    assert main(["build", str(path), "--input", str(src), "--batch", "1000", "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["count"] == 3000 and built["dim"] == 32
    assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "-k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["ids"][0] for line in lines] == [0, 1, 2, 3]  # each vector finds itself first
    if fmt == "parquet":
        assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "-k", "2",
                     "--filter", '{"tag": 1}']) == 0
        ids = [i for line in capsys.readouterr().out.splitlines() for i in json.loads(line)["ids"]]
        assert all(i % 3 == 1 for i in ids)
    assert main(["compact", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["segments_after"] == 1
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3000
    with Index.open(path) as idx:
        assert len(idx) == 3000


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["build", str(tmp_path / "i"), "--input", str(tmp_path / "missing.npy")]) == 2
    assert "vector file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.fvecs"
    np.array([4, 1, 2], np.int32).tofile(bad)
    assert main(["build", str(tmp_path / "i"), "--input", str(bad)]) == 2
    assert "not a whole number" in capsys.readouterr().err


def test_serve_and_weights_help_list_their_options(capsys):
    for argv, option in ((["serve", "--help"], "--models-dir"), (["weights", "compress", "--help"], "--format")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert option in capsys.readouterr().out
