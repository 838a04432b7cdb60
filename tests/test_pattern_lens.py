"""A store written by the real pattern-lens 0.6.0 reads back through lens_cache.

pattern-lens 0.6.0's writer (`pattern_lens.activations`) needs TransformerLens 3.x: under 4.x
it does not import, so this runs in `make test-tl3` (whose venv has its dependencies) and skips
under 4.x. Its `activations_main` loads models by official name only, so the test hands it a
tiny local model in place of `HookedTransformer.from_pretrained`; everything it writes is its
own. The patterns read back are compared with the live model's single-prompt cache.
"""

import json

import numpy as np
import pytest
import torch

from lens_cache.reader import ActivationsMissingError, open_store
from tests.helpers import TL_MAJOR

pytestmark = pytest.mark.skipif(
    TL_MAJOR >= 4, reason="pattern-lens 0.6.0's writer imports only under TransformerLens 3.x"
)
NAME = "pl-gpt2"
TEXTS = {  # pattern-lens's own layouts: one npz per prompt, or one stacked .npy
    False: ["The cat sat on the mat.", "def add(a, b):\n    return a + b\n"],
    True: ["One two three, one two three, one two three."],
}


@pytest.fixture(scope="module")
def written(gpt2_dir, tmp_path_factory, monkeypatch_module):
    from pattern_lens import activations
    from pattern_lens.indexes import generate_prompts_jsonl
    from pattern_lens.load_activations import augment_prompt_with_hash

    from lens_cache.models import load_model

    model = load_model(str(gpt2_dir), device="cpu").model  # its own copy: pattern-lens renames it
    monkeypatch_module.setattr(
        activations.HookedTransformer, "from_pretrained", lambda *a, **kw: model
    )
    save = tmp_path_factory.mktemp("pattern-lens-store")
    prompts = save / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[False]))
    activations.activations_main(
        NAME, save, str(prompts), raw_prompts=True, min_chars=0, max_chars=10**6, force=False,
        n_samples=len(TEXTS[False]), no_index_html=True, device="cpu", batch_size=2,
    )  # fmt: skip
    for text in TEXTS[True]:  # its CLI has no stacked heads yet; its function has
        prompt = augment_prompt_with_hash({"text": text})
        activations.compute_activations(prompt, model, save, return_cache=None, stack_heads=True)
    generate_prompts_jsonl(save / NAME)
    return save, model


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_both_layouts_are_really_there(written):
    save, _ = written
    prompts = save / NAME / "prompts"
    assert len(list(prompts.glob("*/activations.npz"))) == 2
    assert len(list(prompts.glob("*/activations-blocks.-.attn.hook_pattern.npy"))) == 1
    assert (save / NAME / "model_cfg.json").is_file() and (save / "models.jsonl").is_file()


def test_lens_cache_reads_what_pattern_lens_wrote(written):
    save, model = written
    store = open_store(save)
    assert store.models() == [NAME]
    records = {r["text"]: r for r in store.prompts(NAME)}
    for text in (t for texts in TEXTS.values() for t in texts):
        tokens = model.tokenizer.tokenize(text)  # pattern-lens leaves out the BOS
        assert records[text]["tokens"] == tokens and records[text]["n_tokens"] == len(tokens)
        with torch.inference_mode():
            _, cache = model.run_with_cache(model.to_tokens(text))
        live = np.concatenate([cache[f"blocks.{i}.attn.hook_pattern"].numpy() for i in (0, 1)])
        assert live.shape[-1] == len(tokens) + 1
        np.testing.assert_allclose(store.patterns(NAME, text), live, atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            store.patterns(NAME, text, layers=[-1], heads=[2]), live[1:, 2:3], atol=1e-5, rtol=0
        )
        assert store.exists(NAME, text, "pattern") and not store.exists(NAME, text, "resid_post")
        with pytest.raises(ActivationsMissingError, match="no residuals"):
            store.residuals(NAME, text)


@pytest.mark.browser
def test_viewer_built_on_a_pattern_lens_store_draws_a_head(written, browser, artifacts, tmp_path):
    import shutil

    from lens_cache.viewer import write_viewer
    from tests.browser import Page, hover_cell, shown_value, value_line, wait_head
    from tests.helpers import quiet

    save, model = written
    copy = tmp_path / "store"  # the viewer writes into the store: keep the module's one as written
    shutil.copytree(save, copy)
    write_viewer(copy, log=quiet)
    text = TEXTS[False][0]
    (record,) = [r for r in open_store(copy).prompts(NAME) if r["text"] == text]
    with torch.inference_mode():  # the independent reference: the live model's own pattern
        _, cache = model.run_with_cache(model.to_tokens(text))
    live = cache["blocks.1.attn.hook_pattern"][0, 2].numpy()
    page = Page(browser, {"save_path": copy}, artifacts)
    wait_head(page, NAME, record["hash"], 1, 2)
    for i, j in ((3, 1), (5, 5)):
        assert value_line(hover_cell(page, i, j)) == shown_value(live[i, j])
    page.check_clean()
    page.page.close()


def test_prompt_json_equals_pattern_lens_own(written, gpt2_model, tmp_path):
    """For the same prompts, our prompt.json has every field pattern-lens 0.6.0 writes, with
    its values and in its order; only our `lens_cache` key is added."""
    from pattern_lens import activations
    from pattern_lens.load_activations import augment_prompt_with_hash

    from lens_cache import export
    from lens_cache.prompts import prompt_hash

    save, model = written
    lines = [{"text": "A fable: the fox and the crow.", "id": 7, "source": "fables"}]
    for line in lines:  # pattern-lens's function, which takes the prompt line as it is
        prompt = augment_prompt_with_hash(dict(line))
        activations.compute_activations(prompt, model, tmp_path / "theirs", return_cache=None)
    lines += [{"text": t} for texts in TEXTS.values() for t in texts]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    export(gpt2_model, prompts, tmp_path / "ours", hooks=["pattern"], quiet=True)
    for i, line in enumerate(lines):
        where = (tmp_path / "theirs", save)[min(i, 1)] / model.cfg.model_name
        h = prompt_hash(line["text"])
        theirs = json.loads((where / "prompts" / h / "prompt.json").read_text())
        theirs.pop("source_fname", None)  # what its jsonl loader adds: the file it read
        ours = json.loads(
            (tmp_path / "ours" / gpt2_model.name / "prompts" / h / "prompt.json").read_text()
        )
        assert set(ours.pop("lens_cache")) >= {"tokens", "n_tokens", "token_ids", "settings"}
        assert ours == theirs and list(ours) == list(theirs)
