"""`python -m lens_cache.activations` (`lens-cache export`): export attention patterns and
residual streams.

Flags follow pattern-lens where they overlap. Progress goes to stderr; the paths written go
to stdout, one per line, so the output can be piped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, fields

from lens_cache.cli.args import (
    ListOption,
    Parser,
    add_metrics_module,
    add_no_fsync,
    add_save_path,
    load_metrics_modules,
)
from lens_cache.distributed import is_reporting_rank
from lens_cache.layout import (
    DEFAULT_DTYPE,
    DEFAULT_MODEL,
    DEFAULT_TOP_K,
    DEFAULT_TOPK_KEYS,
    DTYPES,
    HOOK_KINDS,
    INDEX_HTML,
    PATTERN,
    PATTERN_DTYPES,
    POOLS,
    PREDICTION_KINDS,
    could_name_hook_point,
)
from lens_cache.pooled import DEFAULT_SHARD_MAX_BYTES
from lens_cache.prompts import DEFAULT_PROMPTS

PROG = "python -m lens_cache.activations"


@dataclass(frozen=True)
class ExportOptions:
    """`export()`'s keyword arguments as the command line sets them, one field per keyword and
    named as `export()` names it: the flags reach it through one object, not copied one by one
    (tests/test_cli_options.py keeps the fields and `export()`'s keywords in step)."""

    models: list
    prompts: object  # a path, "default", or the rows of --dataset
    save_path: str
    hooks: list
    layers: str
    resid_dtype: str
    pattern_dtype: str
    stacked_heads: bool
    top_k: int
    lens_layers: str | None
    topk_keys: int
    batch_size: int
    token_budget: int | None
    max_batch_mb: float
    force: bool
    on_long: str
    device: str | None
    model_dtype: str
    writers: int
    compress_level: int
    index_html: bool
    pool: list | None
    shard_max_bytes: int
    quiet: bool
    min_chars: int | None  # the rest: `select_prompts`'s, through export's **prompt_options
    max_chars: int | None
    raw: bool
    n_samples: int | None
    shuffle: bool
    seed: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportOptions:
        """Every flag whose destination is a field's name as it is; the few others here."""
        derived = {
            "models": args.models or [DEFAULT_MODEL],
            "prompts": _prompt_source(args),
            "index_html": not args.no_index_html,
            "raw": args.raw_prompts,
        }
        same = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in derived}
        return cls(**same, **derived)

    def kwargs(self) -> dict:
        """`export(**options.kwargs())`; not `asdict`, which would deep-copy a dataset's rows."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Run TransformerLens models over prompts and store every attention pattern "
        "and the residual stream, pattern-lens compatible. Rerunning resumes. Lists take "
        "commas or spaces: --hooks pattern,resid_post is --hooks pattern resid_post.",
    )
    a = p.add_argument
    a(
        "-m",
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help=f"model to export; repeat for several. '{DEFAULT_MODEL}' (works offline), a "
        "local HF directory, a .gguf file, or a Hugging Face name (default: " + DEFAULT_MODEL + ")",
    )
    a(
        "-p",
        "--prompts",
        default=DEFAULT_PROMPTS,
        help="a .jsonl file ({'text': ..., 'meta': {...}} per line) or a text file (one prompt "
        "per line); 'default' is the embedded prompt set",
    )
    add_save_path(p)
    a("--min-chars", type=int, default=None, help="drop prompts shorter than this")
    a("--max-chars", type=int, default=None, help="split prompts longer than this into chunks")
    a(
        "-r",
        "--raw-prompts",
        action="store_true",
        help="take prompts exactly as written: ignore --min-chars and --max-chars",
    )
    a("-n", "--n-samples", type=int, default=None, help="export at most this many prompts")
    a("--shuffle", action="store_true", help="shuffle the prompts before taking -n")
    a("--seed", type=int, default=0, help="seed for --shuffle")
    a(
        "--dataset",
        default=None,
        metavar="NAME_OR_PATH",
        help="read prompts from a dataset instead of -p: a .parquet/.jsonl/.json/.csv/.tsv file, "
        "a save_to_disk folder, or a Hugging Face dataset name (needs the network); with -n "
        "and no --shuffle, only the first rows are read (Hub datasets are streamed)",
    )
    a("--split", default="train", help="dataset split (--dataset)")
    a("--text-column", default="text", help="dataset column holding the prompt text")
    a(
        "--label-columns",
        action=ListOption,
        default=[],
        metavar="COLUMN",
        help="dataset columns to keep as metadata (labels for probes)",
    )
    a("--dataset-config", default=None, help="dataset configuration name (Hub datasets)")
    a(
        "--pool",
        action=ListOption,
        choices=POOLS,
        default=None,
        help="after exporting, pool each stored residual hook per prompt into a sharded parquet "
        "dataset under <save>/<model>/pooled/ (repeatable)",
    )
    a(
        "--shard-max-bytes",
        type=int,
        default=DEFAULT_SHARD_MAX_BYTES,
        help="most bytes per pooled parquet shard",
    )
    a(
        "--hooks",
        action=ListOption,
        choices=HOOK_KINDS + PREDICTION_KINDS,
        aliases={"patterns": PATTERN},  # the Hub's spelling of the same kind
        accept=could_name_hook_point,  # TransformerLens hook points, checked per model
        default=[PATTERN, "resid_post"],
        help="what to store: attention patterns, residual stream hooks, what the model "
        "predicts: logits (per-token loss, entropy, top-k, rank of the actual token) and "
        "logit_lens (the same read out of each selected layer's resid_post), "
        "head_contributions (value norms and direct logit attribution per head), "
        "pattern_topk (a compact pattern for long prompts: see --topk-keys), and any "
        "per-token TransformerLens hook by name or glob (blocks.*.hook_mlp_out, "
        "'blocks.{3,5}.attn.hook_z', ln_final.hook_normalized) or block site at each "
        "--layers (mlp.hook_post)",
    )
    a(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help="most likely next tokens stored per position by logits and logit_lens",
    )
    a(
        "--topk-keys",
        type=int,
        default=DEFAULT_TOPK_KEYS,
        help="keys kept per query row by pattern_topk, the compact pattern for long prompts "
        "(each row's strongest keys, its remaining mass and a block-pooled overview)",
    )
    a(
        "--list-hooks",
        action="store_true",
        help="print every hook point of each -m model with its shape for one prompt of T "
        "tokens, and exit (runs no prompt set)",
    )
    a(
        "--layers",
        action=ListOption,
        join=True,
        default="all",
        help="layers to store: all, first, middle, last, a list (0,3,5), a range (2-5), or a mix",
    )
    a(
        "--lens-layers",
        action=ListOption,
        join=True,
        default=None,
        help="of --layers, those logit_lens reads out (default: all of them); each one projects "
        "every position onto the vocabulary, which can cost more than the forward pass",
    )
    a(
        "--dtype",
        default=DEFAULT_DTYPE,
        choices=sorted(DTYPES),
        dest="resid_dtype",
        help="dtype of stored residuals",
    )
    a(
        "--pattern-dtype",
        default=DEFAULT_DTYPE,
        choices=list(PATTERN_DTYPES),
        help="dtype of stored patterns; float16 halves the bytes but is lossy (error <= 2.4e-4)",
    )
    a(
        "--model-dtype",
        default=DEFAULT_DTYPE,
        choices=sorted(DTYPES),
        help="dtype the model computes in (float16/bfloat16 change the patterns slightly)",
    )
    a(
        "--stacked-heads",
        action="store_true",
        help="store each prompt's patterns as one [1, layers, heads, T, T] .npy "
        "(activations-blocks.-.attn.hook_pattern.npy) instead of activations.npz",
    )
    a("-b", "--batch-size", type=int, default=8, help="most prompts per forward pass")
    a(
        "--token-budget",
        type=int,
        default=None,
        help="most padded tokens (prompts x longest) per forward pass: batch by tokens",
    )
    a(
        "--max-batch-mb",
        type=float,
        default=1024,
        help="most MB of cached activations per forward pass; the same again may wait for the "
        "writers, so peak memory is about the model plus twice this. A prompt over it alone runs "
        "one group of layers per pass",
    )
    a(
        "--writers",
        type=int,
        default=2,
        help="writer threads behind the forward pass (0: write in the main thread)",
    )
    a(
        "--compress-level",
        type=int,
        default=1,
        choices=range(10),
        metavar="0-9",
        help="deflate level of activations.npz; 0 stores it uncompressed (fastest, ~2x larger)",
    )
    a(
        "--on-long",
        choices=["skip", "fail"],
        default="skip",
        help="prompts longer than the model's context: skip with a warning, or fail",
    )
    a(
        "-f",
        "--force",
        action="store_true",
        help="recompute prompts already in the store (and replace ones stored with other settings)",
    )
    a("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    a("--no-index-html", action="store_true", help="do not write index.html")
    add_metrics_module(p)
    a("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_no_fsync(p)
    return p


def main(argv=None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.quiet:
        _silence_loaders()
    if args.list_hooks:
        return _list_hooks(args.models or [DEFAULT_MODEL], args.device)
    from lens_cache.exporter import export  # after parsing: --help stays fast

    load_metrics_modules(args.metrics_module)  # before any prompt's viewer data is made
    # Libraries print to stdout ("Moving model to device", ...); stdout is for our results.
    with contextlib.redirect_stdout(sys.stderr):
        reports = export(**ExportOptions.from_args(args).kwargs())
    if not is_reporting_rank():
        return 0  # under torchrun, rank 0 reports for everyone
    for r in reports:
        print(r.path)
        for path in r.pooled:
            print(path)
    if not args.no_index_html:
        print(os.path.join(args.save_path, INDEX_HTML))
    return 0


def _list_hooks(models, device) -> int:
    """One line per hook point: name, shape, dtype, and whether --hooks can store it."""
    from lens_cache.hooks import list_hooks
    from lens_cache.models import load_model

    for spec in models:
        with contextlib.redirect_stdout(sys.stderr):
            points = list_hooks(load_model(spec, device=device))
        for point in points:
            note = "" if point.per_token else "  (not per token: not stored)"
            print(f"{point.name}\t{point.describe()}{note}")
    return 0


def _prompt_source(args):
    if not args.dataset:
        return args.prompts
    from lens_cache.sources import iter_dataset

    # Taking the first -n rows needs only the start of the dataset: stream it rather than
    # download it whole. Shuffling needs every row, and a full read is worth caching.
    return iter_dataset(
        args.dataset,
        split=args.split,
        text_column=args.text_column,
        label_columns=args.label_columns,
        config=args.dataset_config,
        streaming=args.n_samples is not None and not args.shuffle,
    )


def _silence_loaders() -> None:
    """--quiet also means no weight-loading bars from transformers and huggingface_hub."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
