"""`make bench`'s corpus row: many short synthetic prompts through a tiny model with the summary
kinds (`--hooks head_metrics head_contributions logits`), no pattern stored.

Measured, each export in a fresh process so that its peak RSS is its own: the forward pass
alone over the same batches (caching the hooks the summary kinds read), the export (without
the viewer), the files and bytes per prompt, the viewer build, and an unchanged rebuild. The
model is a 2-layer, 4-head GPT-2 shape with random weights and SmolLM2's tokenizer, built once
in the cache; the prompts are random words, about 20 tokens each, the same for every run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOKS = ("head_metrics", "head_contributions", "logits")
WORDS = "the of and a to in is was for on that with as by at from his her it an were are".split()
WORDS += "river stone light market winter garden letter music number water paper silver".split()


def tiny_model_dir() -> Path:
    """A 2-layer, 4-head, 64-wide GPT-2 with SmolLM2's tokenizer, made once in the cache."""
    return gpt2_bench_dir("tiny-corpus", n_embd=64, n_layer=2, n_head=4, n_positions=256)


def gpt2_bench_dir(name: str, **shape) -> Path:
    """A GPT-2 of `shape` (GPT2Config's n_embd, n_layer, n_head, n_positions) with random
    weights and SmolLM2's tokenizer, made once under the cache's `bench/<name>`: the bench's
    models, offline (`bench.bench_model_dir` makes its GPT-2-small shape here too)."""
    from lens_cache.models import cache_home, smollm2_dir

    path = cache_home() / "bench" / name
    if not (path / "config.json").is_file():
        import torch
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
        torch.manual_seed(0)
        cfg = GPT2Config(
            **shape,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        GPT2LMHeadModel(cfg).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def write_prompts(path: Path, n: int) -> None:
    """`n` distinct prompts of 12-24 random words, seeded: the same file every run."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(12, 24))
        lines.append(json.dumps({"text": " ".join(words) + f" {i}.", "meta": {"i": i % 10}}))
    path.write_text("\n".join(lines) + "\n")


def child(args) -> dict:
    """One timed run in this process: `forward` or `export`."""
    from lens_cache import export
    from lens_cache.models import load_model
    from lens_cache.prompts import read_prompts

    model = load_model(str(tiny_model_dir()), device="cpu")
    prompts = read_prompts(args.prompts)
    start = time.perf_counter()
    if args.child == "forward":
        forward(model, prompts, args.batch_size)
    else:
        kw = dict(hooks=list(HOOKS), layers="all", batch_size=args.batch_size)
        export(model, prompts, save_path=args.save, index_html=False, quiet=True, **kw)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"run": args.child, "wall_s": wall, "peak_rss_mb": rss, "prompts": len(prompts)}


def forward(model, prompts: list[dict], batch_size: int) -> None:
    """The export's batches through the model, caching what the summary kinds read (every
    layer's pattern, values and head outputs, the final residual), nothing kept."""
    from lens_cache import heads
    from lens_cache.batcher import plan_batches
    from lens_cache.capture import right_pad
    from lens_cache.layout import PATTERN, hook_name

    layers = list(range(model.n_layers))
    names = [hook_name(PATTERN, i) for i in layers] + heads.cache_names(layers, model.n_layers)
    ids = [model.tokenize(p["text"]) for p in prompts]
    for batch in plan_batches([len(x) for x in ids], batch_size=batch_size):
        model.run(right_pad(model, [ids[i] for i in batch]), names, model.n_layers - 1)


def corpus_timing(n_prompts: int = 10_000, batch_size: int = 8) -> dict:
    """The corpus row (see the module docstring)."""
    from lens_cache.viewer import write_viewer

    with tempfile.TemporaryDirectory(prefix="lens-corpus-") as tmp:
        prompts, save = Path(tmp) / "prompts.jsonl", Path(tmp) / "store"
        write_prompts(prompts, n_prompts)
        tiny_model_dir()  # made before the timed children
        runs = {r: _run_child(r, prompts, save, batch_size) for r in ("forward", "export")}
        files = [p for p in save.rglob("*") if p.is_file()]
        prompt_files = [p for p in files if "prompts" in p.parts]
        first = write_viewer(save, log=lambda _: None)
        again = write_viewer(save, log=lambda _: None)
        return {
            "prompts": n_prompts,
            "forward_s": runs["forward"]["wall_s"],
            "export_s": runs["export"]["wall_s"],
            "x_forward": runs["export"]["wall_s"] / runs["forward"]["wall_s"],
            "export_peak_rss_mb": runs["export"]["peak_rss_mb"],
            "files_per_prompt": len(prompt_files) / n_prompts,
            "bytes_per_prompt": sum(p.stat().st_size for p in prompt_files) / n_prompts,
            "viewer_build_s": first["seconds"],
            "viewer_rebuild_unchanged_s": again["seconds"],
            "viewer_files": sum(1 for p in (save / "viewer_data").rglob("*") if p.is_file()),
        }


def _run_child(run: str, prompts: Path, save: Path, batch_size: int) -> dict:
    cmd = [sys.executable, "-m", "lens_cache.bench_corpus", "--child", run]
    cmd += ["--prompts", str(prompts), "--save", str(save), "--batch-size", str(batch_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_cache.bench_corpus")
    p.add_argument("-n", type=int, default=10_000, help="synthetic prompts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--child", choices=("forward", "export"), help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    print(json.dumps(corpus_timing(args.n, args.batch_size), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
