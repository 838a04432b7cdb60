"""The hosted viewer: what a push writes for it (`viewer/index.json`, the prompts' page data),
the static Space that holds the page, and the page itself reading a dataset from the test Hub.

The store is a real export of a tiny model; pushes run in child processes with the real
`huggingface_hub` client (see tests/test_hub.py). Every value is checked against the store's own
files (`activations.npz`, `prompt.json`) read here with numpy, never against our index.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from lens_cache import export
from lens_cache.prompts import prompt_hash
from lens_cache.reader import Store
from lens_cache.synthetic import XSS_TEXT
from tests.helpers import npz_layer
from tests.test_hub import run_child

PROMPTS = [
    {"text": "The cat sat on the mat because it was warm.", "meta": {"kind": "prose"}},
    {"text": XSS_TEXT, "meta": {"kind": "<b>xss</b>"}},
    {"text": "one two three one two three one two", "meta": {"kind": "repeat"}},
]
HEADS = {0: [1, 2], 2: [0]}  # what the push sends: --heads 0.1,0.2,2.0
REPO = "alice/hosted"


@pytest.fixture(scope="module")
def store(gqa_model, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("store")
    export(gqa_model, prompts=PROMPTS, save_path=path, hooks=["pattern"], quiet=True)
    hashes = {p["text"]: prompt_hash(p["text"]) for p in PROMPTS}
    return {"path": path, "model": gqa_model.name, "hashes": hashes}


def _files(hub, repo: str, rtype: str = "dataset") -> dict:
    r = hub.repos[f"{rtype}:{repo}"]
    return r["commits"][r["branches"]["main"]]["files"]


def _blob(hub, repo: str, path: str, rtype: str = "dataset") -> bytes:
    return hub.blobs.get(_files(hub, repo, rtype)[path]["sha256"])


@pytest.fixture(scope="module")
def pushed(hub, store, tmp_path_factory) -> dict:
    heads = ",".join(f"{layer}.{h}" for layer, hs in HEADS.items() for h in hs)
    args = ["push", "--repo", REPO, "-s", store["path"], "--heads", heads]
    proc = run_child(hub, tmp_path_factory.mktemp("push"), args)
    index = json.loads(_blob(hub, REPO, "viewer/index.json"))
    return {"index": index, "stdout": proc.stdout}


def _tensor(hub, path: str, key: str):
    return load_safetensors(_blob(hub, REPO, path))[key]


def test_index_lists_the_pushed_heads_where_they_lie(hub, store, pushed):
    """Every (prompt, head) pushed is found through the index: the shard the index names holds,
    at the index's offsets past its header, exactly the bytes of the store's pattern."""
    index, model = pushed["index"], store["model"]
    assert (index["format"], index["version"]) == ("lens_cache-viewer", 1)
    assert index["dtype"] == "float32"
    patterns = index["runs"][model]["patterns"]
    assert patterns["heads"] == {str(k): v for k, v in HEADS.items()}
    (run,) = patterns["runs"]
    assert sorted(run["hashes"]) == sorted(store["hashes"].values())
    for layer, heads in HEADS.items():
        for head in heads:
            path = f"tensors/{model}/patterns/layer_{layer:02d}/head_{head:02d}-00000.safetensors"
            data = _blob(hub, REPO, path)
            start = 8 + int.from_bytes(data[:8], "little")
            for h, (a, b) in zip(run["hashes"], run["offsets"], strict=True):
                want = npz_layer(store["path"], model, h, layer)[head].astype("<f4")
                assert data[start + a : start + b] == want.tobytes(), (layer, head, h)
                assert torch.equal(_tensor(hub, path, h), torch.from_numpy(want))


def test_index_prompts_and_page_data(hub, store, pushed):
    """The home page's prompts are the store's (text and meta as stored, markup and all), and
    each prompt's page data, read by its byte range, holds its tokens as the reader gives them."""
    index, model = pushed["index"], store["model"]
    viewer = index["viewer"]
    records = {r["hash"]: r for r in Store(store["path"]).prompts(model)}
    assert [m["name"] for m in viewer["models"]] == [model]
    assert {e["h"] for e in viewer["entries"]} == set(store["hashes"].values())
    for p in PROMPTS:
        h = store["hashes"][p["text"]]
        assert viewer["texts"][h] == {"text": p["text"], "meta": p["meta"]}
        path, a, b = index["payloads"][f"{model}|{h}"]
        payload = json.loads(_blob(hub, REPO, path)[a:b])
        assert payload["tokens"] == records[h]["tokens"]
        assert payload["layers"] == sorted(HEADS)
        # a head not pushed has no metrics on the page: its pattern stays home
        first = payload["metrics"]["first"]
        assert first[0][0] is None and first[0][1] is not None and first[1][1] is None


def test_index_metrics_match_the_patterns(hub, store, pushed):
    """A pushed head's 'first' metric (mean attention to the first token) is the mean of column
    0 of its stored pattern."""
    index, model = pushed["index"], store["model"]
    h = store["hashes"][PROMPTS[0]["text"]]
    path, a, b = index["payloads"][f"{model}|{h}"]
    payload = json.loads(_blob(hub, REPO, path)[a:b])
    pat = npz_layer(store["path"], model, h, 2)[0]
    got = payload["metrics"]["first"][1][0]
    assert got == pytest.approx(float(np.mean(pat[:, 0])), abs=1e-5)  # stored to 5 places
