"""The read API on real exports: it returns exactly what is on disk, reads only what is asked
for, and reads directories written by pattern-lens."""

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from lens_cache import export
from lens_cache.errors import (
    ActivationsMissingError,
    HeadSelectionError,
    LayerNotStoredError,
    LensCacheError,
    UnknownHookError,
)
from lens_cache.prompts import prompt_hash
from lens_cache.reader import open_store
from tests.helpers import prompt_dir, read_npz, read_safetensors, write_pattern_lens_store

TEXTS = [
    "The cat sat on the mat.",
    "def add(a, b):\n    return a + b\n",
    "One two three four five six seven.",
]


@pytest.fixture(scope="module")
def store_path(gqa_model, gpt2_model, tmp_path_factory):
    """gqa: npz, layers 0 and 2, bfloat16 residuals at two hooks; gpt2: stacked heads."""
    path = tmp_path_factory.mktemp("reader-store")
    prompts = [{"text": t, "meta": {"i": i}} for i, t in enumerate(TEXTS)]
    export(
        gqa_model,
        prompts=prompts,
        save_path=path,
        layers="0,2",
        hooks=["pattern", "resid_pre", "resid_post"],
        resid_dtype="bfloat16",
        index_html=False,
        quiet=True,
    )
    export(gpt2_model, prompts=TEXTS, save_path=path, stacked_heads=True, quiet=True)
    return path


def _npz(path, model, text):
    return read_npz(prompt_dir(path, model, text) / "activations.npz")


def test_models_cfg_and_prompts_are_what_was_written(store_path, gqa_model, gpt2_model):
    store = open_store(store_path)
    assert store.models() == sorted([gqa_model.name, gpt2_model.name])
    cfg = json.loads((store_path / gqa_model.name / "model_cfg.json").read_text())
    assert store.model_cfg(gqa_model.name) == cfg
    on_disk = sorted(
        (json.loads(p.read_text()) for p in (store_path / gqa_model.name).glob("prompts/*/*.json")),
        key=lambda r: r["hash"],
    )
    records = store.prompts(gqa_model.name)
    assert [r["hash"] for r in records] == [d["hash"] for d in on_disk]
    for r, d in zip(records, on_disk, strict=True):  # pattern-lens's fields on top, ours below
        own = d["lens_cache"]
        assert (r["text"], r["meta"], r["lens_cache"]["settings"]) == (
            d["text"], {"i": d["i"]}, own["settings"]
        )  # fmt: skip
        assert (r["tokens"], r["n_tokens"], r["token_ids"]) == (
            own["tokens"], own["n_tokens"], own["token_ids"]
        )  # fmt: skip
        assert r["tokens"] == gqa_model.str_tokens(r["token_ids"]) and d["n_tokens"] < r["n_tokens"]
    assert {r["meta"]["i"] for r in records} == {0, 1, 2}
    assert store.prompt(gqa_model.name, TEXTS[1]) == store.prompt(
        gqa_model.name, prompt_hash(TEXTS[1])
    )


def test_prompts_without_index_are_scanned(store_path, gqa_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(store_path, copy)
    (copy / gqa_model.name / "prompts.jsonl").unlink()
    (copy / gqa_model.name / "prompts" / "half-written").mkdir()  # no prompt.json: skipped
    assert open_store(copy).prompts(gqa_model.name) == open_store(store_path).prompts(
        gqa_model.name
    )


def test_patterns_equal_the_npz(store_path, gqa_model):
    store, name = open_store(store_path), gqa_model.name
    for text in TEXTS:
        stored = _npz(store_path, name, text)
        n = len(gqa_model.tokenize(text))
        full = store.patterns(name, text)
        assert full.dtype == np.float32 and full.shape == (2, gqa_model.n_heads, n, n)
        np.testing.assert_array_equal(full[0], stored["blocks.0.attn.hook_pattern"][0])
        np.testing.assert_array_equal(full[1], stored["blocks.2.attn.hook_pattern"][0])
        some = store.patterns(name, prompt_hash(text), layers=-1, heads=[3, 1])
        np.testing.assert_array_equal(some, stored["blocks.2.attn.hook_pattern"][:, [3, 1]])
        assert store.patterns(name, {"text": text}, layers=0, heads=2).shape == (1, 1, n, n)


def test_float16_patterns_come_back_as_float32(gpt2_model, tmp_path):
    export(gpt2_model, prompts=TEXTS[:1], save_path=tmp_path, pattern_dtype="float16", quiet=True)
    stored = _npz(tmp_path, gpt2_model.name, TEXTS[0])["blocks.1.attn.hook_pattern"]
    assert stored.dtype == np.float16
    read = open_store(tmp_path).patterns(gpt2_model.name, TEXTS[0], layers=[1])
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, stored.astype(np.float32))


