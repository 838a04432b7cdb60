"""The export command hands `export()` one `ExportOptions`: its fields are `export()`'s
keywords (read from the signatures, not from a list of ours), and each flag reaches its own."""

from __future__ import annotations

import inspect

from lens_cache.cli.export import ExportOptions, build_parser
from lens_cache.exporter import export
from lens_cache.prompts import select_prompts


def _keywords(function) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(function).parameters.values()
    return {p.name for p in params if p.kind in kinds}


def test_the_options_are_exactly_exports_keywords():
    prompt_options = _keywords(select_prompts) - {"prompts"}  # export's **prompt_options
    fields = set(ExportOptions.__dataclass_fields__)
    assert fields == _keywords(export) | prompt_options


ARGV = (
    "-m a -m b -p p.jsonl -s out --min-chars 3 --max-chars 90 -r -n 7 --shuffle --seed 5 "
    "--pool mean --shard-max-bytes 1000 --hooks pattern,logits,logit_lens --top-k 4 "
    "--topk-keys 16 --layers 1-2 --lens-layers 2 --dtype float16 --pattern-dtype float16 "
    "--model-dtype bfloat16 --stacked-heads -b 3 --token-budget 64 --max-batch-mb 12.5 "
    "--writers 0 --compress-level 0 --on-long fail -f --device cpu --no-index-html -q"
).split()

WANTED = {  # what each flag of ARGV means to export(), written out by hand
    "models": ["a", "b"],
    "prompts": "p.jsonl",
    "save_path": "out",
    "min_chars": 3,
    "max_chars": 90,
    "raw": True,
    "n_samples": 7,
    "shuffle": True,
    "seed": 5,
    "pool": ["mean"],
    "shard_max_bytes": 1000,
    "hooks": ["pattern", "logits", "logit_lens"],
    "top_k": 4,
    "topk_keys": 16,
    "layers": "1-2",
    "lens_layers": "2",
    "resid_dtype": "float16",
    "pattern_dtype": "float16",
    "model_dtype": "bfloat16",
    "stacked_heads": True,
    "batch_size": 3,
    "token_budget": 64,
    "max_batch_mb": 12.5,
    "writers": 0,
    "compress_level": 0,
    "on_long": "fail",
    "force": True,
    "device": "cpu",
    "index_html": False,
    "quiet": True,
}


def test_every_flag_reaches_its_keyword():
    options = ExportOptions.from_args(build_parser().parse_args(ARGV))
    assert options.kwargs() == WANTED
