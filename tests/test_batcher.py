from lens_cache.batcher import plan_batches


def test_longest_first_and_every_index_once():
    lengths = [5, 50, 7, 49, 6, 48]
    batches = plan_batches(lengths, batch_size=2)
    assert batches == [[1, 3], [5, 2], [4, 0]]


def test_token_budget_counts_padded_tokens():
    lengths = [10, 10, 10, 3, 3, 3, 3]
    batches = plan_batches(lengths, batch_size=100, token_budget=20)
    assert batches == [[0, 1], [2, 3], [4, 5, 6]]  # 2x10, then 10+3 padded to 2x10, then 3x3


def test_byte_cap_and_oversized_prompt_alone():
    lengths = [100, 10, 10]
    batches = plan_batches(
        lengths, batch_size=8, max_batch_bytes=250, bytes_per_prompt=lambda t: t * 10
    )
    assert batches == [[0], [1, 2]]
