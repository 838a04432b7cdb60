"""Hub push and pull of the per-prompt kind `head_metrics`, with the real huggingface_hub client
against tests/hubserver.py (see tests/test_hub.py for the set-up).

The store is a real export of a tiny model with `head_metrics head_contributions` and no
pattern. Each pulled file is compared byte for byte with the exported one, and the pulled
store's table and `head_metrics.parquet` with the original's; a shard whose metrics do not fit
the model is refused before its data is read.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load, save_file

import lens_cache
from lens_cache.errors import HubIntegrityError
from lens_cache.hub import Selection
from lens_cache.hub._layout import PROMPT_KINDS, tensor_path
from lens_cache.hub._readable import drop_unreadable
from lens_cache.hub._select import select_local
from lens_cache.hub._shards import ShardReader, safetensors_header
from lens_cache.layout import HEAD_METRICS_NAME, HEAD_METRICS_TABLE, PROMPTS_DIR
from tests.test_hub import PROMPTS, _blob, run_child

REPO_ID = "alice/metrics"
KIND = "head_metrics"


@pytest.fixture(scope="module")
def used(hub, gpt2_model, tmp_path_factory) -> dict:
    """A store exported without patterns; one child pushes its head metrics with the CLI and
    pulls the dataset whole."""
    save = tmp_path_factory.mktemp("metrics-store")
    hooks = [KIND, "head_contributions"]
    lens_cache.export(gpt2_model, prompts=PROMPTS, save_path=save, hooks=hooks, quiet=True)
    work = tmp_path_factory.mktemp("metrics-hub")
    out = run_child(
        hub,
        work,
        code=f"""
        out = {{"push": cli("push", "--repo", {REPO_ID!r}, "-s", {str(save)!r}, "--kinds",
                            {KIND!r}, "head_contributions")}}
        out["pull"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "pulled", "-q")
        """,
    )
    return {**out, "save": save, "pulled": work / "pulled", "model": gpt2_model.name}


def _rows(table) -> list[dict]:
    """The table's rows, NaN as None (NaN never equals itself)."""
    rows = table.to_pylist()
    return [{k: None if v != v else v for k, v in r.items()} for r in rows]


def test_push_sends_each_prompts_metrics_as_stored(hub, used):
    assert used["push"]["rc"] == 0, used["push"]["err"]
    manifest = json.loads(_blob(hub, REPO_ID, "lens_cache.json"))
    m = used["model"]
    assert manifest["models"][m]["prompt_kinds"][KIND] is None  # one file per prompt, no layer
    sent = load(_blob(hub, REPO_ID, tensor_path(m, KIND, None, None, 0)))
    folders = sorted((used["save"] / m / PROMPTS_DIR).iterdir())
    assert len(sent) == 2 * len(folders)
    for folder in folders:
        own = load((folder / HEAD_METRICS_NAME).read_bytes())
        for name, value in own.items():
            assert sent[f"{folder.name}/{name}"].tobytes() == value.tobytes()


def test_pull_gives_back_the_same_files_and_table(used):
    assert used["pull"]["rc"] == 0, used["pull"]["err"]
    m, save, pulled = used["model"], used["save"], used["pulled"]
    for folder in sorted((save / m / PROMPTS_DIR).iterdir()):
        back = pulled / m / PROMPTS_DIR / folder.name / HEAD_METRICS_NAME
        assert back.read_bytes() == (folder / HEAD_METRICS_NAME).read_bytes()
    want = _rows(lens_cache.open(save).head_metrics(m))
    assert len(want) == len(PROMPTS) * 2 * 4  # prompts x layers x heads of the tiny model
    assert all(r["dla_mean"] is not None for r in want)
    assert _rows(lens_cache.open(pulled).head_metrics(m)) == want
    assert _rows(pq.read_table(pulled / m / HEAD_METRICS_TABLE)) == want


CFG = {"n_layers": 2, "n_heads": 4}
N_METRICS = 8  # attention_metrics.METRIC_NAMES


def _shard(tmp_path, layers, metrics) -> ShardReader:
    """A shard file holding one prompt's head metrics, written here byte by byte."""
    key = "A" * 22
    members = [
        (f"{key}/layers", "int64", tuple(layers.shape)),
        (f"{key}/metrics", "float32", tuple(metrics.shape)),
    ]
    path = tmp_path / "shard.safetensors"
    data = layers.astype("<i8").tobytes() + metrics.astype("<f4").tobytes()
    path.write_bytes(safetensors_header(members, {}) + data)
    return ShardReader(path, "float32", "the shard")


@pytest.mark.parametrize(
    "layers, shape",
    [
        ([0, 1], (2, 5, N_METRICS)),  # more heads than the model has
        ([0, 1, 2], (3, 4, N_METRICS)),  # more layers than the model has
        ([0, 1], (2, 4, N_METRICS + 1)),  # another number of metrics
        ([0, 7], (2, 4, N_METRICS)),  # a layer the model does not have
        ([1, 1], (2, 4, N_METRICS)),  # a layer twice
        ([0], (2, 4, N_METRICS)),  # rows without a layer
    ],
)
def test_pull_refuses_metrics_that_do_not_fit_the_model(tmp_path, layers, shape):
    reader = _shard(tmp_path, np.array(layers), np.zeros(shape))
    with pytest.raises(HubIntegrityError):
        reader.fields("A" * 22, PROMPT_KINDS[KIND], 5, (), CFG)


def test_pull_reads_metrics_that_fit_the_model(tmp_path):
    values = np.arange(2 * 4 * N_METRICS, dtype=np.float32).reshape(2, 4, N_METRICS)
    got = _shard(tmp_path, np.array([1, 0]), values).fields(
        "A" * 22, PROMPT_KINDS[KIND], 5, (), CFG
    )
    assert got["layers"].tolist() == [1, 0]
    assert torch.equal(got["metrics"], torch.from_numpy(values))


def test_push_leaves_out_a_file_whose_metric_names_differ(used, tmp_path):
    """A pull names the metrics as this version does (shards carry no file metadata): a file
    naming them otherwise would come back mislabelled, so the push leaves its prompt out."""
    save, m = tmp_path / "store", used["model"]
    shutil.copytree(used["save"], save)
    folders = sorted((save / m / PROMPTS_DIR).iterdir())
    path = folders[0] / HEAD_METRICS_NAME
    tensors = load(path.read_bytes())
    names = json.loads(read_metadata(path)["metrics"])
    save_file(tensors, str(path), {"metrics": json.dumps(names[::-1]), "model": m})
    plans = drop_unreadable(save, select_local(save, Selection(kinds=[KIND])))
    assert [r["hash"] for r in plans[0].records] == [f.name for f in folders[1:]]


def read_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return f.metadata()
