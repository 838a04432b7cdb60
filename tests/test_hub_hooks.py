"""Hub push and pull of the kind `hooks` (each prompt's `hooks.safetensors`: the hook points
`--hooks` named), with the real huggingface_hub client against tests/hubserver.py (see
tests/test_hub.py for the set-up).

The store is a real export of both tiny models with a glob, a block site and a hook after the
blocks. Pulled files are compared byte for byte with the exported ones, and the pulled store's
`ActivationCache` with TransformerLens's own live `run_with_cache`.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

import lens_cache
from lens_cache.cache import verify_store
from lens_cache.hub._layout import tensor_path
from lens_cache.layout import HOOKS_NAME, PROMPTS_DIR, hook_site
from tests.test_hooks import _live
from tests.test_hub import PROMPTS, _blob, _head, run_child

REPO_ID, HALF_ID, SOME_ID = "alice/hooks", "alice/hooks16", "alice/some-hooks"
# a glob over every layer, a block site at each of --layers, hooks before and after the blocks
# (so their firing order is not their sorted order)
OUTSIDE = ["hook_embed", "ln_final.hook_normalized"]
HOOKS = ["resid_post", "blocks.*.hook_mlp_out", "attn.hook_z", *OUTSIDE]


@pytest.fixture(scope="module")
def hooked(gpt2_model, gqa_model, tmp_path_factory) -> dict:
    """Both tiny models exported with patterns, resid_post and other hook points at layers
    0 and 1 (the glob takes every layer)."""
    path = tmp_path_factory.mktemp("hooks-store")
    models = [gpt2_model, gqa_model]
    reports = lens_cache.export(
        models, PROMPTS, path, hooks=["pattern", *HOOKS], layers="0,1", quiet=True
    )
    names = {r.model: list(r.extra_hooks) for r in reports}
    live = {m.name: m for m in models}
    return {"save_path": path, "store": lens_cache.open(path), "hooks": names, "live": live}


@pytest.fixture(scope="module")
def used(hub, hooked, tmp_path_factory) -> dict:
    """One child pushes the hook points alone with the CLI, pulls them whole, then layer 1 of
    one model; then pushes them with resid_post as float16, dry-runs that push, and pulls it;
    then pushes some hook points (a brace list and a name), pulls one block site, and asks for
    a hook point that is not there and for hook points without the kind."""
    work = tmp_path_factory.mktemp("hooks-hub")
    save, m = str(hooked["save_path"]), sorted(hooked["hooks"])[0]
    out = run_child(
        hub,
        work,
        code=f"""
        out = {{"push": cli("push", "--repo", {REPO_ID!r}, "-s", {save!r}, "--kinds", "hooks")}}
        out["full"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "full", "-q")
        out["one"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "one", "-m", {m!r},
                         "--layers", "1", "-q")
        half = ["--kinds", "hooks", "resid_post", "--dtype", "float16"]
        out["half"] = cli("push", "--repo", {HALF_ID!r}, "-s", {save!r}, *half)
        out["dry"] = cli("push", "--repo", {HALF_ID!r}, "-s", {save!r}, *half, "--dry-run")
        out["half_pull"] = cli("pull", "--repo", {HALF_ID!r}, "-s", "half", "-q")
        some = ["--kinds", "hooks", "--hooks", "blocks.{{0,1}}.hook_mlp_out", "hook_embed"]
        out["some"] = cli("push", "--repo", {SOME_ID!r}, "-s", {save!r}, *some)
        out["z"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "z", "--hooks", "attn.hook_z", "-q")
        out["nope"] = cli("pull", "--repo", {REPO_ID!r}, "-s", "nope", "--hooks", "hook_nope")
        out["no_kind"] = cli("push", "--repo", {SOME_ID!r}, "-s", {save!r}, "--hooks",
                             "hook_embed", "--dry-run")
        """,
    )
    out["work"] = work
    return out


def _file(save, model: str, hash_: str) -> bytes:
    return (save / model / PROMPTS_DIR / hash_ / HOOKS_NAME).read_bytes()


def _check(result: dict) -> None:
    assert result["rc"] == 0, result["err"]


def test_push_sends_every_hook_point_as_stored_and_the_card_names_them(hub, hooked, used):
    _check(used["push"])
    store = hooked["store"]
    manifest = json.loads(_blob(hub, REPO_ID, "lens_cache.json"))
    assert manifest["format_version"] == 4  # older lens_cache: "upgrade", not "unsafe path"
    card = _blob(hub, REPO_ID, "README.md").decode()
    assert "## Other hook points" in card
    for m, names in hooked["hooks"].items():
        assert names[0] == OUTSIDE[0] and names[-1] == OUTSIDE[1]
        assert manifest["models"][m]["prompt_kinds"] == {"hooks": names}  # in firing order
        assert all(f"`{name}`" in card for name in names)
        for r in store.prompts(m):
            stored = store.hooks(m, r["hash"])
            for name in names:
                site, layer = hook_site(name)
                shard = load_safetensors(
                    _blob(hub, REPO_ID, tensor_path(m, "hooks", layer, None, 0))
                )
                key = f"{r['hash']}/{site}"
                assert shard[key].dtype == stored[name].dtype == torch.float32
                assert shard[key].numpy().tobytes() == stored[name].numpy().tobytes(), key


def test_pull_writes_hooks_back_bit_for_bit_for_an_activation_cache(hooked, used):
    _check(used["full"])
    save, pulled = hooked["save_path"], used["work"] / "full"
    back = lens_cache.open(pulled)
    assert sorted(back.models()) == sorted(hooked["hooks"])
    for m, names in hooked["hooks"].items():
        for r in hooked["store"].prompts(m):
            assert _file(pulled, m, r["hash"]) == _file(save, m, r["hash"]), (m, r["hash"])
        text = PROMPTS[0]["text"]
        cache = back.activation_cache(m, text)
        assert sorted(cache.keys()) == sorted(names)  # hooks alone were pushed
        live = _live(hooked["live"][m], text)  # TransformerLens's own forward
        for name in names:
            torch.testing.assert_close(cache[name], live[name], atol=1e-5, rtol=0)


def test_pull_of_one_layer_takes_its_hooks_and_those_outside_the_blocks(hooked, used):
    _check(used["one"])
    m = sorted(hooked["hooks"])[0]
    back, store = lens_cache.open(used["work"] / "one"), hooked["store"]
    assert back.models() == [m]
    wanted = [n for n in hooked["hooks"][m] if hook_site(n)[1] in (1, None)]
    assert sorted(wanted) == sorted(["blocks.1.hook_mlp_out", "blocks.1.attn.hook_z", *OUTSIDE])
    for r in store.prompts(m):
        got, want = back.hooks(m, r["hash"]), store.hooks(m, r["hash"], wanted)
        with safe_open(
            str(used["work"] / "one" / m / PROMPTS_DIR / r["hash"] / HOOKS_NAME), "pt"
        ) as f:
            assert json.loads(f.metadata()["hooks"]) == wanted  # in the exported (firing) order
        assert all(torch.equal(got[n], want[n]) for n in wanted)
        assert back.prompt(m, r["hash"])["lens_cache"]["extra_hooks"] == wanted
        mlp = back.activations(m, r["hash"], "hook_mlp_out")  # [layers pulled, T, d_model]
        assert torch.equal(mlp, want["blocks.1.hook_mlp_out"][None])
    assert verify_store(used["work"] / "one", quiet=True)[0] == []  # checks the promised hooks


def test_a_float16_push_casts_hooks_like_residuals_with_exact_dry_run_sizes(hub, hooked, used):
    for step in ("half", "dry", "half_pull"):
        _check(used[step])
    files = {p: e["size"] for p, e in _head(hub, HALF_ID).items() if p != ".gitattributes"}
    files = {p: n for p, n in files.items() if not p.startswith("viewer/")}  # not on a dry run
    lines = [ln.split() for ln in used["dry"]["out"].splitlines()[:-1]]
    assert {path: int(size.replace(",", "")) for size, path in lines} == files
    back, store = lens_cache.open(used["work"] / "half"), hooked["store"]
    for m in hooked["hooks"]:
        for r in store.prompts(m):
            got, want = back.hooks(m, r["hash"]), store.hooks(m, r["hash"])
            assert list(got) == list(want)
            assert all(torch.equal(got[n], want[n].to(torch.float16)) for n in want)
            resid = back.residuals(m, r["hash"], hook="resid_post")
            assert resid.dtype == torch.float16


def test_hooks_choose_hook_points_by_name_brace_list_or_site(hub, hooked, used):
    for step in ("some", "z"):
        _check(used[step])
    manifest = json.loads(_blob(hub, SOME_ID, "lens_cache.json"))
    z, store = lens_cache.open(used["work"] / "z"), hooked["store"]
    for m in hooked["hooks"]:
        mlp = ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
        assert manifest["models"][m]["prompt_kinds"] == {"hooks": ["hook_embed", *mlp]}
        for r in store.prompts(m):
            got = z.hooks(m, r["hash"])
            assert list(got) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
            assert all(torch.equal(v, store.hooks(m, r["hash"], [n])[n]) for n, v in got.items())
    assert used["nope"]["rc"] == 2, used["nope"]["err"]
    assert (
        "--hooks hook_nope: no such hook point in this dataset (it holds: blocks.0.attn"
        in used["nope"]["err"]
    )
    assert used["no_kind"]["rc"] == 2 and "add hooks to --kinds" in used["no_kind"]["err"]
