"""The exporter on real tiny TransformerLens models: batching, layout, cache and resume."""

import json

import numpy as np
import pytest
import torch

from lens_cache import export
from lens_cache.errors import LayerSelectionError, SettingsMismatchError
from lens_cache.locking import LOCK_NAME
from lens_cache.prompts import prompt_hash
from lens_cache.store import ExportSettings
from lens_cache.viewer import APP_DIR, ASSETS
from tests.helpers import prompt_dir, read_jsonl, read_npz, read_safetensors, safetensors_metadata

MIXED = [
    "Hi",
    "The cat sat on the mat because the mat was warm.",
    "def add(a, b):\n    return a + b\n",
    "A longer prompt: " + "one two three four five six seven eight nine ten. " * 6,
    "Short again.",
]


def _load_npz(store, model, text):
    return read_npz(prompt_dir(store, model, text) / "activations.npz")


def _load_resid(store, model, text):
    path = prompt_dir(store, model, text) / "residuals.safetensors"
    return read_safetensors(path), safetensors_metadata(path)


def test_batched_equals_single_prompt(tiny_model, tmp_path):
    kw = dict(
        prompts=MIXED,
        hooks=["pattern", "resid_pre", "resid_mid", "resid_post"],
        index_html=False,
        quiet=True,
    )
    export(tiny_model, save_path=tmp_path / "batched", batch_size=len(MIXED), **kw)
    export(tiny_model, save_path=tmp_path / "single", batch_size=1, **kw)
    name = tiny_model.name
    for text in MIXED:
        n = len(tiny_model.tokenize(text))
        batched, single = (_load_npz(tmp_path / s, name, text) for s in ("batched", "single"))
        assert batched.keys() == single.keys() and len(batched) == tiny_model.n_layers
        for key in batched:
            assert batched[key].shape == (1, tiny_model.n_heads, n, n)
            np.testing.assert_allclose(batched[key], single[key], atol=1e-5, rtol=0)
        (rb, _), (rs, _) = (_load_resid(tmp_path / s, name, text) for s in ("batched", "single"))
        assert rb.keys() == rs.keys() and len(rb) == 3 * tiny_model.n_layers
        for key in rb:
            assert rb[key].shape == (n, tiny_model.d_model)
            torch.testing.assert_close(rb[key], rs[key], atol=1e-5, rtol=0)


def test_patterns_match_an_unpadded_forward(tiny_model, tmp_path):
    """Against TransformerLens's own single-prompt cache, not just our own single path."""
    text = MIXED[1]
    export(
        tiny_model,
        prompts=[text, MIXED[3]],
        save_path=tmp_path,
        batch_size=2,
        index_html=False,
        quiet=True,
    )
    stored = _load_npz(tmp_path, tiny_model.name, text)
    tokens = tiny_model.model.to_tokens(text)
    with torch.inference_mode():
        _, cache = tiny_model.model.run_with_cache(tokens)
    for layer in range(tiny_model.n_layers):
        key = f"blocks.{layer}.attn.hook_pattern"
        np.testing.assert_allclose(stored[key], cache[key].numpy(), atol=1e-5, rtol=0)
        rows = stored[key][0].sum(-1)
        np.testing.assert_allclose(rows, 1.0, atol=1e-5)
        assert np.all(np.triu(stored[key][0], k=1) == 0)  # causal


