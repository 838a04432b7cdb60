"""Pooled residuals: the parquet dataset equals pooling the stored residuals with numpy, loads
with `datasets` and pyarrow, is sharded within its bound and replaced atomically."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from lens_cache import export
from lens_cache.cli.pool import main
from lens_cache.errors import LayerNotStoredError
from lens_cache.pooled import (
    POOLS,
    MissingLabelError,
    PooledMissingError,
    load_pooled,
    pooled_dir,
    write_pooled,
)
from lens_cache.prompts import prompt_hash

PROMPTS = [
    {"text": "The cat sat on the mat.", "meta": {"kind": "animal", "n": 1, "tags": ["a"]}},
    {"text": "Dogs bark at night.", "meta": {"kind": "animal", "n": 2, "mixed": "x"}},
    {"text": "def f(x):\n    return x\n", "meta": {"kind": "code", "n": 3, "mixed": 4}},
    {"text": "Rain falls on the hills.", "meta": {"kind": "weather", "hash": "clash"}},
    {"text": "A", "meta": {"kind": "short"}},
]


@pytest.fixture(scope="module")
def store(gqa_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("pooled-store")
    export(
        gqa_model,
        prompts=PROMPTS,
        save_path=path,
        hooks=["resid_post"],
        layers="0,2",
        resid_dtype="bfloat16",
        index_html=False,
        quiet=True,
    )
    return path, gqa_model.name


def _numpy_pool(path, model, text, pool) -> dict[int, np.ndarray]:
    """The reference: read the safetensors file directly and pool with plain numpy."""
    f = path / model / "prompts" / prompt_hash(text) / "residuals.safetensors"
    with safe_open(str(f), "pt") as st:
        resid = {i: st.get_tensor(f"blocks.{i}.hook_resid_post").float().numpy() for i in (0, 2)}
    take = {
        "last_token": lambda r: r[-1],
        "first_token": lambda r: r[0],
        "first_real": lambda r: r[1],  # the model prepends a BOS
        "mean": lambda r: r.mean(0, dtype=np.float32),
        "mean_real": lambda r: r[1:].mean(0, dtype=np.float32),
    }[pool]
    return {i: take(r) for i, r in resid.items()}


@pytest.mark.parametrize("pool", POOLS)
def test_parquet_equals_numpy_pooling(store, pool, tmp_path):
    import datasets

    path, model = store
    out = write_pooled(path, model, pool=pool, shard_max_bytes=1200)
    assert out == path / model / "pooled" / f"resid_post-{pool}"
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"data-{i:05d}-of-00003.parquet" for i in range(3)]  # 2 rows a shard
    table = pq.read_table(out)
    assert table.column("hash").to_pylist() == sorted(prompt_hash(p["text"]) for p in PROMPTS)
    loaded = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    rows = loaded["train"].with_format("numpy")
    for i, h in enumerate(table.column("hash").to_pylist()):
        text = table.column("text")[i].as_py()
        expected = _numpy_pool(path, model, text, pool)
        for layer in (0, 2):
            vector = np.asarray(table.column(f"layer_{layer}")[i].as_py(), dtype=np.float32)
            np.testing.assert_array_equal(vector, expected[layer])
            np.testing.assert_array_equal(rows[i][f"layer_{layer}"], expected[layer])
        assert rows[i]["hash"] == h


def test_columns_schema_and_shard_bound(store):
    path, model = store
    out = write_pooled(path, model, pool="mean", shard_max_bytes=1200)
    schema = pq.read_schema(next(out.iterdir()))
    assert schema.names == [
        "hash",
        "text",
        "n_tokens",
        "kind",
        "n",
        "tags",
        "mixed",
        "meta_hash",
        "layer_0",
        "layer_2",
    ]
    assert str(schema.field("layer_0").type) == "fixed_size_list<element: float>[64]"
    info = json.loads(schema.metadata[b"lens_cache"])
    assert info["layers"] == [0, 2] and info["pool"] == "mean" and info["d_model"] == 64
    table = pq.read_table(out).to_pylist()
    by_kind = {r["text"]: r for r in table}
    first = by_kind[PROMPTS[0]["text"]]
    assert first["tags"] == '["a"]' and first["n"] == 1 and first["mixed"] is None
    assert by_kind[PROMPTS[2]["text"]]["mixed"] == "4"  # mixed types: stored as strings
    assert by_kind[PROMPTS[3]["text"]]["meta_hash"] == "clash"
    for f in out.iterdir():  # two rows of 2 layers x 64 float32 each fit in 1200 bytes
        assert pq.ParquetFile(f).metadata.num_rows <= 2


def test_rewrite_replaces_the_old_shards(store):
    path, model = store
    write_pooled(path, model, pool="last_token", shard_max_bytes=1)  # one row a shard
    out = write_pooled(path, model, pool="last_token")
    assert [p.name for p in out.iterdir()] == ["data-00000-of-00001.parquet"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_load_pooled_for_scikit_learn(store):
    path, model = store
    write_pooled(path, model, pool="mean_real")
    X, y = load_pooled(path, model, pool="mean_real", layer=2, label="kind")
    texts = [
        r["text"] for r in pq.read_table(pooled_dir(path, model, pool="mean_real")).to_pylist()
    ]
    assert X.shape == (len(PROMPTS), 64) and X.dtype == np.float32
    for row, text in enumerate(texts):
        np.testing.assert_array_equal(X[row], _numpy_pool(path, model, text, "mean_real")[2])
    kinds = {p["text"]: p["meta"]["kind"] for p in PROMPTS}
    assert list(y) == [kinds[t] for t in texts]
    X_last, columns = load_pooled(path, model, pool="mean_real")  # last stored layer
    np.testing.assert_array_equal(X_last, X)
    assert columns["text"] == texts and set(columns) >= {"hash", "n_tokens", "kind"}
    _, clash = load_pooled(path, model, pool="mean_real", label="hash")
    assert list(clash) == columns["hash"]  # the fixed column wins over meta's "hash"


def test_named_errors(store, tmp_path):
    path, model = store
    write_pooled(path, model, pool="first_real")
    with pytest.raises(LayerNotStoredError, match="stored layers: 0, 2"):
        load_pooled(path, model, pool="first_real", layer=1)
    with pytest.raises(MissingLabelError, match="no column 'sentiment'.*columns: hash, text"):
        load_pooled(path, model, pool="first_real", label="sentiment")
    with pytest.raises(PooledMissingError, match="run: python -m lens_cache.pooled .* --pool mean"):
        load_pooled(path, model, hook="resid_pre", pool="mean")
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        write_pooled(path, model, pool="max")


def test_cli_writes_every_model(store, capsys):
    path, model = store
    assert main(["-s", str(path), "--pool", "mean", "--shard-max-bytes", "100000", "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [str(pooled_dir(path, model, pool="mean"))]