def test_only_requested_npz_members_are_read(store_path, gqa_model, monkeypatch):
    read = []
    original = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        read.append(getattr(name, "filename", name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    open_store(store_path).patterns(gqa_model.name, TEXTS[0], layers=[2])
    assert read == ["blocks.2.attn.hook_pattern.npy"]


def test_stacked_patterns_are_memory_mapped(store_path, gpt2_model, monkeypatch):
    name = gpt2_model.name
    npy = prompt_dir(store_path, name, TEXTS[2]) / "activations-blocks.-.attn.hook_pattern.npy"
    stacked = np.load(npy)
    modes = []
    original = np.memmap
    monkeypatch.setattr(
        np, "memmap", lambda *a, **k: modes.append(k.get("mode")) or original(*a, **k)
    )
    store = open_store(store_path)
    np.testing.assert_array_equal(store.patterns(name, TEXTS[2]), stacked[0])
    np.testing.assert_array_equal(
        store.patterns(name, TEXTS[2], layers=[1], heads=[0]), stacked[0, 1:, :1]
    )
    assert modes and set(modes) == {"r"}
    assert store.stored_layers(name, TEXTS[2]) == list(range(gpt2_model.n_layers))


def test_residuals_equal_safetensors_in_the_stored_dtype(store_path, gqa_model):
    store, name = open_store(store_path), gqa_model.name
    for text in TEXTS:
        stored = read_safetensors(prompt_dir(store_path, name, text) / "residuals.safetensors")
        post = store.residuals(name, text)
        assert post.dtype == torch.bfloat16 and post.shape[0] == 2
        assert torch.equal(post[0], stored["blocks.0.hook_resid_post"])
        assert torch.equal(post[1], stored["blocks.2.hook_resid_post"])
        pre = store.residuals(name, text, "hook_resid_pre", layers=[2])
        assert torch.equal(pre[0], stored["blocks.2.hook_resid_pre"])
    assert store.stored_layers(name, TEXTS[0], "resid_pre") == [0, 2]


def test_missing_data_says_what_to_run(store_path, gqa_model, gpt2_model):
    store, name = open_store(store_path), gqa_model.name
    with pytest.raises(ActivationsMissingError, match="no activations for prompt .*'never stored'"):
        store.patterns(name, "never stored")
    with pytest.raises(FileNotFoundError, match=r"run: python -m lens_cache.activations -m \S+ "):
        store.residuals(name, "never stored")
    with pytest.raises(ActivationsMissingError, match="models there: "):
        store.patterns("no-such-model", TEXTS[0])
    with pytest.raises(
        ActivationsMissingError,
        match="no resid_mid residuals.* --hooks pattern,resid_pre,resid_mid",
    ):
        store.residuals(name, TEXTS[0], "resid_mid")
    with pytest.raises(
        LayerNotStoredError, match=r"layers \[1\] are not stored .* stored layers: 0, 2"
    ):
        store.patterns(name, TEXTS[0], layers=[0, 1])
    with pytest.raises(LayerNotStoredError, match="stored layers: 0, 2"):
        store.residuals(name, TEXTS[0], layers=1)
    with pytest.raises(HeadSelectionError, match="4 heads"):
        store.patterns(name, TEXTS[0], heads=[4])
    with pytest.raises(UnknownHookError, match="resid_pre, resid_mid, resid_post"):
        store.residuals(name, TEXTS[0], "attn_out")
    with pytest.raises(ActivationsMissingError, match="no store at"):
        open_store(store_path / "nowhere")
    assert issubclass(LayerNotStoredError, (LensCacheError, ValueError))


def test_exists_is_file_checks_only(store_path, gqa_model, monkeypatch):
    store, name = open_store(store_path), gqa_model.name
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("exists() opened a file"))
    assert store.exists(name, TEXTS[0]) and store.exists(name, prompt_hash(TEXTS[0]), "pattern")
    assert store.exists(name, TEXTS[0], "resid_post")
    assert not store.exists(name, "never stored") and not store.exists("no-such-model", TEXTS[0])


# --- a directory written by pattern-lens -----------------------------------------------------


@pytest.fixture
def pattern_lens_store(tmp_path):
    return write_pattern_lens_store(tmp_path)


def test_reads_a_pattern_lens_directory(pattern_lens_store):
    from pattern_lens.load_activations import load_activations

    path, model, written = pattern_lens_store
    store = open_store(path)
    assert store.models() == [model]
    records = {r["text"]: r for r in store.prompts(model)}
    for text, (record, patterns) in written.items():
        assert records[text]["meta"] == {"source_fname": "data.jsonl"}
        assert records[text]["tokens"] == record["tokens"]
        np.testing.assert_array_equal(store.patterns(model, text), patterns)
        np.testing.assert_array_equal(
            store.patterns(model, text, layers=[-1], heads=[2]), patterns[1:, 2:]
        )
        assert store.exists(model, text, "pattern") and not store.exists(model, text, "resid_post")
        with pytest.raises(
            ActivationsMissingError, match="no residuals .* --hooks pattern,resid_post"
        ):
            store.residuals(model, text)
    text = "hello there world"
    _, cache = load_activations(model, {"text": text}, path, "numpy")  # pattern-lens agrees
    np.testing.assert_array_equal(
        cache["blocks.1.attn.hook_pattern"][0], store.patterns(model, text)[1]
    )


def test_package_level_api_reads_an_export(gqa_model, tmp_path):
    import lens_cache

    lens_cache.export(gqa_model, prompts=["alpha beta gamma"], save_path=tmp_path, quiet=True)
    store = lens_cache.open(tmp_path)
    assert store.models() == [gqa_model.name]
    patterns = store.patterns(gqa_model.name, "alpha beta gamma", layers=[1])
    with np.load(
        tmp_path
        / gqa_model.name
        / "prompts"
        / lens_cache.prompt_hash("alpha beta gamma")
        / "activations.npz"
    ) as z:
        np.testing.assert_array_equal(patterns[0], z["blocks.1.attn.hook_pattern"][0])