def test_golden_layout(gqa_model, tmp_path):
    texts = ["alpha beta", "gamma delta epsilon"]
    export(
        gqa_model,
        prompts=[{"text": texts[0], "meta": {"kind": "a"}}, texts[1]],
        save_path=tmp_path,
        layers="0,2",
        hooks=["pattern", "resid_post"],
        resid_dtype="float16",
        quiet=True,
    )
    name = gqa_model.name
    files = sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and "viewer_data" not in p.parts  # the viewer's own files: test_viewer
    )
    hashes = sorted(prompt_hash(t) for t in texts)
    expected = ["index.html", *(f"{APP_DIR}/{a}" for a in ASSETS), "models.jsonl", LOCK_NAME]
    expected += [f"{name}/model_cfg.json", f"{name}/prompts.jsonl"]
    for h in hashes:
        for f in ("activations.npz", "prompt.json", "residuals.safetensors"):
            expected.append(f"{name}/prompts/{h}/{f}")
    assert files == sorted(expected)

    models = read_jsonl(tmp_path / "models.jsonl")
    assert [m["model_name"] for m in models] == [name]
    assert models[0]["n_layers"] == 3 and models[0]["n_heads"] == 4
    assert models[0]["lens_cache"]["layers"] == [0, 2]
    assert [r["hash"] for r in read_jsonl(tmp_path / name / "prompts.jsonl")] == hashes  # sorted

    record = json.loads(
        (tmp_path / name / "prompts" / prompt_hash(texts[0]) / "prompt.json").read_text()
    )
    ids = gqa_model.tokenize(texts[0])
    # pattern-lens's fields (metadata at the top level, its tokens without BOS), ours below
    assert list(record) == ["text", "kind", "hash", "n_tokens", "tokens", "lens_cache"]
    assert record["text"] == texts[0] and record["kind"] == "a"
    tokens = gqa_model.model.tokenizer.tokenize(texts[0])
    assert record["tokens"] == tokens and record["n_tokens"] == len(tokens) == len(ids) - 1
    ours = record["lens_cache"]
    assert ours["n_tokens"] == len(ids) == len(ours["tokens"])
    assert ours["token_ids"] == ids and ours["tokens"][0] == "<|endoftext|>"  # BOS kept

    arrays = _load_npz(tmp_path, name, texts[0])
    assert sorted(arrays) == ["blocks.0.attn.hook_pattern", "blocks.2.attn.hook_pattern"]
    assert all(
        a.dtype == np.float32 and a.shape == (1, 4, len(ids), len(ids)) for a in arrays.values()
    )
    resid, meta = _load_resid(tmp_path, name, texts[0])
    assert sorted(resid) == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert all(t.dtype == torch.float16 and t.shape == (len(ids), 64) for t in resid.values())
    assert meta["model"] == name and meta["dtype"] == "float16"
    assert json.loads(meta["hooks"]) == sorted(resid)


def test_pattern_lens_reads_our_output(gpt2_model, tmp_path):
    """pattern-lens's own loader gets, for every layer, the patterns TransformerLens computes
    for the prompt alone."""
    from pattern_lens.load_activations import load_activations

    export(gpt2_model, prompts=MIXED[:3], save_path=tmp_path, batch_size=3, quiet=True)
    for text in MIXED[:3]:
        path, cache = load_activations(gpt2_model.name, {"text": text}, tmp_path, "numpy")
        assert path.name == "activations.npz"
        with torch.inference_mode():
            _, live = gpt2_model.model.run_with_cache(gpt2_model.model.to_tokens(text))
        names = [f"blocks.{i}.attn.hook_pattern" for i in range(gpt2_model.n_layers)]
        assert sorted(cache) == names
        for key in names:
            np.testing.assert_allclose(cache[key], live[key].numpy(), atol=1e-5, rtol=0)


def test_resume_skips_force_recomputes(gqa_model, tmp_path):
    reports = export(gqa_model, prompts=MIXED, save_path=tmp_path, quiet=True)
    assert reports[0].exported == len(MIXED) and reports[0].cached == 0
    npz = tmp_path / gqa_model.name / "prompts" / prompt_hash(MIXED[0]) / "activations.npz"
    npz.write_bytes(b"sentinel")  # proves the rerun does not rewrite it
    again = export(gqa_model, prompts=MIXED, save_path=tmp_path, index_html=False, quiet=True)
    assert again[0].exported == 0 and again[0].cached == len(MIXED)
    assert npz.read_bytes() == b"sentinel"
    forced = export(gqa_model, prompts=MIXED[:2], save_path=tmp_path, force=True, quiet=True)
    assert forced[0].exported == 2
    assert np.load(npz)["blocks.0.attn.hook_pattern"].ndim == 4


def test_changed_settings_are_detected_not_mixed(gqa_model, tmp_path):
    export(gqa_model, prompts=MIXED[:2], save_path=tmp_path, layers="0", quiet=True)
    with pytest.raises(SettingsMismatchError) as mismatch:
        export(gqa_model, prompts=MIXED[:2], save_path=tmp_path, layers="1", quiet=True)
    assert "other settings: layers: stored 0, asked 1. Use --force" in str(mismatch.value)
    assert "another -s/--save-path" in str(mismatch.value)
    with pytest.raises(SettingsMismatchError) as mismatch:
        export(gqa_model, prompts=MIXED[:2], save_path=tmp_path, layers="0", hooks=["pattern"])
    assert "settings: hooks: stored pattern resid_post, asked pattern. Use" in str(mismatch.value)
    export(gqa_model, prompts=MIXED[2:4], save_path=tmp_path, layers="1", force=True, quiet=True)
    stored = sorted(p.name for p in (tmp_path / gqa_model.name / "prompts").iterdir())
    assert stored == sorted(prompt_hash(t) for t in MIXED[2:4])  # old-settings prompts gone
    assert list(_load_npz(tmp_path, gqa_model.name, MIXED[2])) == ["blocks.1.attn.hook_pattern"]


