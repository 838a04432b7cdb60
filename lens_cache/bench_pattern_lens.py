"""`make bench`'s reference row: the real pattern-lens 0.6.0, run as its users run it; and the
rows of a newer pattern-lens built from its source tree (`make bench PATTERN_LENS_SRC=...`).

pattern-lens 0.6.0 imports only under TransformerLens 3.x, so this runs in the TransformerLens 3
venv that `make test-tl3` builds (`.venv-tl3`, which has pattern-lens and its imports), or in
the venv `make bench` builds for a source tree (TransformerLens 3 too):

    .venv-tl3/bin/python -m lens_cache.bench_pattern_lens --model SPEC --prompts P.jsonl --save S

`--batch-size default` runs pattern-lens at its own default (32 in 0.8.0), read from its
`activations_main` signature.

It calls pattern-lens's own `activations_main` (batched, length-sorted, `np.savez_compressed`,
its indexes), which loads models by official name only: the model is loaded here from the
same local weights `make bench` gives lens_cache (through `lens_cache.load_model`, the way the
TransformerLens 3 tests load them) and handed to it in place of
`HookedTransformer.from_pretrained` (0.6.0) or its own `load_model` (0.8.0, which would fetch a
model-name table from GitHub). Everything it writes is its own. The row names the version, the
batch size and the compression level it ran with. The last line on stdout is
one JSON row: `wall_s` is the in-process time of `activations_main` (model already loaded, as
for the other in-process rows); `import_s` and `load_s` are what came before it. The caller
times the whole process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import json
import re
import resource
import sys
import time
from pathlib import Path

VARIANT = "pattern-lens"


def run(model_spec: str, prompts: Path, save: Path, batch_size: int | None, device: str) -> dict:
    """Run pattern-lens's `activations_main` over every prompt of `prompts` (a jsonl of
    `{"text"}` lines, taken as written) and return the timings. `batch_size` None: pattern-lens's
    own default."""
    start = time.perf_counter()
    from pattern_lens import activations

    from lens_cache.models import load_model

    imported = time.perf_counter()
    lens_model = load_model(model_spec, device=device)
    loaded = time.perf_counter()
    texts = [json.loads(line)["text"] for line in prompts.read_text().splitlines() if line]
    defaults = _defaults(activations.activations_main)
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
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
        "version": _version(),
        "batch_size": batch_size,
        # 0.6.0 has no level: np.savez_compressed, zlib's default level 6
        "compress_level": defaults.get("compress_level", 6),
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


def _defaults(func) -> dict:
    """The default values of `func`'s parameters."""
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _version() -> str:
    """The imported pattern-lens's version: from its source tree's pyproject.toml when it runs
    from one (on PYTHONPATH, over an installed release), else from its installed metadata."""
    import pattern_lens

    pyproject = Path(pattern_lens.__file__).resolve().parents[1] / "pyproject.toml"
    try:  # a regex, not tomllib: this module still imports on Python 3.10
        found = re.search(r'^\s*version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
    except OSError:
        found = None
    if found:
        return found.group(1)
    try:
        return importlib.metadata.version("pattern_lens")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _official_name_gives(activations, model):
    """`HookedTransformer.from_pretrained(name)` inside pattern-lens returns `model`, and so
    does `load_model(name)`, through which 0.8.0 loads it."""
    patched = [(activations.HookedTransformer, "from_pretrained")]
    if hasattr(activations, "load_model"):
        patched.append((activations, "load_model"))
    originals = [getattr(owner, name) for owner, name in patched]
    for owner, name in patched:
        setattr(owner, name, lambda *a, **kw: model)
    try:
        yield
    finally:
        for (owner, name), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)


def batch_size_arg(value: str) -> int | None:
    """`--batch-size`: a count, or `default` for pattern-lens's own default."""
    return None if value == "default" else int(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_cache.bench_pattern_lens")
    p.add_argument("--model", required=True, help="a spec lens_cache.load_model takes")
    p.add_argument("--prompts", required=True, type=Path)
    p.add_argument("--save", required=True, type=Path)
    p.add_argument("--batch-size", type=batch_size_arg, default=8, help="a count, or 'default'")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    row = run(args.model, args.prompts, args.save, args.batch_size, args.device)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
