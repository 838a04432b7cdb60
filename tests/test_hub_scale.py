"""A push of many prompts stays within the Hub's limits (fewer than 10,000 files in a folder,
fewer than 100,000 in the repo, so a bounded number of commits of 100 files): the shard plan
of 100,000 and 200,000 prompts, and of 12,000 prompts' head metrics written here with the
safetensors library. Each plan still holds every prompt once, in hash order."""

from __future__ import annotations

import collections
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lens_cache.hub._layout import ModelPlan
from lens_cache.hub._shards import plan_shards

HUB_FOLDER_FILES = 10_000  # the Hub's limit of entries in one folder
HUB_REPO_FILES = 100_000  # the files it advises a repo to stay under
COMMIT_FILES = 100  # the push's default files per commit


def _plan(n: int, tensors: dict, n_layers: int = 2, n_heads: int = 4) -> ModelPlan:
    records = [{"hash": f"{i:022d}", "n_tokens": 3 + i % 5} for i in range(n)]
    return ModelPlan(
        "m", {"n_layers": n_layers, "n_heads": n_heads, "d_model": 8}, records, tensors
    )


def _check(plan: ModelPlan, shards) -> None:
    """Every folder under the Hub's limit, and each head's (or layer's) shards holding every
    prompt once, in hash order."""
    folders = collections.Counter(s.path.rsplit("/", 1)[0] for s in shards)
    assert max(folders.values()) < HUB_FOLDER_FILES, folders.most_common(1)
    assert len(shards) < HUB_REPO_FILES
    runs = collections.defaultdict(list)
    for s in sorted(shards, key=lambda s: s.index):
        runs[s.kind, s.layer, s.head] += s.hashes
    want = [r["hash"] for r in plan.records]
    assert all(hashes == want for hashes in runs.values())


@pytest.mark.parametrize("n", [100_000, 200_000])
def test_many_prompts_with_small_shards_stay_within_the_limits(n):
    tensors = {"patterns": {0: (0, 1, 2, 3), 1: (0, 1, 2, 3)}, "resid_post": {0: (), 1: ()}}
    plan = _plan(n, tensors)
    shards = plan_shards(plan, "float32", 64)  # 64 bytes: one prompt a shard, unless fitted
    _check(plan, shards)
    assert math.ceil(len(shards) / COMMIT_FILES) <= 1_000  # commits, whatever n


@pytest.fixture
def scratch():
    """A folder in memory where there is one: 12,000 prompt folders on a busy disk take tens
    of seconds to remove."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        yield Path(tmp)


def test_many_prompts_of_a_kind_without_layers_share_the_model_folder(scratch):
    plan = _plan(12_000, {"head_metrics": {None: ()}})
    for record in plan.records:
        folder = scratch / "m" / "prompts" / record["hash"]
        folder.mkdir(parents=True)
        metrics = {"metrics": np.zeros((2, 4, 8), np.float32), "layers": np.arange(2)}
        save_file(metrics, str(folder / "head_metrics.safetensors"))
    shards = plan_shards(plan, "float32", 64, scratch)
    _check(plan, shards)
