"""The vqsearch command line, run in-process."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vqtest_data import clustered

from vqsearch import Index, IVFConfig, cli
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
        with pytest.raises(SystemExit, match="^0$"):  # --help exits with status 0
            main(argv)
        assert option in capsys.readouterr().out


# ------------------------------------------------------------------ issue 15: build, search and errors
def _parquet(path, n: int = 2000, dim: int = 32, **extra) -> np.ndarray:
    x = clustered(n, dim, seed=4)
    pq.write_table(pa.table({"emb": pa.array(list(x)), "tag": np.arange(n) % 3,
                             "name": [f"pkg{i}" for i in range(n)], **extra}), path)
    return x


def test_build_uses_the_parquet_id_column(tmp_path, capsys):
    """Regression: ids 1000000 + 7·i came back as row numbers and `id` was listed as metadata."""
    ids = 1_000_000 + 7 * np.arange(2000)
    x = _parquet(tmp_path / "v.parquet", id=ids)
    np.save(tmp_path / "q.npy", x[[5, 700]])
    path = tmp_path / "idx"
    assert main(["build", str(path), "--input", str(tmp_path / "v.parquet"), "--quiet", "--scan", "binary",
                 "--rescore", "sq8"]) == 0
    capsys.readouterr()
    assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "-k", "1", "--include", "name"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["ids"][0] for line in lines] == [int(ids[5]), int(ids[700])]
    assert [line["metadata"][0] for line in lines] == [{"name": "pkg5"}, {"name": "pkg700"}]
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metadata_columns"] == ["tag", "name"]
    with Index.open(path) as idx:
        assert idx.get_metadata(ids[[0, 1999]].astype(np.uint64)).to_pylist() == [
            {"tag": 0, "name": "pkg0"}, {"tag": 1999 % 3, "name": "pkg1999"}]


def test_id_column_flag_and_its_errors(tmp_path, capsys):
    x = _parquet(tmp_path / "v.parquet", key=np.arange(2000)[::-1] * 3)
    np.save(tmp_path / "v.npy", x)
    assert main(["build", str(tmp_path / "a"), "--input", str(tmp_path / "v.parquet"), "--id-column", "key",
                 "--quiet", "--scan", "binary", "--rescore", "none"]) == 0
    capsys.readouterr()
    with Index.open(tmp_path / "a") as idx:
        assert idx.get_metadata([0, 5997]).to_pylist() == [{"tag": 1999 % 3, "name": "pkg1999"},
                                                          {"tag": 0, "name": "pkg0"}]
    bad = [
        (["--input", str(tmp_path / "v.parquet"), "--id-column", "nope"],
         "vqsearch build: error: --id-column: .*v.parquet has no column 'nope'; columns: \\['emb', 'tag', 'name', "
         "'key'\\]"),
        (["--input", str(tmp_path / "v.npy"), "--id-column", "key"], "--id-column needs a Parquet input"),
        (["--input", str(tmp_path / "v.parquet"), "--id-column", "name"],
         "id column 'name' must hold integers, got (large_)?string \\(choose another with --id-column\\)"),
    ]
    for argv, match in bad:
        assert main(["build", str(tmp_path / "b"), *argv, "--quiet", "--scan", "binary", "--rescore", "none"]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err) and err.count("\n") == 1, err
        assert not (tmp_path / "b").exists()  # no half-built index left behind


def test_build_takes_preset_metric_and_automatic_ivf(tmp_path, capsys):
    _parquet(tmp_path / "v.parquet")
    assert main(["build", str(tmp_path / "c"), "--input", str(tmp_path / "v.parquet"), "--preset", "compact",
                 "--metric", "l2", "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["metric"] == "l2" and built["ivf_nlist"] == 1  # automatic IVF: one list below 100,000
    with Index.open(tmp_path / "c") as idx:
        py = Index.create(tmp_path / "py", dim=32, preset="compact")
        assert (idx.config.scan, idx.config.rescore, idx.config.oversample) == (
            py.config.scan, py.config.rescore, py.config.oversample)
        assert idx.config.ivf is not None
        py.close()


def test_automatic_ivf_follows_the_file_size():
    """`auto` sizes the lists for the whole file (the CLI trains on a sample, whose size would undercount)."""
    assert cli.ivf_setting("auto", 0, 10**6) == {"nlist": IVFConfig().resolved(10**6).nlist, "nprobe": 0}
    assert cli.ivf_setting("auto", 0, 10**6)["nlist"] == 4096
    assert cli.ivf_setting("auto", 8, 50_000) == {"nlist": 1, "nprobe": 8}
    assert cli.ivf_setting("none", 0, 10**6) is None
    assert cli.ivf_setting("64", 4, 10) == {"nlist": 64, "nprobe": 4}


def test_search_include_pads_missing_hits_with_null(tmp_path, capsys):
    x = _parquet(tmp_path / "v.parquet", n=1500)
    np.save(tmp_path / "q.npy", x[:2])
    path = tmp_path / "idx"
    assert main(["build", str(path), "--input", str(tmp_path / "v.parquet"), "--quiet", "--scan", "binary",
                 "--rescore", "sq8"]) == 0
    capsys.readouterr()
    # A filter that keeps 2 rows: k=4 pads with id -1, whose metadata and distance are null.
    assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "-k", "4", "--include", "name,tag",
                 "--filter", '{"name": {"in": ["pkg3", "pkg9"]}}']) == 0
    for line in map(json.loads, capsys.readouterr().out.splitlines()):
        assert sorted(line["ids"][:2]) == [3, 9] and line["ids"][2:] == [-1, -1]
        assert line["distances"][2:] == [None, None]
        assert line["metadata"][2:] == [None, None]
        assert {m["name"] for m in line["metadata"][:2]} == {"pkg3", "pkg9"}
    assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "--include", "name",
                 "--output", str(tmp_path / "o.npz")]) == 2
    assert "--include prints metadata in the JSON lines output" in capsys.readouterr().err
    assert main(["search", str(path), "--query-file", str(tmp_path / "q.npy"), "--include", "nope"]) == 2
    assert "unknown metadata column(s) ['nope']" in capsys.readouterr().err


ONE_LINE_ERRORS = [  # regression: a malformed --filter printed a JSONDecodeError traceback
    (["search", "IDX", "--query-file", "Q", "--filter", '{"tag": 1'],
     "vqsearch search: error: --filter is not valid JSON: Expecting ',' delimiter: line 1 column 10"),
    (["search", "IDX", "--query-file", "Q", "--filter", "[1]"],
     "vqsearch search: error: --filter must be a JSON object"),
    (["search", "IDX", "--query-file", "Q", "-k", "0"],
     "vqsearch search: error: argument -k: expected a positive integer, got 0 \\(see 'vqsearch search --help'\\)"),
    (["build", "NEW", "--input", "Q", "--metric", "foo"], "argument --metric: invalid choice: 'foo'"),
    (["build", "NEW", "--input", "Q", "--preset", "fast"], "vqsearch build: error: --preset must be one of"),
    (["build", "NEW", "--input", "Q", "--ivf-nlist", "many"],
     "argument --ivf-nlist: expected 'auto', 'none' or a number of lists, got 'many'"),
    (["build", "NEW", "--input", "Q", "--batch", "0"], "argument --batch: expected a positive integer"),
    (["build", "NEW"], "the following arguments are required: --input"),
]


@pytest.mark.parametrize("argv,match", ONE_LINE_ERRORS, ids=[" ".join(a[0][3:5]) for a in ONE_LINE_ERRORS])
def test_errors_are_one_line_and_name_the_flag(tmp_path, capsys, argv, match):
    x = clustered(300, 8, seed=1)
    np.save(tmp_path / "q.npy", x[:2])
    idx = tmp_path / "idx"
    if not idx.exists():
        np.save(tmp_path / "v.npy", x)
        assert main(["build", str(idx), "--input", str(tmp_path / "v.npy"), "--quiet", "--scan", "binary",
                     "--rescore", "none"]) == 0
    capsys.readouterr()
    subst = {"IDX": str(idx), "Q": str(tmp_path / "q.npy"), "NEW": str(tmp_path / "new")}
    argv = [subst.get(a, a) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(match, err), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_library_argument_names_become_flags(tmp_path, capsys):
    """Regression: `weights compress` said `pass overwrite=True` instead of `--overwrite`."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"l.weight": rng.standard_normal((64, 64)).astype(np.float32)}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "out"
    argv = ["weights", "compress", str(tmp_path / "m.safetensors"), str(out), "--quiet"]
    assert main([*argv, "--format", "int4"]) == 0
    capsys.readouterr()
    assert main([*argv, "--format", "int8"]) == 2
    err = capsys.readouterr().err
    assert "holds a different compressed model; pass --overwrite or another directory" in err
    assert "overwrite=True" not in err and err.startswith("vqsearch weights compress: error: ")
    assert main([*argv, "--format", "int8", "--overwrite"]) == 0


