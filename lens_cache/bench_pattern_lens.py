"""`make bench`'s reference row: the real pattern-lens 0.6.0, run as its users run it.

pattern-lens 0.6.0 imports only under TransformerLens 3.x, so this runs in the TransformerLens 3
venv that `make test-tl3` builds (`.venv-tl3`, which has pattern-lens and its imports):

    .venv-tl3/bin/python -m lens_cache.bench_pattern_lens --model SPEC --prompts P.jsonl --save S

It calls pattern-lens's own `activations_main` (batched, length-sorted, `np.savez_compressed`,
its indexes), which loads models by official name only: the model is loaded here from the
same local weights `make bench` gives lens_cache (through `lens_cache.load_model`, the way the
TransformerLens 3 tests load them) and handed to it in place of
`HookedTransformer.from_pretrained`. Everything it writes is its own. The last line on stdout is
one JSON row: `wall_s` is the in-process time of `activations_main` (model already loaded, as
for the other in-process rows); `import_s` and `load_s` are what came before it. The caller
times the whole process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

VARIANT = "pattern-lens"


def run(model_spec: str, prompts: Path, save: Path, batch_size: int, device: str) -> dict:
    """Run pattern-lens's `activations_main` over every prompt of `prompts` (a jsonl of
    `{"text"}` lines, taken as written) and return the timings."""
    start = time.perf_counter()
    from pattern_lens import activations

    from lens_cache.models import load_model

    imported = time.perf_counter()
    lens_model = load_model(model_spec, device=device)
    loaded = time.perf_counter()
    texts = [json.loads(line)["text"] for line in prompts.read_text().splitlines() if line]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_official_name_gives(activations, lens_model.model))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # stdout: our row only
        activations.activations_main(
            lens_model.name, save, str(prompts), raw_prompts=True, min_chars=0,
            max_chars=max(map(len, texts)), force=True, n_samples=len(texts),
            no_index_html=True, device=device, batch_size=batch_size,
        )  # fmt: skip
    done = time.perf_counter()
    return {
        "variant": VARIANT,
        "model": model_spec,
        "device": str(lens_model.device),
        "wall_s": done - loaded,
        "import_s": imported - start,
        "load_s": loaded - imported,
        "prompts": len(texts),
        "tokens": sum(len(lens_model.tokenize(t)) for t in texts),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes_per_prompt": sum(f.stat().st_size for f in save.rglob("*.npz")) / len(texts),
    }


@contextlib.contextmanager
def _official_name_gives(activations, model):
    """`HookedTransformer.from_pretrained(name)` inside pattern-lens returns `model`."""
    original = activations.HookedTransformer.from_pretrained
    activations.HookedTransformer.from_pretrained = lambda *a, **kw: model
    try:
        yield
    finally:
        activations.HookedTransformer.from_pretrained = original


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_cache.bench_pattern_lens")
    p.add_argument("--model", required=True, help="a spec lens_cache.load_model takes")
    p.add_argument("--prompts", required=True, type=Path)
    p.add_argument("--save", required=True, type=Path)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    row = run(args.model, args.prompts, args.save, args.batch_size, args.device)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
