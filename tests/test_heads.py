"""Export kind head_contributions: value norms ||v_j W_O^h|| and per-head direct logit
attribution, on the tiny GPT-2 (LayerNorm) and Llama-like GQA (RMSNorm) models, checked
against what the test computes itself from the live model and (4.x) plain transformers."""

from pathlib import Path

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache.errors import ActivationsMissingError
from lens_cache.layout import HEADS_NAME, PROMPT_NAME
from tests.conftest import boot
from tests.helpers import TL_MAJOR

PROMPTS = [
    "The lighthouse keeper kept two logbooks, one for ships and one for birds.",
    "a b a b c",
    "Heat rises; the cooler surface sinks.",
]
HOOKS = ("pattern", "head_contributions")


def _with_random_norms(src: Path, dst: Path) -> Path:
    """A copy of a tiny model whose norms have random weights and biases: freshly initialised
    ones are 1 and 0, which would hide a norm weight or bias applied wrongly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".ln_" in name or "norm" in name:
                centre = 1.0 if name.endswith("weight") else 0.0
                p.copy_(centre + 0.5 * torch.randn(p.shape, generator=gen))
    hf.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module", params=["gpt2", "gqa"])
def exported(request, tmp_path_factory):
    """(model name, live LensModel, HF directory, store): a tiny model with random norm
    weights, PROMPTS exported in one batch."""
    src = request.getfixturevalue(f"{request.param}_dir")
    hf_dir = _with_random_norms(src, tmp_path_factory.mktemp(f"tiny-{request.param}-norms"))
    live = boot(hf_dir)
    path = tmp_path_factory.mktemp("heads")
    lens_cache.export(live, prompts=PROMPTS, save_path=path, hooks=HOOKS, batch_size=3, quiet=True)
    return request.param, live, hf_dir, lens_cache.open(path)


def _run(live, ids):
    with torch.inference_mode():
        logits, cache = live.model.run_with_cache(torch.tensor([ids]))
    return logits[0].double(), {k: v[0].double() for k, v in cache.items()}


def _final_norm(live, resid):
    """The final norm's scale per position, recomputed here from its definition, and its
    weight and bias: the HF module's on 4.x, none on 3.x (fold_ln moved them into W_U/b_U)."""
    cfg = live.cfg
    centred = str(cfg.normalization_type).startswith("LN")
    x = resid - resid.mean(-1, keepdim=True) if centred else resid
    scale = torch.sqrt((x**2).mean(-1, keepdim=True) + cfg.eps)
    ln = live.model.ln_final.named_parameters()
    params = {n.split(".")[-1]: p.detach().double() for n, p in ln}
    return scale, params.get("weight"), params.get("bias"), centred


def _dla(component, scale, weight, centred, W_U, targets):
    """DLA of a [T, d_model] component toward each target, with the scale frozen per row."""
    c = component - component.mean(-1, keepdim=True) if centred else component
    x = c / scale
    if weight is not None:
        x = x * weight
    return torch.einsum("tm,mt->t", x, W_U[:, targets])


def _other_components(live, cache):
    """Everything written into the residual stream but the heads: embeddings, each layer's
    attention output bias (broadcast over positions) and each MLP's output."""
    t = cache["hook_embed"].shape[0]
    parts = [cache["hook_embed"]]
    if "hook_pos_embed" in cache:
        parts.append(cache["hook_pos_embed"])
    for layer in range(live.n_layers):
        try:
            b_O = live.model.blocks[layer].attn.b_O
        except AttributeError:  # 4.x: a bias-free projection has none
            b_O = None
        if b_O is not None:
            parts.append(b_O.detach().double().expand(t, -1))
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"])
    return parts


def heads_out(live, cache):
    """Every head's output summed over heads and layers, from hook_z and W_O."""
    return sum(
        torch.einsum(
            "thd,hdm->tm",
            cache[f"blocks.{i}.attn.hook_z"],
            live.model.blocks[i].attn.W_O.detach().double(),
        )
        for i in range(live.n_layers)
    )


def test_decomposition_closes_to_the_models_logit(exported):
    _, live, _, store = exported
    model = store.models()[0]
    W_U, b_U = live.model.W_U.detach().double(), live.model.b_U.detach().double()
    for record in store.prompts(model):
        ids = record["token_ids"]
        logits, cache = _run(live, ids)
        final = cache[f"blocks.{live.n_layers - 1}.hook_resid_post"]
        scale, weight, bias, centred = _final_norm(live, final)
        targets = torch.tensor(ids[1:])
        parts = _other_components(live, cache)
        torch.testing.assert_close(sum(parts) + heads_out(live, cache), final)  # all of it
        heads = store.head_dla(model, record).astype(np.float64)[:, :, :-1].sum(axis=(0, 1))
        others = sum(_dla(p[:-1], scale[:-1], weight, centred, W_U, targets) for p in parts)
        bias_term = (bias @ W_U[:, targets]) if bias is not None else 0.0
        total = heads + (others + bias_term + b_U[targets]).numpy()
        expected = logits[torch.arange(len(ids) - 1), targets].numpy()
        np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        assert np.isnan(store.head_dla(model, record)[:, :, -1]).all()


def test_head_terms_sum_to_the_attention_output_term(exported):
    """Per layer, the stored heads' DLA equals the DLA of hook_attn_out minus its bias."""
    _, live, _, store = exported
    model = store.models()[0]
    record = store.prompts(model)[0]
    ids = record["token_ids"]
    _, cache = _run(live, ids)
    final = cache[f"blocks.{live.n_layers - 1}.hook_resid_post"]
    scale, weight, _, centred = _final_norm(live, final)
    W_U = live.model.W_U.detach().double()
    stored = store.head_dla(model, record).astype(np.float64)
    parts = _other_components(live, cache)
    has_bias = len(parts) > 1 + live.n_layers + ("hook_pos_embed" in cache)
    for layer in range(live.n_layers):
        attn = cache[f"blocks.{layer}.hook_attn_out"]
        if has_bias:
            attn = attn - live.model.blocks[layer].attn.b_O.detach().double()
        want = _dla(attn[:-1], scale[:-1], weight, centred, W_U, torch.tensor(ids[1:]))
        np.testing.assert_allclose(stored[layer, :, :-1].sum(0), want.numpy(), atol=1e-5)


