"""`make bench`'s long-prompt rows: the compact pattern (`--hooks pattern_topk`) of one prompt
of 2,048, 4,096 and 8,192 tokens, against the forward pass and the dense npz it replaces.

Each length runs in a fresh process (`python -m lens_cache.bench_long --child`), so its peak
RSS is its own. Per row: the forward pass alone (whole model, nothing cached), the export (one
forward pass, each layer's pattern compacted in a hook as it fires, the file written), the
process's peak RSS, the compact file's bytes, and the dense float32 npz the prompt would take
uncompressed (`layers x heads x T^2 x 4`; deflate-1 saves little on the lower triangle, which
holds nearly all of its bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lens_cache.layout import DEFAULT_TOPK_KEYS, PATTERN_TOPK, PATTERN_TOPK_NAME, prompts_folder
from lens_cache.prompts import default_prompts_path

LENGTHS = (2048, 4096, 8192)


def long_text(model, n_tokens: int) -> str:
    """The longest run of whole words of our prompts (repeated) within `n_tokens` tokens as
    the model tokenizes it (BOS included): a word or two short of it at most."""
    # our own prompts, repeated (their topics change every paragraph), found as the export finds
    # them: the package's data, wherever it is installed
    with open(default_prompts_path(), encoding="utf-8") as f:
        words = " ".join(json.loads(line)["text"] for line in f if line.strip()).split()
    words = words * (n_tokens // len(words) + 1)
    lo, hi = 1, min(len(words), n_tokens)  # a word is at least one token
    while lo < hi:  # the most words that fit
        mid = (lo + hi + 1) // 2
        if len(model.tokenize(" ".join(words[:mid]))) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def child(spec: str, n_tokens: int, device: str, topk_keys: int, cap_mb: float) -> dict:
    import torch

    from lens_cache import export
    from lens_cache.capture import right_pad
    from lens_cache.models import load_model

    model = load_model(spec, device=device)
    text = long_text(model, n_tokens)
    ids = model.tokenize(text)
    start = time.perf_counter()
    model.run(right_pad(model, [ids]), [], last_layer=None)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    forward = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as save:
        start = time.perf_counter()
        (report,) = export(
            model, [text], save, hooks=[PATTERN_TOPK], topk_keys=topk_keys,
            max_batch_mb=cap_mb, index_html=False, quiet=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        (folder,) = prompts_folder(Path(save) / model.name).iterdir()
        compact = (folder / PATTERN_TOPK_NAME).stat().st_size
    dense = model.n_layers * model.n_heads * len(ids) ** 2 * 4
    return {
        "tokens": len(ids),
        "forward_s": forward,
        "export_s": seconds,
        "x_forward": seconds / forward,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "compact_mb": compact / 1e6,
        "dense_npz_mb": dense / 1e6,
        "dense_over_compact": dense / compact,
        "exported": report.exported,
    }


def rows(spec: str, lengths, device: str, cap_mb: float, topk_keys: int = DEFAULT_TOPK_KEYS):
    """One row per length, each measured in its own process."""
    out = []
    for n in lengths:
        command = [
            sys.executable, "-m", "lens_cache.bench_long", "--child", "--model", spec,
            "--tokens", str(n), "--device", device, "--max-batch-mb", str(cap_mb),
            "--topk-keys", str(topk_keys),
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            out.append({"tokens": n, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def table(measured: list[dict]) -> str:
    lines = [
        f"{'tokens':>7} {'forward s':>10} {'export s':>9} {'x fwd':>6} {'peak RSS MB':>12} "
        f"{'compact MB':>11} {'dense npz MB':>13} {'dense/compact':>14}"
    ]
    for r in measured:
        if "error" in r:
            lines.append(f"{r['tokens']:>7} failed: {r['error']}")
            continue
        lines.append(
            f"{r['tokens']:>7} {r['forward_s']:>10.1f} {r['export_s']:>9.1f} "
            f"{r['x_forward']:>6.1f} {r['peak_rss_mb']:>12.0f} {r['compact_mb']:>11.1f} "
            f"{r['dense_npz_mb']:>13.0f} {r['dense_over_compact']:>14.0f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_cache.bench_long", description=__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch-mb", type=float, default=1024)
    p.add_argument("--topk-keys", type=int, default=DEFAULT_TOPK_KEYS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        r = child(args.model, args.tokens[0], args.device, args.topk_keys, args.max_batch_mb)
        print(json.dumps(r))
        return 0
    print(table(rows(args.model, args.tokens, args.device, args.max_batch_mb, args.topk_keys)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
