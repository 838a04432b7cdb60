"""What each head moves and what it pushes the prediction towards (export kind
``head_contributions``), computed from one forward pass's cache.

Per layer and head, for every position of a prompt:

- ``value_norms[h, j] = ||v_j W_O^h||``: the norm of what key position ``j`` would write
  through head ``h`` if attended to with weight 1. ``v_j`` is the value vector of the head's
  key/value group under grouped-query attention, ``W_O^h`` the head's ``[d_head, d_model]``
  slice of the output projection. Attention times it, ``A[i, j] * value_norms[h, j]``, is the
  value-weighted pattern (Kobayashi et al. 2020), so no ``[T, T]`` array is stored twice.
- ``dla[h, i]``: direct logit attribution of the head's output at position ``i`` toward the
  actual next token ``t = ids[i + 1]``, through the final norm with its scale frozen at its
  value for position ``i``: ``(c / scale_i) . (w_norm * W_U[:, t])``, where ``c = z_i^h W_O^h``
  is centred first when the final norm is a LayerNorm (equivalently, the direction is centred).
  The last position has no next token: its DLA is NaN.

Every component written into the residual stream (embeddings, each head, each attention output
bias, each MLP) has such a term, and the terms plus the final norm's bias term and the
unembedding bias sum to the model's logit of ``t`` (the tests check it). The model's own
weights are used: on TransformerLens 3.x those are processed (``fold_ln`` puts the final norm's
weight into ``W_U`` and its bias into ``b_U``; ``fold_value_biases`` moves ``b_V`` into
``b_O``), so 3.x values describe the processed model, whose logits are the same.

Computed on the model's device in float32, on the padded batch; rows are trimmed per prompt
afterwards like every other hook (causal attention: padding never reaches a kept position).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from lens_cache.errors import HookNotFiredError
from lens_cache.layout import heads_member as member_name
from lens_cache.layout import hook_name, site_hook


def cache_names(layers, n_layers: int) -> list[str]:
    """The hooks a batch must cache: each stored layer's values and head outputs, and the
    final residual (the final norm's input, whose scale the DLA freezes)."""
    names = [site_hook(f"attn.hook_{v}", i) for i in layers for v in ("v", "z")]
    return [*names, final_resid_name(n_layers)]


def final_resid_name(n_layers: int) -> str:
    return hook_name("resid_post", n_layers - 1)


def value_norms(
    v: Float[torch.Tensor, "batch pos n_kv_heads d_head"],
    W_O: Float[torch.Tensor, "n_heads d_head d_model"],
) -> Float[torch.Tensor, "batch n_heads pos"]:
    """``||v_j W_O^h||`` for every head and key position; head ``h`` reads its group's ``v``.

    As ``sqrt(v_j G_h v_j)`` with the Gram matrix ``G_h = W_O^h W_O^h^T`` (``d_head x
    d_head``), not by forming every ``v_j W_O^h`` (``d_model`` floats per head and position:
    that cost a tenth of the forward pass). In float64, so the quadratic form loses nothing
    to cancellation; the result is float32."""
    per_group = W_O.shape[0] // v.shape[2]
    v = v.double().repeat_interleave(per_group, dim=2)  # [batch, pos, n_heads, d_head]
    W_O = W_O.double()
    gram = W_O @ W_O.transpose(1, 2)  # [n_heads, d_head, d_head]
    squared = torch.einsum("bphd,hde,bphe->bhp", v, gram, v)
    return squared.clamp(min=0).sqrt().float()


def dla_directions(
    ids: Int[torch.Tensor, "batch pos"],
    scale: Float[torch.Tensor, "batch pos 1"],
    W_U: Float[torch.Tensor, "d_model d_vocab"],
    norm_weight: Float[torch.Tensor, " d_model"] | None,
    centred: bool,
) -> Float[torch.Tensor, "batch pos d_model"]:
    """Per position ``i``: the vector whose dot product with a component's output at ``i`` is
    that component's DLA toward ``ids[i + 1]`` (zero at the last position, later set to NaN)."""
    targets = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1)
    u = W_U.float().T[targets]  # [batch, pos, d_model]: the unembedding column of each target
    if norm_weight is not None:
        u = u * norm_weight.float()
    if centred:  # LayerNorm subtracts the mean: centring the direction does the same to c
        u = u - u.mean(dim=-1, keepdim=True)
    return u / scale.float()


def head_dla(
    z: Float[torch.Tensor, "batch pos n_heads d_head"],
    W_O: Float[torch.Tensor, "n_heads d_head d_model"],
    directions: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch n_heads pos"]:
    """Each head's DLA at each position: ``(z_i^h W_O^h) . directions_i``; NaN at the last."""
    back = torch.einsum("hdm,bpm->bphd", W_O.float(), directions)  # W_O^h d_i, per head
    dla = torch.einsum("bphd,bphd->bhp", z.float(), back)
    dla[:, :, -1] = float("nan")
    return dla


def contributions(model, cache: dict, ids: Int[torch.Tensor, "batch pos"], layers) -> dict:
    """``{member name: [batch, n_heads, pos] float32}`` for every layer, from a batch's cache.

    `model` is a `LensModel` (its `W_O`, `W_U` and final norm); the padded positions' values
    are garbage and are trimmed per prompt by the caller. The last real position of a shorter
    prompt gets a value toward the pad that follows it: the caller sets it to NaN.
    """
    out = {}
    with torch.inference_mode():  # the cache holds inference tensors; weights need no grad
        scale = model.final_norm_scale(cache[final_resid_name(model.n_layers)])
        weight, _ = model.final_norm_affine()
        directions = dla_directions(ids, scale, model.W_U, weight, model.final_norm_centres)
        for layer in layers:
            W_O = model.W_O(layer)
            v, z = (cache[site_hook(f"attn.hook_{k}", layer)] for k in ("v", "z"))
            _check(v, z, W_O, ids.shape, layer)
            out[member_name(layer, "value_norms")] = value_norms(v, W_O)
            out[member_name(layer, "dla")] = head_dla(z, W_O, directions)
    return out


def trim(values: dict, row: int, n: int) -> dict:
    """One prompt's ``[n_heads, n]`` arrays from the batch, last position's DLA NaN."""
    out = {}
    for name, value in values.items():
        part = value[row, :, :n].clone()
        if name.endswith(".dla"):
            part[:, -1] = float("nan")
        out[name] = part.cpu().contiguous()
    return out


def _check(v, z, W_O, shape, layer: int) -> None:
    batch, pos = shape
    n_heads, d_head, _ = W_O.shape
    ok_z = tuple(z.shape) == (batch, pos, n_heads, d_head)
    ok_v = v.shape[:2] == (batch, pos) and v.shape[3] == d_head and n_heads % v.shape[2] == 0
    if not (ok_z and ok_v):
        raise HookNotFiredError(
            f"layer {layer}: hook_v {tuple(v.shape)} / hook_z {tuple(z.shape)} do not fit W_O "
            f"{tuple(W_O.shape)} for a batch of shape {tuple(shape)}"
        )