def test_model_dtype_is_part_of_the_settings(gqa_dir, gqa_model, tmp_path):
    """Patterns computed in bfloat16 are not float32 patterns: a store of one is not resumed
    with the other, and the store says which it holds."""
    export(gqa_model, prompts=MIXED[:2], save_path=tmp_path, hooks=["pattern"], quiet=True)
    exact = _load_npz(tmp_path, gqa_model.name, MIXED[0])["blocks.1.attn.hook_pattern"]
    half = {"hooks": ["pattern"], "model_dtype": "bfloat16", "quiet": True}
    mismatch = "other settings: model_dtype: stored float32, asked bfloat16. Use --force"
    with pytest.raises(SettingsMismatchError, match=mismatch):
        export(str(gqa_dir), prompts=MIXED[:2], save_path=tmp_path, **half)
    export(str(gqa_dir), prompts=MIXED[:2], save_path=tmp_path, force=True, **half)
    rounded = _load_npz(tmp_path, gqa_model.name, MIXED[0])["blocks.1.attn.hook_pattern"]
    assert rounded.dtype == np.float32 and 0 < np.abs(rounded - exact).max() < 0.05
    cfg = json.loads((tmp_path / gqa_model.name / "model_cfg.json").read_text())
    assert cfg["lens_cache"]["model_dtype"] == "bfloat16"
    # float32 stores keep the fingerprint they had before the field existed
    assert "model_dtype" not in ExportSettings().describe()


def test_stacked_heads_hold_the_same_patterns(gpt2_model, tmp_path):
    export(gpt2_model, prompts=MIXED[:2], save_path=tmp_path / "a", hooks=["pattern"], quiet=True)
    export(
        gpt2_model,
        prompts=MIXED[:2],
        save_path=tmp_path / "b",
        hooks=["pattern"],
        stacked_heads=True,
        quiet=True,
    )
    for text in MIXED[:2]:
        flat = _load_npz(tmp_path / "a", gpt2_model.name, text)
        d = tmp_path / "b" / gpt2_model.name / "prompts" / prompt_hash(text)
        stacked = np.load(d / "activations-blocks.-.attn.hook_pattern.npy")
        assert stacked.shape[:3] == (1, gpt2_model.n_layers, gpt2_model.n_heads)
        for layer in range(gpt2_model.n_layers):
            np.testing.assert_array_equal(
                stacked[:, layer], flat[f"blocks.{layer}.attn.hook_pattern"]
            )
        assert not (d / "activations.npz").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_residual_dtype(gqa_model, tmp_path, dtype):
    export(
        gqa_model,
        prompts=MIXED[:1],
        save_path=tmp_path,
        hooks=["resid_pre"],
        resid_dtype=dtype,
        quiet=True,
    )
    resid, meta = _load_resid(tmp_path, gqa_model.name, MIXED[0])
    assert {t.dtype for t in resid.values()} == {getattr(torch, dtype)}
    assert meta["dtype"] == dtype
    assert not (
        tmp_path / gqa_model.name / "prompts" / prompt_hash(MIXED[0]) / "activations.npz"
    ).exists()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", [0, 1, 2]),
        ("first", [0]),
        ("middle", [1]),
        ("last", [2]),
        ("0,2", [0, 2]),
        ("1-2", [1, 2]),
        ("-1", [2]),
        ("first,last", [0, 2]),
        ([2, 0], [0, 2]),
    ],
)
def test_layer_selection(spec, expected):
    from lens_cache.layout import resolve_layers

    assert list(resolve_layers(spec, 3)) == expected


@pytest.mark.parametrize("spec", ["3", "0-5", "-4", "x", "1..2", ""])
def test_layer_selection_errors(spec):
    from lens_cache.layout import resolve_layers

    with pytest.raises(LayerSelectionError, match="--layers"):
        resolve_layers(spec, 3)


def test_out_of_memory_halves_the_batch(gqa_model, tmp_path):
    """A real hook on the model raises torch's OOM error for batches above two prompts."""
    hook_point = gqa_model.model.hook_dict["blocks.0.hook_resid_pre"]
    seen = []

    def fail_big_batches(tensor, hook):
        seen.append(tensor.shape[0])
        if tensor.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return tensor

    handle = hook_point.register_forward_hook(lambda m, i, o: fail_big_batches(o, None))
    try:
        reports = export(
            gqa_model,
            prompts=MIXED,
            save_path=tmp_path / "oom",
            batch_size=5,
            index_html=False,
            quiet=True,
        )
    finally:
        handle.remove()
    assert reports[0].exported == len(MIXED)
    assert seen == [5, 2, 3, 1, 2]  # 5 fails, halves to 2 + 3; the 3 fails, halves to 1 + 2
    export(
        gqa_model,
        prompts=MIXED,
        save_path=tmp_path / "ref",
        batch_size=1,
        index_html=False,
        quiet=True,
    )
    for text in MIXED:
        a, b = (_load_npz(tmp_path / s, gqa_model.name, text) for s in ("oom", "ref"))
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0)