def test_progress_moves_within_one_batch(tmp_path, capsys, monkeypatch):
    """Regression: the bar jumped from 0 to 100 % on one 65,536-row batch."""
    updates: list[int] = []

    class Bar:
        def __init__(self, **kwargs):
            self.total = kwargs["total"]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            updates.append(n)

    monkeypatch.setattr(cli, "tqdm", Bar)
    np.save(tmp_path / "v.npy", clustered(3000, 16, seed=3))
    assert main(["build", str(tmp_path / "i"), "--input", str(tmp_path / "v.npy"), "--batch", "65536",
                 "--scan", "binary", "--rescore", "none"]) == 0
    assert sum(updates) == 3000 and len(updates) >= 2 and updates[0] == 1024, updates
    assert "training on 3,000 of 3,000 vectors" in capsys.readouterr().err


def test_chunk_sizer_follows_the_encoding_rate():
    sizer = cli.ChunkSizer(maximum=65_536)
    assert sizer.size == 1024
    sizer.record(1024, 0.01)  # 102,400 rows/s: one second is more than the largest chunk
    assert sizer.size == 65_536
    sizer.record(65_536, 32.0)  # 2,048 rows/s
    assert sizer.size == 2048
    sizer.record(2048, 100.0)  # never below the minimum
    assert sizer.size == 1024
    assert cli.ChunkSizer(maximum=100).size == 100


