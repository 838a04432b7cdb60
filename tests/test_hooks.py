"""Any TransformerLens hook point: listing, resolving, exporting batched, pooling, verifying,
and reading a prompt back as a TransformerLens `ActivationCache`.

Every stored number is compared with a live single-prompt `run_with_cache` of the same model
(TransformerLens's own forward), never with our own output.
"""

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache.errors import NotPerTokenHookError, UnknownHookError
from tests.helpers import run_cli

PROMPTS = [
    "The cat sat on the mat, and then the cat sat on the mat again.",
    "def add(a, b):\n    return a + b",
    "Hi",
]
# A glob, a brace list, a block site (at each --layers), a hook after the blocks (a full
# forward), and the embeddings (a brace glob: GPT-2 has hook_pos_embed, Llama does not).
REQUESTS = [
    "blocks.*.hook_mlp_out",
    "blocks.{0,1}.attn.hook_z",
    "mlp.hook_post",
    "ln_final.hook_normalized",
    "hook_{embed,pos_embed}",
]


def _live(model, text: str):
    """TransformerLens's own single-prompt run, every hook cached."""
    with torch.inference_mode():
        _, cache = model.model.run_with_cache(model.model.to_tokens(text))
    return cache


def _export(model, save, hooks, **kw):
    options = dict(layers="0,1", batch_size=3, quiet=True, index_html=False)
    return lens_cache.export(model, PROMPTS, save, hooks=hooks, **{**options, **kw})


def test_list_hooks_gives_3x_names_with_the_shapes_a_live_run_has(tiny_model):
    points = {p.name: p for p in lens_cache.list_hooks(tiny_model)}
    cfg = tiny_model.cfg
    assert points["blocks.0.attn.hook_z"].shape == ("T", cfg.n_heads, cfg.d_head)
    assert points["blocks.1.hook_mlp_out"].per_token
    assert not points["blocks.0.attn.hook_pattern"].per_token
    assert "blocks.0.hook_in" not in points  # the bridge's canonical name: listed as resid_pre
    live = _live(tiny_model, PROMPTS[0])
    t = tiny_model.model.to_tokens(PROMPTS[0]).shape[1]
    for name, point in points.items():
        expected = tuple(t if a == "T" else a for a in point.shape)
        assert tuple(live[name].shape[1:]) == expected, name


def test_any_hook_batched_equals_single_prompt_run(tiny_model, tmp_path):
    (report,) = _export(tiny_model, tmp_path, ["resid_post", *REQUESTS])
    n = tiny_model.n_layers
    expected = {f"blocks.{i}.hook_mlp_out" for i in range(n)}
    expected |= {f"blocks.{i}.{s}" for i in (0, 1) for s in ("attn.hook_z", "mlp.hook_post")}
    expected |= {"ln_final.hook_normalized", "hook_embed"}
    expected |= (
        {"hook_pos_embed"} if tiny_model.cfg.positional_embedding_type == "standard" else set()
    )
    assert set(report.extra_hooks) == expected
    store = lens_cache.open(tmp_path)
    worst = 0.0
    for text in PROMPTS:
        live = _live(tiny_model, text)
        stored = store.hooks(tiny_model.name, text)
        assert set(stored) == expected
        for name, value in stored.items():
            assert value.shape == live[name].shape[1:], name  # trimmed to the prompt's length
            worst = max(worst, (value - live[name][0]).abs().max().item())
    assert worst < 1e-5


def test_unknown_hook_is_one_line_naming_the_nearest(gqa_model, tmp_path):
    with pytest.raises(UnknownHookError) as e:
        _export(gqa_model, tmp_path, ["pattern", "blocks.1.hook_mlp_outt"])
    assert "; nearest: blocks.1.hook_mlp_out," in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UnknownHookError, match="no hook 'blocks.9.attn.hook_\\*'"):
        _export(gqa_model, tmp_path, ["blocks.9.attn.hook_*"])


def test_a_hook_not_per_token_is_refused(gqa_model, tmp_path):
    with pytest.raises(NotPerTokenHookError, match=r"hook_attn_scores .*\[4, T, T\].*per token"):
        _export(gqa_model, tmp_path, ["blocks.0.attn.hook_attn_scores"])
    with pytest.raises(NotPerTokenHookError, match="--hooks pattern"):
        _export(gqa_model, tmp_path, ["blocks.0.attn.hook_pattern"])


