"""What the model predicts at each position: the `logits` and `logit_lens` export kinds.

For every position of a prompt: the loss of the actual next token (`-log p`), the entropy of
the prediction, the top-k token ids with their log-probabilities, and the rank of the actual
next token (0: it was the top prediction). The last position has no next token: its loss is
NaN and its rank -1. Full vocabulary rows are never stored.

`logits` reads the model's own prediction; `logit_lens` reads the same out of each selected
layer's `resid_post`: the model's final norm recomputed on that residual, then the
unembedding (nostalgebraist's logit lens). Both go through one function on the last layer's
residual, so the lens at the last layer is the final prediction, bit for bit.

The `[positions, vocab]` logits are computed a chunk of positions at a time on the model's
device, so memory holds one chunk's rows (a few copies of `rows x vocab` float32), never the
whole batch's.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from lens_cache.adapter import LensModel
from lens_cache.layout import PREDICTION_FIELDS as FIELDS

# Copies of a `rows x vocab` float32 block alive at once while a chunk is read out (logits,
# log-probs, probabilities, a comparison mask): the chunk is sized for this many.
_ROW_COPIES = 4
# Bytes of vocabulary rows read out together once the chunk's logits are formed: about what
# stays in one core's cache (2 MiB of L2 per core on the 2-core machine).
_CACHE_BYTES = 2**20


def readout(
    model: LensModel,
    resid: Float[torch.Tensor, "pos d_model"],
    targets: Int[torch.Tensor, " pos"],
    top_k: int,
    max_bytes: int,
) -> dict[str, torch.Tensor]:
    """The prediction read out of one residual stream, a chunk of positions at a time.

    Args:
        model: the model whose final norm and unembedding are applied.
        resid: the residual stream entering the final norm (a layer's `resid_post`).
        targets: the actual next token at each position, -1 where there is none.
        top_k: how many of the most likely tokens to keep per position.
        max_bytes: most bytes of `rows x vocab` float32 blocks per chunk.

    Returns:
        `loss` `[pos]` float32 (NaN without target), `entropy` `[pos]` float32, `top_ids`
        `[pos, top_k]` int32, `top_logprobs` `[pos, top_k]` float32, `target_rank` `[pos]`
        int32 (-1 without target), on the residual's device.
    """
    rows = max(1, max_bytes // (_ROW_COPIES * 4 * model.d_vocab))
    chunks = [
        _read_chunk(model, resid[i : i + rows], targets[i : i + rows], top_k)
        for i in range(0, resid.shape[0], rows)
    ]
    return {name: torch.cat([c[name] for c in chunks]) for name in FIELDS}


def _read_chunk(model: LensModel, resid, targets, top_k: int) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        logits = model.unembed(model.final_norm(resid[None]))[0].float()
    # One matrix product for the whole chunk (fewer rows make it slower), then the passes over
    # its rows a few rows at a time: a block of vocabulary rows that fits in a core's cache is
    # read from memory once instead of once per pass (each pass over a chunk too large for the
    # cache cost about as much as a fifth of the matrix product). Rows are independent, so
    # the blocks change no value.
    block = max(1, _CACHE_BYTES // (4 * logits.shape[-1]))
    parts = [
        _read_rows(logits[i : i + block], targets[i : i + block], top_k)
        for i in range(0, logits.shape[0], block)
    ]
    return {name: torch.cat([p[name] for p in parts]) for name in FIELDS}


def _read_rows(logits, targets, top_k: int) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        logprobs = logits.log_softmax(-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        top_logprobs, top_ids = logprobs.topk(top_k, dim=-1)
        has_target = targets >= 0
        safe = targets.clamp(min=0)[:, None]
        target_logprob = logprobs.gather(-1, safe)[:, 0]
        # rank = how many tokens the model preferred to the actual one (ties do not count);
        # summed as int32: a sum of booleans defaults to int64, which took longer than the
        # comparison itself
        rank = (logprobs > target_logprob[:, None]).sum(-1, dtype=torch.int32)
    nan = torch.full_like(target_logprob, float("nan"))
    return {
        "loss": torch.where(has_target, -target_logprob, nan),
        "entropy": entropy,
        "top_ids": top_ids.to(torch.int32),
        "top_logprobs": top_logprobs,
        "target_rank": torch.where(has_target, rank, -1).to(torch.int32),
    }


def readout_layers(kinds, layers, n_layers: int) -> list[int]:
    """The layers whose `resid_post` is read out: each selected layer for `logit_lens`, the
    last layer for `logits` (the final norm's input, so its readout is the model's logits)."""
    read = set(layers) if "logit_lens" in kinds else set()
    if "logits" in kinds:
        read.add(n_layers - 1)
    return sorted(read)


def next_tokens(ids: list[int], device) -> Int[torch.Tensor, " pos"]:
    """The actual next token at each position of a prompt; -1 at the last."""
    targets = torch.full((len(ids),), -1, dtype=torch.long)
    targets[:-1] = torch.tensor(ids[1:], dtype=torch.long)
    return targets.to(device)


def mean_loss(loss: Float[torch.Tensor, " pos"]) -> float | None:
    """The mean loss over positions that have a next token (None for a one-token prompt)."""
    known = loss[~loss.isnan()]
    return float(known.double().mean()) if known.numel() else None
