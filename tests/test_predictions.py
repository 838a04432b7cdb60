"""What the model predicts: the final norm and unembedding, per-token loss, top-k and the logit
lens, each checked against a plain transformers forward of the same weights and ids."""

import pytest
import torch

TEXT = "The cat sat on the mat because the mat was warm."


@pytest.fixture(params=["gpt2", "gqa"])
def pair(request):
    """(the tiny model loaded as TransformerLens, the same weights as a plain HF model)."""
    from transformers import AutoModelForCausalLM

    directory = request.getfixturevalue(f"{request.param}_dir")
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return request.getfixturevalue(f"{request.param}_model"), hf


def hf_readout(hf, ids: list[int]):
    """HF's logits, and per layer its final norm + lm_head applied to that layer's output
    (the last hidden state already has the final norm applied: use the logits there)."""
    base = getattr(hf, "transformer", None) or hf.model
    norm = getattr(base, "ln_f", None) or base.norm
    with torch.inference_mode():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        hidden = out.hidden_states[1:]
        lens = [hf.lm_head(norm(h))[0] for h in hidden[:-1]] + [out.logits[0]]
    return out.logits[0].float(), [x.float() for x in lens]


def test_final_norm_and_unembed_give_the_models_own_readout(pair):
    model, hf = pair
    ids = model.tokenize(TEXT)
    _, reference = hf_readout(hf, ids)
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    cache = model.run(torch.tensor([ids]), names, last_layer=model.n_layers - 1)
    for layer, name in enumerate(names):
        with torch.inference_mode():
            logits = model.unembed(model.final_norm(cache[name]))[0]
        assert logits.shape == (len(ids), model.d_vocab)
        # 3.x centres the unembedding: logits move by a constant per row, log-probs do not
        torch.testing.assert_close(
            logits.log_softmax(-1), reference[layer].log_softmax(-1), atol=1e-5, rtol=0
        )