def test_cli_lists_hooks_and_rejects_an_unknown_one(gqa_dir, tmp_path, cli_env):
    listed = run_cli(["-m", str(gqa_dir), "--list-hooks"], cli_env)
    assert listed.returncode == 0, listed.stderr
    lines = dict(line.split("\t", 1) for line in listed.stdout.splitlines())
    assert lines["blocks.2.attn.hook_z"] == "[T, 4, 16] float32"
    assert "not per token" in lines["blocks.2.attn.hook_attn_scores"]
    prompts = tmp_path / "p.txt"
    prompts.write_text("one two three\n")
    bad = run_cli(
        ["-m", str(gqa_dir), "-p", str(prompts), "-q", "--hooks", "hook_mlp_outt"], cli_env
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "nearest: blocks.2.hook_mlp_out" in bad.stderr


def test_pooled_any_hook_equals_the_live_mean(gqa_model, tmp_path):
    _export(gqa_model, tmp_path, ["blocks.*.attn.hook_z"], pool="mean")
    X, info = lens_cache.load_pooled(tmp_path, gqa_model.name, "attn.hook_z", "mean", layer=1)
    for row, hash_ in zip(X, info["hash"], strict=True):
        text = next(p for p in PROMPTS if lens_cache.prompt_hash(p) == hash_)
        z = _live(gqa_model, text)["blocks.1.attn.hook_z"][0]  # [T, heads, d_head]
        np.testing.assert_allclose(row, z.flatten(1).mean(0).numpy(), atol=1e-5)


def test_verify_checks_the_hooks_file(gqa_model, tmp_path):
    from lens_cache.cache import verify_store

    _export(gqa_model, tmp_path, ["pattern", "hook_mlp_out"])
    assert verify_store(tmp_path, quiet=True)[0] == []
    folder = lens_cache.open(tmp_path).prompt_dir(gqa_model.name, lens_cache.prompt_hash("Hi"))
    (folder / "hooks.safetensors").unlink()
    (problem,) = verify_store(tmp_path, quiet=True)[0]
    assert problem.status == "missing" and problem.path.name == "hooks.safetensors"


def test_activation_cache_round_trips_and_accumulates_like_a_live_one(tiny_model, tmp_path):
    kinds = ["pattern", "resid_pre", "resid_mid", "resid_post", "hook_attn_out"]
    _export(tiny_model, tmp_path, [*kinds, "hook_mlp_out", "hook_{embed,pos_embed}"], layers="all")
    store = lens_cache.open(tmp_path)
    text = PROMPTS[0]
    cache = store.activation_cache(tiny_model.name, text)
    assert isinstance(cache, _activation_cache_type())
    live = _live(tiny_model, text)
    stored = store.hooks(tiny_model.name, text)
    patterns = store.patterns(tiny_model.name, text)
    for name in cache.keys():
        if name.endswith("hook_pattern"):
            layer = int(name.split(".")[1])
            assert torch.equal(cache[name][0], torch.from_numpy(patterns[layer]))
        elif name in stored:
            assert torch.equal(cache[name][0], stored[name])
        torch.testing.assert_close(cache[name], live[name], atol=1e-5, rtol=0)
    n = tiny_model.n_layers
    assert len(cache.keys()) == 5 * n + len(stored) - n
    ours, theirs = cache.accumulated_resid(), live.accumulated_resid()
    assert ours.shape == theirs.shape == (n + 1, 1, live["hook_embed"].shape[1], tiny_model.d_model)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with_model = store.activation_cache(tiny_model.name, text, tl_model=tiny_model.model)
    torch.testing.assert_close(
        with_model.decompose_resid(), live.decompose_resid(), atol=1e-5, rtol=0
    )


def _activation_cache_type():
    from transformer_lens import ActivationCache

    return ActivationCache


def test_cli_hooks_take_hook_point_words_and_keep_brace_lists_whole():
    from lens_cache.cli.export import build_parser

    words = ["pattern,blocks.{3,5}.attn.hook_z", "hook_mlp_out", "blocks.*.mlp.hook_post"]
    args = build_parser().parse_args(["--hooks", *words])
    assert args.hooks == ["pattern", "blocks.{3,5}.attn.hook_z", "hook_mlp_out", words[2]]
