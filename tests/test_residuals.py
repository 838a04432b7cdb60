"""Stored residuals against outside references: TransformerLens's own single-prompt cache of
the live model, and Hugging Face's forward of the raw model (`hidden_states`, with the inputs of
the norms for what `hidden_states` does not hold).

Under TransformerLens 4 the stored residuals are the raw model's. Under 3.x the weights are
processed at load, as model_cfg.json records; `center_writing_weights` on a LayerNorm model
makes every write to the residual stream zero-mean, so there the stored residual is the raw
one minus its mean over d_model, and on an RMSNorm model (where 3.x does not centre) the raw one.
"""

import json

import pytest
import torch

from lens_cache import export
from tests.helpers import TL_MAJOR, prompt_dir, read_safetensors

HOOKS = ("resid_pre", "resid_mid", "resid_post")
TEXTS = [  # different lengths in one batch: padding is in play
    "The cat sat on the mat because the mat was warm.",
    "Hi",
    "def add(a, b):\n    return a + b\n" * 3,
]


@pytest.fixture(scope="module", params=["gpt2", "gqa"])
def exported(request, tmp_path_factory) -> dict:
    model = request.getfixturevalue(f"{request.param}_model")
    save = tmp_path_factory.mktemp(f"resid-{request.param}")
    export(model, prompts=TEXTS, save_path=save, hooks=list(HOOKS), batch_size=3, quiet=True)
    cfg = json.loads((save / model.name / "model_cfg.json").read_text())
    return {
        "model": model,
        "dir": request.getfixturevalue(f"{request.param}_dir"),
        "cfg": cfg,
        "save": save,
    }


def stored(exported: dict, text: str) -> dict[str, torch.Tensor]:
    path = prompt_dir(exported["save"], exported["model"].name, text)
    return read_safetensors(path / "residuals.safetensors")


def names(n_layers: int) -> list[str]:
    return [f"blocks.{i}.hook_{kind}" for i in range(n_layers) for kind in HOOKS]


def test_every_residual_equals_the_live_models_single_prompt_cache(exported):
    model = exported["model"]
    for text in TEXTS:
        with torch.inference_mode():
            _, cache = model.model.run_with_cache(model.model.to_tokens(text))
        ours = stored(exported, text)
        assert sorted(ours) == sorted(names(model.n_layers))
        for key, value in ours.items():
            torch.testing.assert_close(value, cache[key][0], atol=1e-5, rtol=0, msg=key)


def _hf_parts(hf):
    """(blocks, the norm before each block's MLP, the final norm) of GPT-2 or Llama."""
    if hasattr(hf, "transformer"):
        return hf.transformer.h, [b.ln_2 for b in hf.transformer.h], hf.transformer.ln_f
    return hf.model.layers, [b.post_attention_layernorm for b in hf.model.layers], hf.model.norm


def hf_residuals(model_dir, ids: list[int]) -> dict[str, torch.Tensor]:
    """Every hook's residual from transformers' own forward of the raw model: resid_pre and
    resid_post from `hidden_states`, except that its last entry is after the final norm, so the
    last resid_post is the final norm's input; resid_mid is the input of the norm before the
    MLP."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    blocks, mid_norms, final_norm = _hf_parts(hf)
    seen = {}

    def keep(name):
        return lambda module, args: seen.__setitem__(name, args[0][0].clone())

    hooks = [
        n.register_forward_pre_hook(keep(f"blocks.{i}.hook_resid_mid"))
        for i, n in enumerate(mid_norms)
    ]
    hooks.append(final_norm.register_forward_pre_hook(keep("final_norm_input")))
    with torch.inference_mode():
        states = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    n = len(blocks)
    assert len(states) == n + 1
    with torch.inference_mode():  # the last entry is the final norm's output, not a residual
        torch.testing.assert_close(states[n][0], final_norm(seen["final_norm_input"]))
    out = {f"blocks.{i}.hook_resid_pre": states[i][0] for i in range(n)}
    out |= {f"blocks.{i}.hook_resid_post": states[i + 1][0] for i in range(n - 1)}
    out[f"blocks.{n - 1}.hook_resid_post"] = seen.pop("final_norm_input")
    return out | seen


def test_every_residual_equals_hugging_face_on_the_raw_model(exported):
    model, cfg = exported["model"], exported["cfg"]
    processing = cfg["lens_cache"]["processing"]
    if TL_MAJOR >= 4:  # the raw model's hidden states, as docs/store-format.md says
        assert processing == {}
        centred = False
    else:  # the record says what was done to the weights, and the live model agrees
        assert processing == {
            "fold_ln": True,
            "center_writing_weights": True,
            "center_unembed": True,
            "fold_value_biases": True,
        }
        norm = model.model.cfg.normalization_type
        assert norm in ("LNPre", "RMSPre")  # fold_ln took the norms' weights into the layers
        centred = norm == "LNPre"  # 3.x centres writing weights only around a LayerNorm
    for text in TEXTS:
        reference = hf_residuals(exported["dir"], model.tokenize(text))
        ours = stored(exported, text)
        assert sorted(ours) == sorted(reference)
        for key, value in reference.items():
            if centred:
                value = value - value.mean(-1, keepdim=True)
            torch.testing.assert_close(ours[key], value, atol=1e-5, rtol=1e-5, msg=key)
