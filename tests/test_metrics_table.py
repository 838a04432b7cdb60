"""The head-metrics table: `<model>/head_metrics.parquet`, queried with DuckDB, against a scan
of every prompt's own files read here with safetensors and json; kept current when prompts go."""

import json
import math

import duckdb
import numpy as np
import pytest

import lens_cache
from lens_cache.cache import clear_model, prune
from lens_cache.layout import HEAD_METRICS_TABLE
from lens_cache.viewer import metrics as M
from tests.helpers import read_safetensors, safetensors_metadata

PROMPTS = [
    {"text": "The lighthouse keeper kept two logbooks.", "meta": {"source": "sea", "year": 1901}},
    {"text": "a b a b c a b a b c", "meta": {"source": "toy", "year": 2020}},
    {"text": "Heat rises; the cooler surface sinks.", "meta": {"source": "sea", "year": 1950}},
    {"text": "One more line without a year.", "meta": {"source": "toy"}},
]


@pytest.fixture(scope="module")
def store(gpt2_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("table")
    hooks = ["head_metrics", "head_contributions"]
    lens_cache.export(gpt2_model, prompts=PROMPTS, save_path=path, hooks=hooks, quiet=True)
    return path


def _scan(save, model: str) -> list[tuple]:
    """Every row as the table should hold it, from the prompt folders: (hash, layer, head,
    metrics..., dla_mean, source, year), NaN as None."""
    rows = []
    for folder in sorted((save / model / "prompts").iterdir()):
        record = json.loads((folder / "prompt.json").read_text())
        stored = read_safetensors(folder / "head_metrics.safetensors")
        names = json.loads(safetensors_metadata(folder / "head_metrics.safetensors")["metrics"])
        heads = read_safetensors(folder / "head_contributions.safetensors")
        for k, layer in enumerate(stored["layers"].tolist()):
            dla = heads[f"blocks.{layer}.attn.dla"].double().numpy()
            for head in range(dla.shape[0]):
                values = [float(stored["metrics"][k, head, names.index(n)]) for n in M.METRIC_NAMES]
                finite = [x for x in dla[head] if not math.isnan(x)]
                dla_mean = sum(finite) / len(finite)
                row = [record["hash"], layer, head, *values, dla_mean]
                row += [record.get("source"), record.get("year")]
                rows.append(tuple(_none_for_nan(x) for x in row))
    return rows


def _none_for_nan(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _query(path, sql: str) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(sql.replace("TABLE", f"read_parquet('{path}')")).fetchall()


def test_duckdb_reads_what_the_prompt_files_hold(store, gpt2_model):
    model = gpt2_model.name
    path = store / model / HEAD_METRICS_TABLE
    columns = ", ".join(["hash", "layer", "head", *M.METRIC_NAMES, "dla_mean", "source", "year"])
    got = _query(path, f"SELECT {columns} FROM TABLE ORDER BY hash, layer, head")
    want = _scan(store, model)
    assert len(got) == len(want) == len(PROMPTS) * gpt2_model.n_layers * 4
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3] and g[-2:] == w[-2:]
        np.testing.assert_allclose(
            np.array(g[3:-2], dtype=float), np.array(w[3:-2], dtype=float), rtol=1e-6
        )


def test_an_aggregate_over_a_meta_filter(store, gpt2_model):
    """What a researcher asks: each head's mean previous-token score over one source."""
    path = store / gpt2_model.name / HEAD_METRICS_TABLE
    sql = "SELECT layer, head, avg(prev), count(*) FROM TABLE WHERE source = 'sea' "
    got = _query(path, sql + "GROUP BY layer, head ORDER BY layer, head")
    rows = [r for r in _scan(store, gpt2_model.name) if r[-2] == "sea"]
    prev = 3 + M.METRIC_NAMES.index("prev")
    for layer, head, mean, count in got:
        mine = [r[prev] for r in rows if r[1] == layer and r[2] == head]
        assert count == len(mine) == 2
        assert mean == pytest.approx(sum(mine) / len(mine), rel=1e-12)


def test_the_api_table_equals_the_file_and_follows_prunes(store, gpt2_model, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    model = gpt2_model.name
    table = lens_cache.open(store).head_metrics(model)
    assert table.equals(pq.read_table(store / model / HEAD_METRICS_TABLE))
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    total = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
    removed, _ = prune(copy, max_bytes=total - 1)  # the least recently used prompt goes
    left = {p.name for p in (copy / model / "prompts").iterdir()}
    assert len(removed) == 1 and removed[0].name not in left
    hashes = pq.read_table(copy / model / HEAD_METRICS_TABLE).column("hash").to_pylist()
    assert set(hashes) == left
    prune(copy, max_bytes=1)  # every prompt goes: no table lists them
    assert not (copy / model / HEAD_METRICS_TABLE).exists()
    shutil.rmtree(copy)
    shutil.copytree(store, copy)
    clear_model(copy, model)
    assert not (copy / model).exists()


def _same_tables(a, b, model: str) -> None:
    """The same head_metrics.parquet and the same head pages (dist/ scripts), byte for byte."""
    import pyarrow.parquet as pq

    assert pq.read_table(a / model / HEAD_METRICS_TABLE).equals(
        pq.read_table(b / model / HEAD_METRICS_TABLE)
    )
    (da,), (db,) = ([p for p in (r / "viewer_data").iterdir() if p.is_dir()] for r in (a, b))
    pages = sorted(p.name for p in (da / "dist").iterdir())
    assert pages and pages == sorted(p.name for p in (db / "dist").iterdir())
    for name in pages:
        assert (da / "dist" / name).read_bytes() == (db / "dist" / name).read_bytes()


def test_a_resumed_and_a_two_rank_export_give_the_same_tables(
    gpt2_model, gpt2_dir, tmp_path, cli_env
):
    """An export stopped after two prompts then rerun, and one shared by two torchrun ranks,
    leave the table and the head pages of one uninterrupted export."""
    import subprocess
    import sys

    from tests.helpers import REPO

    model, hooks = gpt2_dir.name, ["head_metrics", "head_contributions"]
    one, resumed, ranks = (tmp_path / n for n in ("one", "resumed", "ranks"))
    for save, prompts in ((one, PROMPTS), (resumed, PROMPTS[:2]), (resumed, PROMPTS)):
        lens_cache.export(gpt2_model, prompts=prompts, save_path=save, hooks=hooks, quiet=True)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    args = ["-m", str(gpt2_dir), "-p", str(path), "-s", str(ranks), "-q", "--hooks", *hooks]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    torchrun += ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0"]
    env = {**cli_env, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*torchrun, "-m", "lens_cache.activations", *args],
        env=env, capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_scan(one, model)) == len(PROMPTS) * 2 * 4
    _same_tables(one, resumed, model)
    _same_tables(one, ranks, model)


def test_a_damaged_prompt_file_is_named_and_left_out(store, gpt2_model, tmp_path, capsys):
    import shutil

    import pyarrow.parquet as pq

    from lens_cache.indexer import write_indexes

    model, copy = gpt2_model.name, tmp_path / "copy"
    shutil.copytree(store, copy)
    folders = sorted((copy / model / "prompts").iterdir())
    damaged = folders[0] / "head_metrics.safetensors"
    damaged.write_bytes(b"\xff" * 8 + b"{not json")
    write_indexes(copy)
    hashes = set(pq.read_table(copy / model / HEAD_METRICS_TABLE).column("hash").to_pylist())
    assert hashes == {f.name for f in folders[1:]}
    assert str(damaged) in capsys.readouterr().err
