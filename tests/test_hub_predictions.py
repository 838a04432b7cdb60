"""Hub push and pull of the per-prompt kinds `predictions` and `logit_lens`, with the real
huggingface_hub client against tests/hubserver.py (see tests/test_hub.py for the set-up).

The store is conftest's `prediction_store`: two tiny real models, two prompts, exported with
`pattern logits logit_lens`. Every pulled file is compared byte for byte with the exported one,
and the pulled store's viewer is opened in Chromium from file://.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

import lens_cache
from lens_cache.errors import (
    HubIntegrityError,
    HubSelectionError,
    LayerNotStoredError,
    UnsafeRepoPathError,
)
from lens_cache.hub import Selection
from lens_cache.hub._layout import (
    PROMPT_KINDS,
    ModelPlan,
    check_repo_path,
    is_layout_path,
    tensor_path,
)
from lens_cache.hub._select import make_selection
from lens_cache.hub._shards import ShardReader, ShardWriter, plan_shards
from lens_cache.prompts import prompt_hash
from tests.browser import (
    LENS_POINT,
    TOKEN_POINT,
    Page,
    check_lens_tip,
    check_token_tip,
    chromium_point,
)
from tests.test_hub import _added, _blob, _commit_chain, _head, run_child

REPO_ID = "alice/predictions"
FIELDS = ("entropy", "loss", "target_rank", "top_ids", "top_logprobs")


@pytest.fixture(scope="module")
def used(hub, prediction_store, tmp_path_factory) -> dict:
    """One child pushes the store's patterns, predictions (spelled `logits`, as the exporter
    does) and logit lens with the CLI, then pulls layer 1 of the lens of one model alone, and
    then the whole dataset; then pushes the same again, and dry-runs that push and one of
    the pulled lens."""
    work = tmp_path_factory.mktemp("pred-hub")
    save, m = str(prediction_store["save_path"]), prediction_store["model"]
    out = run_child(
        hub,
        work,
        code=f"""
        out = {{"push": cli("push", "--repo", {REPO_ID!r}, "-s", {save!r}, "--kinds",
                            "patterns", "logits", "logit_lens")}}
        out["lens"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "lens", "-m", {m!r},
                          "--kinds", "logit_lens", "--layers", "1", "-q")
        out["lens_files"] = cached({REPO_ID!r})
        out["full"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "full", "-q")
        kinds = ["--kinds", "patterns", "predictions", "logit_lens"]
        out["again"] = cli("push", "--repo", {REPO_ID!r}, "-s", {save!r}, *kinds)
        out["dry"] = cli("push", "--repo", {REPO_ID!r}, "-s", {save!r}, *kinds, "--dry-run")
        out["lens_dry"] = cli("push", "--repo", "alice/again", "-s", "lens", "--kinds",
                              "logit_lens", "--dry-run")
        """,
    )
    out["work"] = work
    return out


def _store_file(save, model: str, hash_: str, name: str) -> bytes:
    return (save / model / "prompts" / hash_ / name).read_bytes()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaN losses included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_push_sends_predictions_lens_and_vocab(hub, prediction_store, used):
    assert used["push"]["rc"] == 0, used["push"]["err"]
    save = prediction_store["save_path"]
    files = _head(hub, REPO_ID)
    manifest = json.loads(_blob(hub, REPO_ID, "lens_cache.json"))
    assert manifest["format_version"] == 3  # older lens_cache: "upgrade", not "unsafe path"
    store = lens_cache.open(save)
    for m in store.models():
        n_layers = store.model_cfg(m)["n_layers"]
        layers = list(range(n_layers))
        assert manifest["models"][m]["prompt_kinds"] == {"predictions": None, "logit_lens": layers}
        assert (
            _blob(hub, REPO_ID, f"models/{m}/vocab.json") == (save / m / "vocab.json").read_bytes()
        )
        whole = load_safetensors(_blob(hub, REPO_ID, tensor_path(m, "predictions", None, None, 0)))
        lens = {
            i: load_safetensors(_blob(hub, REPO_ID, tensor_path(m, "logit_lens", i, None, 0)))
            for i in layers
        }
        for r in store.prompts(m):
            h = r["hash"]
            assert sorted(k for k in whole if k.startswith(h)) == [f"{h}/{f}" for f in FIELDS]
            stored = store.predictions(m, h)
            assert all(_same(whole[f"{h}/{f}"], stored[f]) for f in FIELDS)
            stored_lens = store.logit_lens(m, h)
            for i in layers:
                assert all(_same(lens[i][f"{h}/{f}"], stored_lens[f][i]) for f in FIELDS)
    table = _blob(hub, REPO_ID, "data/prompts-00000-of-00001.parquet")
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(table)).to_pylist()
    expected = {(m, r["hash"]): r["mean_loss"] for m in store.models() for r in store.prompts(m)}
    assert {(r["model"], r["hash"]): r["mean_loss"] for r in rows} == expected
    assert all(isinstance(v, float) for v in expected.values())
    card = _blob(hub, REPO_ID, "README.md").decode()
    assert "## What the model predicts" in card and "models/<model>/vocab.json" in card
    chain = _commit_chain(hub, REPO_ID)  # card, manifest and the hosted viewer's files last
    viewer = {p for p in files if p.startswith("viewer/")}
    assert _added(chain[-2], chain[-1]) == {"README.md", "lens_cache.json", *viewer}
    assert f"models/{prediction_store['model']}/vocab.json" in files


def _dry_run(result: dict) -> dict[str, int]:
    assert result["rc"] == 0, result["err"]
    lines = [ln.split() for ln in result["out"].splitlines()[:-1]]
    return {path: int(size.replace(",", "")) for size, path in lines}


def test_rerun_sends_nothing_and_dry_run_sizes_are_exact(hub, prediction_store, used):
    assert used["again"]["rc"] == 0, used["again"]["err"]
    assert "0 files uploaded" in used["again"]["err"], used["again"]["err"]
    files = {p: e["size"] for p, e in _head(hub, REPO_ID).items() if p != ".gitattributes"}
    # a dry run lists every file but the hosted viewer's, which it does not build
    assert _dry_run(used["dry"]) == {p: n for p, n in files.items() if not p.startswith("viewer/")}
    m = prediction_store["model"]  # a pulled store pushes what it holds: lens layer 1
    tensors = [p for p in _dry_run(used["lens_dry"]) if p.startswith(("tensors/", "models/"))]
    assert sorted(tensors) == [f"models/{m}/vocab.json", tensor_path(m, "logit_lens", 1, None, 0)]


def test_pull_gives_the_same_files_bit_for_bit(prediction_store, used):
    assert used["full"]["rc"] == 0, used["full"]["err"]
    save, full = prediction_store["save_path"], used["work"] / "full"
    original, pulled = lens_cache.open(save), lens_cache.open(full)
    assert pulled.models() == original.models()
    for m in original.models():
        assert (full / m / "vocab.json").read_bytes() == (save / m / "vocab.json").read_bytes()
        for r in original.prompts(m):
            h = r["hash"]
            for name in ("predictions.safetensors", "logit_lens.safetensors", "activations.npz"):
                assert _store_file(full, m, h, name) == _store_file(save, m, h, name), name
            a, b = (json.loads(_store_file(d, m, h, "prompt.json")) for d in (save, full))
            assert b["lens_cache"]["mean_loss"] == a["lens_cache"]["mean_loss"]
            assert b["lens_cache"]["settings"] == a["lens_cache"]["settings"]  # same promises
        assert [r["mean_loss"] for r in pulled.prompts(m)] == [
            r["mean_loss"] for r in original.prompts(m)
        ]


def test_a_lens_layer_alone_pulls_only_its_shards(prediction_store, used):
    assert used["lens"]["rc"] == 0, used["lens"]["err"]
    save, m = prediction_store["save_path"], prediction_store["model"]
    shards = sorted(p for p in used["lens_files"] if p.startswith("tensors/"))
    assert shards == [tensor_path(m, "logit_lens", 1, None, 0)]
    pulled = lens_cache.open(used["work"] / "lens")
    assert pulled.models() == [m]
    original = lens_cache.open(save)
    for r in original.prompts(m):
        h = r["hash"]
        folder = used["work"] / "lens" / m / "prompts" / h
        assert sorted(p.name for p in folder.iterdir()) == ["logit_lens.safetensors", "prompt.json"]
        got, want = pulled.logit_lens(m, h), original.logit_lens(m, h, layers=[1])
        assert all(_same(got[f], want[f]) for f in FIELDS)
        with pytest.raises(LayerNotStoredError):
            pulled.logit_lens(m, h, layers=[0])
    cfg = pulled.model_cfg(m)["lens_cache"]
    assert (cfg["predictions"], cfg["logit_lens_layers"]) == (["logit_lens"], [1])
    assert pulled.vocab(m) == original.vocab(m)


@pytest.mark.browser
def test_the_pulled_store_shows_tokens_and_the_lens_in_chromium(
    browser, prediction_store, used, artifacts
):
    """The pulled store's own viewer: token strip and lens view hovers show the exported values."""
    assert used["full"]["rc"] == 0, used["full"]["err"]
    s = {**prediction_store, "save_path": used["work"] / "full"}
    page = Page(browser, s, artifacts)
    pg = page.page
    page.open(f"#/prompt/{s['model']}/{s['hash']}")
    pg.wait_for_selector(".tokens.scored .tok")
    i = 3
    pg.mouse.move(*chromium_point(pg, TOKEN_POINT, i))
    pg.wait_for_function(f"document.getElementById('tip').textContent.startsWith('position {i}:')")
    check_token_tip(pg.locator("#tip").text_content(), s, i)
    page.open(f"#/lens/{s['model']}/{s['hash']}")
    pg.wait_for_selector(".lens-scroller[data-drawn]")
    li, i = 1, 4
    pg.mouse.move(*chromium_point(pg, LENS_POINT, li, i))
    pg.wait_for_function(
        f"document.getElementById('tip').textContent.startsWith('layer {li}, position {i}:')"
    )
    check_lens_tip(pg.locator("#tip").text_content(), s, li, i)
    page.shot("pulled-logit-lens")
    pg.close()
    page.check_clean()