def _hf_value_norms(hf_dir, ids, n_heads):
    """||v_j W_O^h|| from a plain transformers forward: the value projection's output (of the
    normed input) captured by a forward hook, and the head's slice of o_proj / c_proj."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    gpt2 = hf.config.model_type == "gpt2"
    blocks = hf.transformer.h if gpt2 else hf.model.layers
    seen = {}
    for i, block in enumerate(blocks):
        proj = block.attn.c_attn if gpt2 else block.self_attn.v_proj
        proj.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out[0].double()))
    with torch.no_grad():
        hf(torch.tensor([ids]))
    out = []
    for i, block in enumerate(blocks):
        d_model = hf.config.hidden_size
        d_head = d_model // n_heads
        if gpt2:
            v = seen[i][:, 2 * d_model :]  # c_attn's output is q, k, v side by side
            w_o = block.attn.c_proj.weight.detach().double()  # Conv1D: [in = heads * d_head, out]
        else:
            v = seen[i]
            w_o = (
                block.self_attn.o_proj.weight.detach().double().T
            )  # Linear: [out, in] -> [in, out]
        per_group = n_heads // (v.shape[-1] // d_head)
        rows = []
        for h in range(n_heads):
            g = h // per_group
            v_h = v[:, g * d_head : (g + 1) * d_head]
            rows.append(torch.linalg.vector_norm(v_h @ w_o[h * d_head : (h + 1) * d_head], dim=-1))
        out.append(torch.stack(rows))
    return torch.stack(out).numpy()


def _hook_value_norms(live, ids):
    """The same from the live model's own hooks and W_O (3.x: processed weights)."""
    _, cache = _run(live, ids)
    out = []
    for layer in range(live.n_layers):
        v = cache[f"blocks.{layer}.attn.hook_v"]
        W_O = live.model.blocks[layer].attn.W_O.detach().double()
        per_group = W_O.shape[0] // v.shape[1]
        rows = [
            torch.linalg.vector_norm(v[:, h // per_group] @ W_O[h], dim=-1)
            for h in range(W_O.shape[0])
        ]
        out.append(torch.stack(rows))
    return torch.stack(out).numpy()


def test_value_norms_equal_an_independent_computation(exported):
    _, live, hf_dir, store = exported
    model = store.models()[0]
    for record in store.prompts(model):
        ids = record["token_ids"]
        if TL_MAJOR >= 4:
            want = _hf_value_norms(hf_dir, ids, live.n_heads)
        else:
            want = _hook_value_norms(live, ids)
        got = store.value_norms(model, record)
        assert got.shape == (live.n_layers, live.n_heads, len(ids)) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_batched_equals_single_prompt_and_layers_select(exported, tmp_path):
    name, live, _, store = exported
    lens_cache.export(
        live, prompts=PROMPTS, save_path=tmp_path, hooks=HOOKS, batch_size=1, quiet=True
    )
    single = lens_cache.open(tmp_path)
    model = store.models()[0]
    for record in store.prompts(model):
        for read in ("value_norms", "head_dla"):
            a = getattr(store, read)(model, record)
            b = getattr(single, read)(model, record)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    last = store.head_dla(model, store.prompts(model)[0], layers=[-1])
    assert last.shape[0] == 1


def test_promised_in_prompt_json_and_missing_named(exported, tmp_path):
    _, live, _, _ = exported
    lens_cache.export(live, prompts=PROMPTS[:2], save_path=tmp_path, hooks=HOOKS, quiet=True)
    store = lens_cache.open(tmp_path)
    model = store.models()[0]
    record = store.prompts(model)[0]
    folder = tmp_path / model / "prompts" / record["hash"]
    (folder / HEADS_NAME).unlink()
    again = lens_cache.export(
        live, prompts=PROMPTS[:2], save_path=tmp_path, hooks=HOOKS, quiet=True
    )
    assert (again[0].exported, again[0].cached) == (1, 1)  # the prompt missing it is redone
    assert (folder / HEADS_NAME).is_file() and (folder / PROMPT_NAME).is_file()
    plain = tmp_path / "plain"
    lens_cache.export(live, prompts=PROMPTS[:1], save_path=plain, hooks=("pattern",), quiet=True)
    with pytest.raises(ActivationsMissingError, match="--hooks pattern,head_contributions"):
        lens_cache.open(plain).value_norms(model, PROMPTS[0])


def test_cache_verify_checks_head_contributions(exported, tmp_path):
    from lens_cache.cache import verify_store

    _, live, _, _ = exported
    lens_cache.export(live, prompts=PROMPTS[:2], save_path=tmp_path, hooks=HOOKS, quiet=True)
    assert verify_store(tmp_path, quiet=True)[0] == []
    model = lens_cache.open(tmp_path).models()[0]
    first, second = sorted((tmp_path / model / "prompts").iterdir())
    blob = (first / HEADS_NAME).read_bytes()
    (first / HEADS_NAME).write_bytes(blob[: len(blob) // 2])
    (second / HEADS_NAME).unlink()
    found = {(p.status, p.path) for p in verify_store(tmp_path, quiet=True)[0]}
    assert found == {("corrupt", first / HEADS_NAME), ("missing", second / HEADS_NAME)}
