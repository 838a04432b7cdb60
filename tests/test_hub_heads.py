"""Hub push and pull of the per-prompt kind `head_contributions`, with the real
huggingface_hub client against tests/hubserver.py (see tests/test_hub.py for the set-up).

The store is conftest's `heads_store`: two tiny real models, three prompts, exported with
`pattern head_contributions`. Every pulled file is compared byte for byte with the exported
one, and the pulled store's top examples and viewer with the original's.
"""

from __future__ import annotations

import json

import pytest
from safetensors.numpy import load as load_safetensors

import lens_cache
from lens_cache.hub._layout import tensor_path
from lens_cache.layout import HEADS_NAME, PROMPTS_DIR
from lens_cache.viewer import model_slug
from tests.test_hub import _blob, run_child

REPO_ID = "alice/heads"
FIELDS = ("dla", "top_attention", "top_dla", "top_value_weighted", "value_norms")


@pytest.fixture(scope="module")
def used(hub, heads_store, tmp_path_factory) -> dict:
    """One child pushes the store's patterns and head contributions with the CLI, pulls it
    whole, then pulls layer 1 of one model's head contributions alone."""
    work = tmp_path_factory.mktemp("heads-hub")
    save, m = str(heads_store["save_path"]), heads_store["other"]
    out = run_child(
        hub,
        work,
        code=f"""
        out = {{"push": cli("push", "--repo", {REPO_ID!r}, "-s", {save!r}, "--kinds",
                            "patterns", "head_contributions")}}
        out["full"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "full", "-q")
        out["one"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "one", "-m", {m!r},
                         "--kinds", "head_contributions", "--layers", "1", "-q")
        """,
    )
    out["work"] = work
    return out


def _file(save, model: str, hash_: str) -> bytes:
    return (save / model / PROMPTS_DIR / hash_ / HEADS_NAME).read_bytes()


def test_push_sends_each_layer_of_every_prompt_as_stored(hub, heads_store, used):
    assert used["push"]["rc"] == 0, used["push"]["err"]
    store = heads_store["store"]
    manifest = json.loads(_blob(hub, REPO_ID, "lens_cache.json"))
    for m in store.models():
        layers = list(range(store.model_cfg(m)["n_layers"]))
        assert manifest["models"][m]["prompt_kinds"]["head_contributions"] == layers
        for layer in layers:
            shard = load_safetensors(
                _blob(hub, REPO_ID, tensor_path(m, "head_contributions", layer, None, 0))
            )
            for r in store.prompts(m):
                h = r["hash"]
                assert sorted(k for k in shard if k.startswith(h)) == [f"{h}/{f}" for f in FIELDS]
                norms = store.value_norms(m, h, layers=[layer])[0]
                assert shard[f"{h}/value_norms"].tobytes() == norms.tobytes()
    card = _blob(hub, REPO_ID, "README.md").decode()
    assert "## What each head moves" in card and "## What the model predicts" not in card


def test_pull_writes_every_file_back_bit_for_bit(heads_store, used):
    assert used["full"]["rc"] == 0, used["full"]["err"]
    save, pulled = heads_store["save_path"], used["work"] / "full"
    store, back = heads_store["store"], lens_cache.open(pulled)
    for m in store.models():
        for r in store.prompts(m):
            assert _file(pulled, m, r["hash"]) == _file(save, m, r["hash"]), (m, r["hash"])
        for layer in (0, 1):
            for by in ("attention", "value_weighted", "dla"):
                want = store.top_examples(m, layer, 2, by=by)
                assert back.top_examples(m, layer, 2, by=by) == want
    for m in store.models():  # the pulled store's viewer has the same top-example scripts
        top = [root / "viewer_data" / model_slug(m) / "top" for root in (save, pulled)]
        # the scripts, not top/source.json: what they were made from has the pull's mtimes
        assert sorted(p.name for p in top[1].glob("L*.js")) == sorted(
            p.name for p in top[0].glob("L*.js")
        )
        for script in sorted(top[0].glob("L*.js")):
            assert (top[1] / script.name).read_bytes() == script.read_bytes()


def test_pull_of_one_layer_takes_that_layer_only(heads_store, used):
    assert used["one"]["rc"] == 0, used["one"]["err"]
    m, pulled = heads_store["other"], used["work"] / "one"
    back, store = lens_cache.open(pulled), heads_store["store"]
    assert back.models() == [m]
    for r in store.prompts(m):
        members = load_safetensors(_file(pulled, m, r["hash"]))
        assert sorted(members) == [f"blocks.1.attn.{f}" for f in FIELDS]
        assert back.head_dla(m, r["hash"]).tobytes() == store.head_dla(m, r["hash"], [1]).tobytes()