def test_kind_names_and_selections():
    assert Selection(kinds=["logits", "pattern"]).kinds == ("patterns", "predictions")
    with pytest.raises(HubSelectionError, match="--layers"):  # predictions go whole
        make_selection(layers="0", kinds=["logits"])
    assert make_selection(layers="0", kinds=["logit_lens"]).kinds == ("logit_lens",)
    for path in (
        "tensors/m/predictions-00000.safetensors",
        "tensors/m/logit_lens/layer_03-00001.safetensors",
        "models/m/vocab.json",
    ):
        assert is_layout_path(path) and check_repo_path(path) == path
    for path in (
        "models/m/other.json",
        "models/../vocab.json",
        "tensors/m/predictions/layer_00-00000.safetensors",
    ):
        with pytest.raises(UnsafeRepoPathError):
            check_repo_path(path)


def test_a_shard_keeps_dtypes_and_refuses_a_prompt_of_another_length(prediction_store, tmp_path):
    """Planned from the stored headers, written as stored (int32 ids stay int32, never cast to
    the push dtype), read back only where each field has the prompt's length."""
    save, m = prediction_store["save_path"], prediction_store["model"]
    store = lens_cache.open(save)
    records = store.prompts(m)
    plan = ModelPlan(m, store.model_cfg(m), records, {"predictions": {None: ()}})
    (shard,) = plan_shards(plan, "float16", 10**6, save)
    writer = ShardWriter(shard, tmp_path / shard.path)
    first = store.predictions(m, records[0]["hash"])
    with pytest.raises(HubIntegrityError, match="the store changed"):  # float64 is not stored
        writer.add(f"{records[0]['hash']}/entropy", first["entropy"].astype(np.float64))
    for r in records:
        stored = store.predictions(m, r["hash"])
        for name in sorted(FIELDS):
            writer.add(f"{r['hash']}/{name}", stored[name])
    built = writer.close()
    assert built.size == shard.size and built.sha256 == shard_sha(tmp_path / shard.path)
    reader = ShardReader(built.local, "float16", shard.path)
    for r in records:
        got = reader.fields(r["hash"], PROMPT_KINDS["predictions"], r["n_tokens"])
        stored = store.predictions(m, r["hash"])
        assert all(_same(got[f].numpy(), stored[f]) for f in FIELDS)
    with pytest.raises(HubIntegrityError, match="positions"):
        reader.fields(records[0]["hash"], PROMPT_KINDS["predictions"], records[0]["n_tokens"] + 1)
    with pytest.raises(HubIntegrityError, match="positions"):
        reader.fields(prompt_hash("absent"), PROMPT_KINDS["predictions"], 3)


def shard_sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
