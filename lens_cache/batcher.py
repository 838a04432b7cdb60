"""Plan batches: sort by token length, then fill each batch within its limits.

Sorting by length means prompts of similar length share a batch, so right padding wastes
little. Longest first: if a batch will not fit in memory, the run finds out at once.
"""

from __future__ import annotations


def plan_batches(
    lengths: list[int],
    *,
    batch_size: int = 8,
    token_budget: int | None = None,
    max_batch_bytes: int | None = None,
    bytes_per_prompt=None,
) -> list[list[int]]:
    """Group prompt indices into batches, longest prompts first.

    A batch grows while it has fewer than `batch_size` prompts, its padded size
    (`n_prompts * longest`) stays within `token_budget`, and the estimated bytes of its cached
    activations (`bytes_per_prompt(longest)` each) stay within `max_batch_bytes`. A prompt that
    breaks a limit on its own still gets a batch of one.

    Returns:
        Lists of indices into `lengths`; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and _fits(
            batches[-1], lengths, i, batch_size, token_budget, max_batch_bytes, bytes_per_prompt
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _fits(batch, lengths, i, batch_size, token_budget, max_batch_bytes, bytes_per_prompt) -> bool:
    n = len(batch) + 1
    longest = max(lengths[batch[0]], lengths[i])  # sorted: the first is the longest
    if n > batch_size:
        return False
    if token_budget is not None and n * longest > token_budget:
        return False
    if max_batch_bytes is not None and bytes_per_prompt is not None:
        return n * bytes_per_prompt(longest) <= max_batch_bytes
    return True