def test_pipelined_and_sequential_writes_are_byte_identical(gqa_model, tmp_path, one_thread):
    for writers in (0, 3):
        export(
            gqa_model,
            prompts=MIXED,
            save_path=tmp_path / str(writers),
            writers=writers,
            batch_size=2,
            quiet=True,
        )
    for text in MIXED:
        d0, d3 = (tmp_path / w / gqa_model.name / "prompts" / prompt_hash(text) for w in "03")
        for f in ("activations.npz", "residuals.safetensors", "prompt.json"):
            assert (d0 / f).read_bytes() == (d3 / f).read_bytes()


def test_float16_patterns_are_opt_in_and_close(gqa_model, tmp_path):
    export(gqa_model, prompts=MIXED[:2], save_path=tmp_path / "a", hooks=["pattern"], quiet=True)
    export(
        gqa_model,
        prompts=MIXED[:2],
        save_path=tmp_path / "b",
        hooks=["pattern"],
        pattern_dtype="float16",
        quiet=True,
    )
    for text in MIXED[:2]:
        exact, half = (_load_npz(tmp_path / s, gqa_model.name, text) for s in "ab")
        for key in exact:
            assert exact[key].dtype == np.float32 and half[key].dtype == np.float16
            np.testing.assert_allclose(half[key], exact[key], atol=2.5e-4, rtol=0)


GROUPED_HOOKS = ["pattern", "resid_post", "head_contributions"]


def test_a_prompt_over_the_byte_cap_is_captured_in_layer_groups(gqa_model, tmp_path, one_thread):
    """With a cap below one prompt's cache, each pass caches one layer; the files are the same
    bytes as a whole-prompt capture (layers in order, same deflate)."""
    seen = []
    hook_point = gqa_model.model.hook_dict["blocks.0.hook_resid_pre"]
    handle = hook_point.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        export(
            gqa_model,
            prompts=MIXED[3:4],
            save_path=tmp_path / "grouped",
            quiet=True,
            max_batch_mb=0.01,
            hooks=GROUPED_HOOKS,
            index_html=False,
        )
    finally:
        handle.remove()
    assert len(seen) == gqa_model.n_layers  # one forward pass per layer
    export(
        gqa_model,
        prompts=MIXED[3:4],
        save_path=tmp_path / "whole",
        quiet=True,
        hooks=GROUPED_HOOKS,
        index_html=False,
    )
    d_grouped, d_whole = (
        tmp_path / s / gqa_model.name / "prompts" / prompt_hash(MIXED[3])
        for s in ("grouped", "whole")
    )
    files = ("activations.npz", "residuals.safetensors", "head_contributions.safetensors")
    for name in (*files, "prompt.json"):
        assert (d_grouped / name).read_bytes() == (d_whole / name).read_bytes(), name


def test_a_prompt_captured_in_layer_groups_gets_its_viewer_data(gqa_model, tmp_path):
    """The viewer data made in the export (index_html on, the default) of a prompt over the
    cap: the same scripts as a build from the stored files."""
    save = tmp_path / "grouped"
    kw = dict(prompts=MIXED[3:4], quiet=True, hooks=GROUPED_HOOKS)
    export(gqa_model, save_path=save, max_batch_mb=0.01, **kw)
    data = save / "viewer_data"
    made = {p.relative_to(data): p.read_bytes() for p in data.rglob("*.js")}
    assert any(p.name == f"L{gqa_model.n_layers - 1}.js" for p in made)
    from lens_cache.viewer import write_viewer

    write_viewer(save, log=lambda _: None, force=True)
    assert {p.relative_to(data): p.read_bytes() for p in data.rglob("*.js")} == made


def test_export_without_save_path_uses_lens_cache_dir(gpt2_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_CACHE_DIR", str(tmp_path / "from-env"))
    monkeypatch.chdir(tmp_path)
    report = export(gpt2_model, ["Hello there."], hooks=["pattern"], index_html=False, quiet=True)
    assert report[0].path == tmp_path / "from-env" / gpt2_model.name
    assert (report[0].path / "prompts" / prompt_hash("Hello there.") / "prompt.json").is_file()
    assert not (tmp_path / "lens_cache_data").exists()