def test_search_pads_k_above_the_number_of_vectors(tmp_path, capsys):
    """Issue 15: k > n raised in Python (and so in the CLI) but padded over HTTP; now it pads everywhere."""
    x = clustered(300, 8, seed=1)
    np.save(tmp_path / "v.npy", x)
    np.save(tmp_path / "q.npy", x[:2])
    assert main(["build", str(tmp_path / "idx"), "--input", str(tmp_path / "v.npy"), "--quiet", "--scan", "binary",
                 "--rescore", "none"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--query-file", str(tmp_path / "q.npy"), "-k", "310"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert sorted(line["ids"][:300]) == list(range(300)) and line["ids"][300:] == [-1] * 10
        assert line["distances"][300:] == [None] * 10 and None not in line["distances"][:300]


def test_warmup_compiles_the_requested_paths_and_rejects_unknown_names(capsys):
    """``vqsearch warmup`` runs each (preset, metric) through writes and searches in both kernel variants;
    kept to one cheap configuration here (its kernels are those the builds above compiled)."""
    from vqsearch import parallel
    from vqsearch.warmup import warmup

    steps = []
    assert warmup(["accurate"], ["ip"], ivf=(False,), on_step=steps.append) == steps
    assert [(s.preset, s.metric, s.ivf) for s in steps] == [("accurate", "ip", False)] and steps[0].seconds > 0
    with parallel.forced_variants(True):
        assert parallel.scan_parallel(1) and parallel.kernel_parallel(1, 1)
        with parallel.forced_variants(False):
            assert not parallel.scan_parallel(10**9)
        assert parallel.rescore_parallel(1)
    assert not parallel.scan_parallel(1)  # the policy decides again
    with pytest.raises(ValueError, match="unknown preset or metric 'fast'"):
        warmup(["fast"])
    assert main(["warmup", "--metric", "hamming"]) == 2
    assert "unknown preset or metric 'hamming'" in capsys.readouterr().err
