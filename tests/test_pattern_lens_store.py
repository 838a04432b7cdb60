"""A lens_cache store is a pattern-lens store: its `prompt.json` holds pattern-lens's fields as
pattern-lens computes them, and pattern-lens's own index writer and loader run on it without
breaking our viewer.

pattern-lens 0.6.0's writer imports only under TransformerLens 3.x (tests/test_pattern_lens.py
compares with its files there). Here the reference is what that writer stores, from its source:
the prompt line's own keys, `hash`, `tokens = model.tokenizer.tokenize(text)` and
`n_tokens = len(tokens)`; the tokenizer is the model's own. Its index writer
(`pattern_lens.indexes`) imports matplotlib, which `make test-tl3` installs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens_cache import export, open_store
from lens_cache.prompts import prompt_hash
from lens_cache.viewer import refresh_store
from tests.helpers import read_jsonl

LINES = [
    {"text": "The cat sat on the mat.", "id": 7, "source": "fables"},
    {"text": "def add(a, b):\n    return a + b\n", "id": 8, "tokens": "not a field"},
    {"text": "One two three, one two three."},
]


@pytest.fixture(scope="module")
def exported(gpt2_model, tmp_path_factory):
    save = tmp_path_factory.mktemp("pl-compatible") / "store"
    prompts = save.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    export(gpt2_model, prompts, save, hooks=["pattern", "resid_post"], quiet=True)
    return save


def pattern_lens_record(line: dict, tokenizer) -> dict:
    """What pattern-lens 0.6's `compute_activations` writes for a prompt line (its source):
    the line, `hash` added, then `n_tokens` and `tokens` set from `tokenizer.tokenize`."""
    record = {**line, "hash": prompt_hash(line["text"])}
    tokens = tokenizer.tokenize(line["text"])
    return {**record, "n_tokens": len(tokens), "tokens": tokens}


def test_prompt_json_holds_pattern_lens_fields(exported, gpt2_model):
    mdir = exported / gpt2_model.name
    tokenizer = gpt2_model.model.tokenizer
    for line in LINES:
        if "tokens" in line:  # a metadata key named like a field: pattern-lens would lose it
            continue
        stored = json.loads(
            (mdir / "prompts" / prompt_hash(line["text"]) / "prompt.json").read_text()
        )
        ours = stored.pop("lens_cache")
        assert stored == pattern_lens_record(line, tokenizer)
        assert list(stored) == list(pattern_lens_record(line, tokenizer))  # its order, too
        ids = gpt2_model.model.to_tokens(line["text"])[0].tolist()  # BOS first
        assert ours["token_ids"] == ids and ours["n_tokens"] == len(ids) == stored["n_tokens"] + 1
        assert ours["tokens"] == list(gpt2_model.model.to_str_tokens(line["text"]))


def test_reader_keeps_pattern_aligned_tokens_and_all_metadata(exported, gpt2_model):
    store = open_store(exported)
    for line in LINES:
        record = store.prompt(gpt2_model.name, line["text"])
        pattern = store.patterns(gpt2_model.name, line["text"], layers=[0])
        assert record["n_tokens"] == len(record["tokens"]) == pattern.shape[-1]
        assert record["tokens"] == list(gpt2_model.model.to_str_tokens(line["text"]))
        assert record["meta"] == {k: v for k, v in line.items() if k != "text"}
    indexed = {r["hash"]: r for r in store.prompts(gpt2_model.name)}
    assert indexed == {r["hash"]: r for r in map(store.prompt, [gpt2_model.name] * 3, indexed)}


def test_pattern_lens_loader_reads_our_store(exported, gpt2_model):
    from pattern_lens.load_activations import load_activations

    store = open_store(exported)
    for line in LINES:
        _, cache = load_activations(gpt2_model.name, {"text": line["text"]}, exported, "numpy")
        ours = store.patterns(gpt2_model.name, line["text"])
        np.testing.assert_array_equal(np.concatenate([cache[k] for k in sorted(cache)]), ours)


@pytest.mark.browser
def test_our_viewer_after_pattern_lens_index_writer(
    exported, gpt2_model, browser, artifacts, tmp_path
):
    """pattern-lens's index writer run on our store: its page is kept beside ours, `view`
    puts our index.html and our index order back, and our page lists and labels every prompt."""
    import shutil

    indexes = pytest.importorskip("pattern_lens.indexes", reason="needs matplotlib (test-tl3)")
    from tests.browser import Page

    save, model = tmp_path / "store", gpt2_model.name
    shutil.copytree(exported, save)
    ours = {name: (save / name).read_bytes() for name in ("index.html", "models.jsonl")}
    ours["prompts.jsonl"] = (save / model / "prompts.jsonl").read_bytes()
    indexes.generate_models_jsonl(save)
    indexes.generate_prompts_jsonl(save / model)
    indexes.write_html_index(save)
    theirs = (save / "index.html").read_bytes()
    assert theirs != ours["index.html"]
    assert {r["hash"] for r in read_jsonl(save / model / "prompts.jsonl")} == {
        prompt_hash(line["text"]) for line in LINES
    }  # pattern-lens indexes our prompt.json files as its own
    refresh_store(save, quiet=True)
    assert (save / "pattern-lens.html").read_bytes() == theirs
    assert (save / "index.html").read_bytes() == ours["index.html"]
    assert (save / "models.jsonl").read_bytes() == ours["models.jsonl"]
    assert (save / model / "prompts.jsonl").read_bytes() == ours["prompts.jsonl"]
    page = Page(browser, {"save_path": save}, artifacts)
    page.open()
    page.page.wait_for_selector(".vrow")
    assert page.page.locator(".vrow:not([hidden])").count() == len(LINES)
    text = LINES[0]["text"]
    page.open(f"#/prompt/{model}/{prompt_hash(text)}")
    page.page.wait_for_selector(".tok")
    shown = page.page.locator(".tok").all_text_contents()
    assert shown == list(gpt2_model.model.to_str_tokens(text))  # BOS once, then each token
    page.check_clean()
    page.page.close()
