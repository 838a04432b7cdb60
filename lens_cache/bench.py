"""`make bench`: lens_cache's export against the reference algorithm and the forward-pass bound.

Variants, all on the same model, prompts and machine, in one run:
  pattern-lens  the real pattern-lens 0.6.0 (`activations_main`), run in the TransformerLens 3
             venv (`.venv-tl3`; see `lens_cache.bench_pattern_lens`): the reference, `vs ref`.
  pl-src-default, pl-src-ours  with `--pattern-lens-src-python` (`make bench
             PATTERN_LENS_SRC=<a pattern-lens source tree>` builds that venv): that pattern-lens
             (0.8.0 is not in the package registries) at its own default batch size and at ours.
  reimplemented  pattern-lens's batched algorithm re-implemented here (count-based batches of
             length-sorted prompts, `run_with_cache` with every hook cached, trim,
             `np.savez_compressed` per prompt in the loop, one thread): the reference only
             when pattern-lens cannot run; it is slower than the real thing.
  forward    our batches through the model caching the pattern hooks, nothing saved: the bound.
  forward_copy  the same plus the device-to-host copy of every cached pattern: the bound on a
             GPU (run by default only when the device is not the CPU, where it is `forward`).
  default    `lens_cache.export` with its defaults (deflate-1 npz, 2 writer threads), without
             the viewer (`index_html=False`).
  default+viewer  the same with the viewer built, as `make demo` does.
  no_fsync   `default+viewer` without flushing the files and folders it writes (`--no-fsync`):
             what durable writes cost.
  fastest    `lens_cache.export` storing float16 patterns (opt-in, lossy: error <= 2.4e-4).
  logits     `lens_cache.export --hooks logits`: per-token loss, entropy, top-k and rank read
             out of the model's own prediction; its `x bound` is its cost over the forward
             pass that skips the unembedding (target: 1.25x).
  logit_lens `--hooks logit_lens` on every layer: the same read out of each layer's resid_post.
  head_contributions  `--hooks pattern head_contributions`: the default export plus each head's
             value norms, direct logit attribution and top-example candidates; its `x bound` is
             its cost over the forward pass (target: 1.3x).
Each variant runs in a fresh subprocess so that its peak RSS is its own; the wall time excludes
imports and model loading (the same for all). Patterns only (`--hooks pattern`) but for the two
prediction variants, and the table's `max diff` column checks that each variant stored the
reference's patterns. Every
variant reads one prompts file written here (the selected prompts, taken as written).
Then the corpus row (`lens_cache.bench_corpus`: 10,000 synthetic prompts, the summary kinds, no
pattern stored). Then whole processes (`lens_cache.bench_process`): the command line against
pattern-lens's process, imports and model load included, and start-up (`--help`, launch to
first batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lens_cache.bench_corpus import corpus_timing, gpt2_bench_dir
from lens_cache.layout import (
    NO_FSYNC_ENV,
    NPZ_NAME,
    PATTERN,
    PROMPT_NAME,
    hook_name,
    parse_hook_name,
    prompt_folder,
)

PREDICTING = ("logits", "logit_lens")  # the variants that store predictions, not patterns
HEADS = "head_contributions"
NO_FSYNC = "no_fsync"
VARIANTS = (
    "pattern-lens",
    "reimplemented",
    "forward",
    "forward_copy",
    "default",
    "default+viewer",
    NO_FSYNC,
    "fastest",
    *PREDICTING,
    HEADS,
)
CPU_VARIANTS = tuple(v for v in VARIANTS if v != "forward_copy")
# the pattern-lens of --pattern-lens-src-python: at its default batch size, and at ours
PEERS = ("pl-src-default", "pl-src-ours")
MODELS = ("gpt2-small-shape", "smollm2-135m")
SHARED_PROMPTS = Path("shared") / "prompts" / "pile_100.jsonl"
# Headless Chromium on a machine with no network: without the background-networking flags it
# keeps trying to reach Google's hosts. Used here and by the browser tests.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def default_prompts() -> str:
    """Real text from `../shared/prompts/` beside the project when present, else our own set."""
    for root in (Path.cwd().parent, Path(__file__).resolve().parents[2]):
        if (root / SHARED_PROMPTS).is_file():
            return str(root / SHARED_PROMPTS)
    return "default"


# --- the child: one variant --------------------------------------------------------------------


def bench_model(name: str, device: str):
    """The model to time: the default SmolLM2, or GPT-2-small-shaped random weights (12 layers,
    12 heads, d_model 768) with SmolLM2's tokenizer, built once in the cache; or any model
    spec `load_model` takes."""
    from lens_cache.models import load_model

    if name != "gpt2-small-shape":
        return load_model(name, device=device)
    return load_model(str(bench_model_dir(name)), device=device)


def bench_model_dir(name: str) -> Path:
    return gpt2_bench_dir(name, n_embd=768, n_layer=12, n_head=12, n_positions=1024)


def run_variant(variant: str, model, prompts: list[dict], save: Path, batch_size: int) -> None:
    from lens_cache import export

    common = dict(
        save_path=save,
        hooks=["pattern"],
        batch_size=batch_size,
        index_html=False,
        quiet=True,
        raw=True,
    )
    if variant == "reimplemented":
        reference_export(model, prompts, save, batch_size)
    elif variant in ("forward", "forward_copy"):
        forward_only(model, prompts, batch_size, copy=variant == "forward_copy")
    elif variant == "default":
        export(model, prompts, **common)
    elif variant in ("default+viewer", NO_FSYNC):
        if variant == NO_FSYNC:  # a child process of its own: the variable ends with it
            os.environ[NO_FSYNC_ENV] = "1"
        export(model, prompts, **{**common, "index_html": True})
    elif variant == "fastest":
        export(model, prompts, pattern_dtype="float16", **common)
    elif variant in PREDICTING:
        export(model, prompts, **{**common, "hooks": [variant]})
    elif variant == HEADS:
        export(model, prompts, **{**common, "hooks": ["pattern", HEADS]})
    else:
        raise ValueError(f"unknown variant {variant}")


def reference_export(model, prompts: list[dict], save: Path, batch_size: int) -> None:
    """pattern-lens 0.6's `compute_activations_batched` re-implemented, on either
    TransformerLens major."""
    import numpy as np
    import torch

    tl = model.model
    lengths = [tl.to_tokens(p["text"]).shape[1] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        batch = [prompts[i] for i in order[start : start + batch_size]]
        for p in batch:
            d = prompt_folder(save, model.name, p["hash"])
            d.mkdir(parents=True, exist_ok=True)
            tokens = tl.tokenizer.tokenize(p["text"])
            (d / PROMPT_NAME).write_text(
                json.dumps({**p, "n_tokens": len(tokens), "tokens": tokens})
            )
        with torch.no_grad():
            _, cache = tl.run_with_cache([p["text"] for p in batch], padding_side="right")
        for row, p in enumerate(batch):
            n = lengths[order[start + row]]
            arrays = {
                k: v[row : row + 1, :, :n, :n].cpu().numpy()
                for k, v in cache.items()
                if parse_hook_name(k) and parse_hook_name(k)[0] == PATTERN
            }
            np.savez_compressed(prompt_folder(save, model.name, p["hash"]) / NPZ_NAME, **arrays)


def forward_only(model, prompts: list[dict], batch_size: int, copy: bool) -> None:
    """The same batches lens_cache runs, caching the pattern hooks, saving nothing; with
    `copy`, also the device-to-host copy lens_cache makes of them."""
    from lens_cache.batcher import plan_batches
    from lens_cache.capture import right_pad, to_host

    ids = [model.tokenize(p["text"]) for p in prompts]
    names = [hook_name(PATTERN, i) for i in range(model.n_layers)]
    for batch in plan_batches([len(x) for x in ids], batch_size=batch_size):
        cache = model.run(right_pad(model, [ids[i] for i in batch]), names, model.n_layers - 1)
        if copy:
            to_host(cache)
    _wait_for_device(model.device)


def _wait_for_device(device) -> None:
    """CUDA runs kernels asynchronously: stop the clock only when they are done."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def child(args) -> None:
    from lens_cache.prompts import read_prompts, select_prompts

    model = bench_model(args.model, args.device)
    prompts = select_prompts(read_prompts(args.prompts), raw=True)  # as `write_prompts` chose
    n_tokens = sum(len(model.tokenize(p["text"])) for p in prompts)
    save = Path(args.save)
    start = time.perf_counter()
    run_variant(args.child, model, prompts, save, args.batch_size)
    wall = time.perf_counter() - start
    written = sum(
        f.stat().st_size for ext in ("npz", "safetensors") for f in save.rglob(f"*.{ext}")
    )
    print(
        json.dumps(
            {
                "variant": args.child,
                "model": args.model,
                "device": str(model.device),
                "wall_s": wall,
                "prompts": len(prompts),
                "tokens": n_tokens,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "bytes_per_prompt": written / len(prompts) if args.child != "forward" else 0,
            }
        )
    )


# --- the parent: run every variant, print one table ----------------------------------------------


def run_all(args) -> tuple[list[dict], list[dict], list[dict]]:
    """The variants' rows, the whole-process rows, and the storage choices measured on the
    first model's patterns."""
    from lens_cache.bench_process import process_rows

    rows, processes, storage = [], [], []
    for model in args.models:
        tmp = tempfile.mkdtemp(prefix="lens-bench-", dir=args.keep)
        prompts = write_prompts(args, Path(tmp) / "prompts.jsonl")
        saves = {variant: Path(tmp) / variant for variant in run_variants(args)}
        for variant, save in saves.items():
            print(f"... {model} / {variant}", file=sys.stderr, flush=True)
            rows.append(run_child(args, model, variant, save, prompts))
        ours = rows[-len(saves) :]
        reference = next((v for v in REFERENCES if v in saves), None)
        for row in ours:
            if reference and row["variant"] in STORING:
                row["max_diff"] = max_diff(saves[reference], saves[row["variant"]])
        if args.storage and "default" in saves and not storage:
            print(f"... {model} / storage choices", file=sys.stderr, flush=True)
            storage.extend(storage_choices(saves["default"], Path(tmp) / "formats", model))
        if args.processes:
            print(f"... {model} / whole processes", file=sys.stderr, flush=True)
            pl = next((r for r in ours if r["variant"] == "pattern-lens"), None)
            peers = [r for r in ours if r["variant"] in PEERS]
            processes.extend(process_rows(args, model, model_spec(model), prompts, pl, peers))
        if not args.keep:
            shutil.rmtree(tmp)
    return add_ratios(rows), processes, storage


REFERENCES = ("pattern-lens", "reimplemented")  # the first that ran is `vs ref`'s reference
STORING = (
    "pattern-lens",
    "reimplemented",
    "default",
    "default+viewer",
    NO_FSYNC,
    "fastest",
    HEADS,
    *PEERS,
)


def run_variants(args) -> list[str]:
    """The chosen variants, and the source tree's pattern-lens rows when it is given."""
    return [*args.variants, *(PEERS if args.pattern_lens_src_python else ())]


def model_spec(model: str) -> str:
    """What `load_model` (and so the command line) takes for a bench model name."""
    return str(bench_model_dir(model)) if model == "gpt2-small-shape" else model


def write_prompts(args, path: Path) -> Path:
    """The prompts every variant runs, selected once (split at `--max-chars`, the first `-n`)
    and written as `{"text"}` lines that each variant takes as written."""
    from lens_cache.prompts import read_prompts, select_prompts

    prompts = select_prompts(read_prompts(args.prompts), max_chars=args.max_chars, n_samples=args.n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": p["text"]}) + "\n" for p in prompts))
    return path


def child_command(args, model: str, variant: str, save: Path, prompts: Path) -> list[str]:
    """The command line of one variant's process."""
    if variant == "pattern-lens" or variant in PEERS:
        python = (
            args.pattern_lens_python if variant == "pattern-lens" else args.pattern_lens_src_python
        )
        cmd = [python, "-m", "lens_cache.bench_pattern_lens"]
        cmd += ["--model", model_spec(model), "--save", str(save)]
    else:
        cmd = [sys.executable, "-m", "lens_cache.bench", "--child", variant, "--model", model]
        cmd += ["--save", str(save)]
    batch = "default" if variant == "pl-src-default" else str(args.batch_size)
    cmd += ["--prompts", str(prompts), "--batch-size", batch]
    return [*cmd, "--device", args.device]


def run_child(args, model: str, variant: str, save: Path, prompts: Path) -> dict:
    """One variant in a fresh process; its row, with `process_s`, the whole process's time."""
    cmd = child_command(args, model, variant, save, prompts)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench variant {variant} on {model} failed")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {**row, "variant": variant, "model": model, "process_s": time.perf_counter() - start}


def max_diff(reference: Path, other: Path) -> float:
    """The largest |difference| between the patterns two variants stored, over every prompt;
    fails when they did not store the same prompts, hooks and shapes."""
    import numpy as np

    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob(NPZ_NAME))

    if files(reference) != files(other) or not files(reference):
        raise SystemExit(f"bench: {other.name} did not store the prompts the reference did")
    worst = 0.0
    for relative in files(reference):
        with np.load(reference / relative) as a, np.load(other / relative) as b:
            if sorted(a.files) != sorted(b.files):
                raise SystemExit(f"bench: {other.name} stored other hooks than the reference")
            for key in a.files:
                x, y = a[key].astype(np.float32), b[key].astype(np.float32)
                if x.shape != y.shape:
                    raise SystemExit(f"bench: {other.name} {relative} {key}: shape {y.shape}")
                worst = max(worst, float(np.abs(x - y).max()))
    return worst


def storage_choices(save: Path, scratch: Path, model: str) -> list[dict]:
    """Write the patterns the default variant stored in each candidate format, on one thread
    (the time a writer thread spends per prompt), and report seconds and bytes. The formats
    are the exporter's options and the compact layouts they were chosen over."""
    import numpy as np

    from lens_cache.store import write_npz

    stored = []
    for path in sorted(save.rglob(NPZ_NAME)):
        with np.load(path) as npz:
            stored.append({k: npz[k] for k in npz.files})
    raw = sum(a.nbytes for arrays in stored for a in arrays.values())

    def lower_triangle(arrays: dict, dtype) -> dict:
        """A causal pattern's row t has t + 1 values that can be non-zero: keep only those."""
        packed = {}
        for name, a in arrays.items():
            rows, cols = np.tril_indices(a.shape[-1])
            packed[name] = a[0][:, rows, cols].astype(dtype)
        return packed

    def as_f16(arrays: dict) -> dict:
        return {k: v.astype(np.float16) for k, v in arrays.items()}

    formats = {
        "npz deflate-1 (default)": lambda a, p: write_npz(p, a, level=1),
        "npz stored (--compress-level 0)": lambda a, p: write_npz(p, a, level=0),
        "npz float16 (--pattern-dtype)": lambda a, p: write_npz(p, as_f16(a), level=1),
        "npz zlib-6 (np.savez_compressed)": lambda a, p: np.savez_compressed(p, **a),
        "lower triangle, deflate-1": lambda a, p: write_npz(p, lower_triangle(a, np.float32)),
        "lower triangle f16, deflate-1": lambda a, p: write_npz(p, lower_triangle(a, np.float16)),
    }
    rows = []
    for label, write in formats.items():
        folder = scratch / str(len(rows))
        folder.mkdir(parents=True)
        start = time.perf_counter()
        for i, arrays in enumerate(stored):
            write(arrays, folder / f"{i}.npz")
        seconds = time.perf_counter() - start
        written = sum(f.stat().st_size for f in folder.iterdir())
        rows.append(
            {
                "model": model,
                "format": label,
                "seconds": seconds,
                "raw_mb_per_s": raw / 2**20 / seconds,
                "bytes_vs_raw": written / raw,
            }
        )
    return rows


def storage_table(rows: list[dict]) -> str:
    head = f"{'storage (one writer thread)':<34}{'s':>7}{'raw MB/s':>10}{'size/raw':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['format']:<34}{r['seconds']:>7.1f}{r['raw_mb_per_s']:>10.0f}"
            f"{r['bytes_vs_raw']:>10.3f}"
        )
    return "\n".join(lines)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Ratios to the reference and to the bound: forward plus copy where it ran (on a GPU),
    else forward alone."""
    by = {(r["model"], r["variant"]): r for r in rows}
    for r in rows:
        ref = next((by[r["model"], v] for v in REFERENCES if (r["model"], v) in by), None)
        r["reference"] = ref["variant"] if ref else None
        bound = by.get((r["model"], "forward_copy")) or by.get((r["model"], "forward"))
        r["speedup_vs_reference"] = ref["wall_s"] / r["wall_s"] if ref else None
        r["x_bound"] = r["wall_s"] / bound["wall_s"] if bound else None
        r["bound"] = bound["variant"] if bound else None
        r["rss_vs_reference"] = r["peak_rss_mb"] / ref["peak_rss_mb"] if ref else None
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<18}{'variant':<15}{'wall s':>8}{'prompts/s':>10}{'tokens/s':>9}"
        f"{'RSS MB':>8}{'MB/prompt':>10}{'vs ref':>8}{'x bound':>8}{'RSS/ref':>8}{'max diff':>10}"
    )
    lines = [head, "-" * len(head)]

    def cell(value, width: int, spec: str) -> str:
        return (format(value, spec) if value is not None else "-").rjust(width)

    for r in rows:
        lines.append(
            f"{Path(r['model']).name:<18}{r['variant']:<15}{r['wall_s']:>8.1f}"
            f"{r['prompts'] / r['wall_s']:>10.2f}{r['tokens'] / r['wall_s']:>9.0f}"
            f"{r['peak_rss_mb']:>8.0f}{r['bytes_per_prompt'] / 2**20:>10.2f}"
            f"{cell(r['speedup_vs_reference'], 7, '.2f')}x{cell(r['x_bound'], 7, '.2f')}x"
            f"{cell(r['rss_vs_reference'], 8, '.2f')}{cell(r.get('max_diff'), 10, '.1e')}"
        )
    bound = {r["bound"] for r in rows if r["bound"]}
    lines.append(f"x bound: wall time over {' / '.join(sorted(bound)) or 'forward'}'s")
    refs = {r["reference"] for r in rows if r["reference"]}
    lines.append(f"vs ref, RSS/ref: against {' / '.join(sorted(refs)) or '-'}")
    lines.extend(pattern_lens_settings(rows))
    lines.append("wall s: in-process (model loaded); whole processes below")
    return "\n".join(lines)


def pattern_lens_settings(rows: list[dict]) -> list[str]:
    """What each pattern-lens row ran: its version, batch size and zlib level."""
    seen = {}
    for r in rows:
        if "version" in r:
            seen[r["variant"]] = (
                f"{r['variant']}: pattern-lens {r['version']}, batch {r['batch_size']}, "
                f"zlib level {r['compress_level']}"
            )
    return list(seen.values())


def scaling(args, model: str) -> list[dict]:
    """1 process against 2 under torchrun (gloo, one thread each), end to end on the CLI, so
    both pay imports and model loading; the same prompts as the table above."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="lens-scale-") as tmp:
        path = write_prompts(args, Path(tmp) / "prompts.jsonl")
        n_prompts = len(path.read_text().splitlines())
        base = ["-m", model_spec(model), "-p", str(path), "--hooks", "pattern", "-q", "-r"]
        base += ["--no-index-html", "--device", "cpu"]  # the CPU figure: one GPU, one rank
        runs = {
            "1 process": [sys.executable, "-m", "lens_cache.activations"],
            "2 processes": [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                "--master_addr=127.0.0.1",
                "--master_port=29533",
                "-m",
                "lens_cache.activations",
            ],
        }
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
        for label, cmd in runs.items():
            run_env = {**env, "OMP_NUM_THREADS": "1"} if label != "1 process" else env
            start = time.perf_counter()
            subprocess.run(
                cmd + base + ["-s", str(Path(tmp) / label.replace(" ", "-"))],
                env=run_env,
                check=True,
                capture_output=True,
            )
            rows.append(
                {
                    "model": model,
                    "variant": label,
                    "wall_s": time.perf_counter() - start,
                    "prompts": n_prompts,
                }
            )
    rows[1]["speedup"] = rows[0]["wall_s"] / rows[1]["wall_s"]
    return rows


def viewer_timing(n_prompts: int = 10_000, long_head: bool = True) -> dict:
    """Build the viewer of a synthetic store (10,000 prompts x 30 layers x 9 heads, written by
    lens_cache.synthetic), rebuild it with nothing changed (which reads the viewer's manifest),
    and time, in Chromium when it is installed, the page's first paint, its home table and
    one head of that store drawn; with `long_head`, also a head of a 1,024-token prompt."""
    from lens_cache.synthetic import BENCH_MODEL, write_store
    from lens_cache.viewer import write_viewer

    with tempfile.TemporaryDirectory(prefix="lens-viewer-") as tmp:
        start = time.perf_counter()
        info = write_store(
            tmp,
            models=[BENCH_MODEL],
            n_prompts=n_prompts,
            special=False,
            compress=False,
            dtype="float16",  # half the bytes to write and to read back; the same viewer work
            workers=os.cpu_count() or 1,
        )
        store_s = time.perf_counter() - start
        first = write_viewer(tmp, log=lambda _: None)
        again = write_viewer(tmp, log=lambda _: None)
        result = {
            "prompts": n_prompts,
            "store_write_s": store_s,
            "build_s": first["seconds"],
            "rebuild_unchanged_s": again["seconds"],
            "viewer_mb": first["viewer_bytes"] / 2**20,
            "npz_mb": first["npz_bytes"] / 2**20,
        }
        result.update(page_timing(Path(tmp) / "index.html"))
        some_prompt = next(iter(info["hashes"].values()))
        head = f"#/head/{BENCH_MODEL.name}/{some_prompt}/12/4"
        result.update(page_timing(Path(tmp) / "index.html", head, label="head"))
    if long_head:
        result.update(head_timing())
    return result


def head_timing(n_tokens: int = 1024) -> dict:
    """Open one head of a synthetic 1,024-token prompt (30 x 9 heads) and read how long the
    page took to decode and draw it (its `data-draw-ms`), and the whole navigation."""
    from lens_cache.synthetic import BENCH_MODEL, write_store
    from lens_cache.viewer import write_viewer

    with tempfile.TemporaryDirectory(prefix="lens-head-") as tmp:
        lengths = (n_tokens, n_tokens + 1)
        info = write_store(tmp, models=[BENCH_MODEL], n_prompts=1, special=False, lengths=lengths)
        write_viewer(tmp, log=lambda _: None)
        fragment = f"#/head/{BENCH_MODEL.name}/{next(iter(info['hashes'].values()))}/12/4"
        return page_timing(Path(tmp) / "index.html", fragment)


def page_timing(index: Path, fragment: str = "", label: str = "head_1024") -> dict:

    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        return {}
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(index.as_uri() + fragment)
        if fragment:
            pane = page.wait_for_selector(".pane[data-draw-ms]")
            result = {
                f"{label}_draw_ms": float(pane.get_attribute("data-draw-ms")),
                f"{label}_navigation_ms": (time.perf_counter() - start) * 1000,
            }
        else:
            page.wait_for_selector("#app > :not(#boot-note)")
            result = {
                "home_ready_ms": (time.perf_counter() - start) * 1000,
                "first_paint_ms": page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
                ),
            }
        browser.close()
    return result


def pattern_lens_runs(args) -> bool:
    """Whether `--pattern-lens-python` imports pattern-lens; says why not on stderr."""
    check = [args.pattern_lens_python, "-c", "import pattern_lens.activations"]
    try:
        ok = subprocess.run(check, capture_output=True, check=False).returncode == 0
    except OSError:
        ok = False
    if not ok:
        print(
            f"bench: no pattern-lens 0.6.0 in {args.pattern_lens_python} (`make test-tl3` "
            "builds .venv-tl3 with it); the re-implementation is the reference",
            file=sys.stderr,
        )
    return ok


def hosted_row(size_mb: int) -> dict:
    """`lens_cache.bench_hosted` in a child (it starts the test Hub server and Chromium)."""
    cmd = [sys.executable, "-m", "lens_cache.bench_hosted", "--size-mb", str(size_mb)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(proc.stdout[proc.stdout.index("{") :])
    for name, v in row["views"].items():
        print(
            f"hosted, {row['dataset_bytes'] / 1e9:.2f} GB dataset, {name}: {v['bytes']:,} B "
            f"({100 * v['share']:.3f}%), {v['requests']} requests, {v['ms']:.0f} ms"
        )
    return row


def machine(device: str) -> str:
    where = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if device.startswith("cuda"):
        import torch

        where += f", {torch.cuda.get_device_name(torch.device(device))}"
    return where


def _long_prompts(args) -> list[dict]:
    """The long-prompt rows (`lens_cache.bench_long`); on the CPU only the shortest by
    default: 8,192 tokens there re-runs the forward once per layer, hours on 2 cores."""
    from lens_cache import bench_long

    lengths = args.long_prompts
    if lengths is None:
        lengths = bench_long.LENGTHS if args.device != "cpu" else bench_long.LENGTHS[:1]
    measured = bench_long.rows("smollm2-135m", lengths, args.device, 1024)
    if measured:
        print("long prompts, --hooks pattern_topk:\n" + bench_long.table(measured))
    return measured


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lens_cache.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="default: all, less forward_copy on the CPU (where it equals forward)",
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--prompts", default=default_prompts())
    p.add_argument("-n", type=int, default=40, help="prompts per run")
    p.add_argument("--max-chars", type=int, default=1200, help="split longer prompts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument(
        "--no-scaling",
        dest="scaling",
        action="store_false",
        help="skip 1 vs 2 processes under torchrun",
    )
    p.add_argument(
        "--no-viewer",
        dest="viewer",
        action="store_false",
        help="skip timing the viewer on a synthetic store",
    )
    p.add_argument(
        "--viewer-prompts", type=int, default=10_000, help="prompts of the synthetic store"
    )
    p.add_argument(
        "--corpus-prompts",
        type=int,
        default=10_000,
        help="synthetic prompts of the corpus row (lens_cache.bench_corpus); 0 skips it",
    )
    p.add_argument(
        "--no-storage",
        dest="storage",
        action="store_false",
        help="skip timing the storage formats on the first model's patterns",
    )
    p.add_argument(
        "--no-processes",
        dest="processes",
        action="store_false",
        help="skip the whole-process and start-up rows",
    )
    p.add_argument(
        "--pattern-lens-python",
        default=str(Path(__file__).resolve().parents[1] / ".venv-tl3" / "bin" / "python"),
        help="a Python with pattern-lens 0.6.0 and TransformerLens 3 (default: .venv-tl3's)",
    )
    p.add_argument(
        "--pattern-lens-src-python",
        help="a Python with another pattern-lens (make bench PATTERN_LENS_SRC=... builds one "
        "from a source tree): adds its rows at its default batch size and at ours",
    )
    p.add_argument(
        "--long-prompts",
        type=int,
        nargs="*",
        help="token counts of the long-prompt rows (SmolLM2, --hooks pattern_topk; see "
        "lens_cache.bench_long); default 2048 4096 8192 on a GPU, 2048 on the CPU",
    )
    p.add_argument(
        "--hosted-mb",
        type=int,
        default=1024,
        help="the hosted viewer's row: a dataset of this many MB pushed to the test Hub "
        "server, and what opening home, a prompt and a head fetch (0: skip)",
    )
    p.add_argument("--keep", help="keep every variant's store in a folder under this one")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        child(args)
        return 0
    if args.variants is None:
        args.variants = list(CPU_VARIANTS if args.device == "cpu" else VARIANTS)
    args.variants = [v for v in args.variants if v != "pattern-lens" or pattern_lens_runs(args)]
    rows, processes, storage = run_all(args)
    print(
        f"machine: {machine(args.device)}, device {args.device}; prompts: {args.prompts} "
        f"(n={args.n}, max {args.max_chars} chars)"
    )
    print(table(rows))
    if processes:
        from lens_cache.bench_process import process_table

        print(process_table(processes))
    if storage:
        print(storage_table(storage))
    scale = scaling(args, args.models[0]) if args.scaling else []
    for r in scale:
        extra = f"  ({r['speedup']:.2f}x)" if "speedup" in r else ""
        name = Path(r["model"]).name
        print(f"{name:<18}{r['variant']:<13}{r['wall_s']:>8.1f} s end to end{extra}")
    viewer = viewer_timing(args.viewer_prompts) if args.viewer else {}
    if viewer:
        shown = [f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in viewer.items()]
        print("viewer, synthetic store: " + ", ".join(shown))
    long_rows = _long_prompts(args)
    corpus = corpus_timing(args.corpus_prompts) if args.corpus_prompts else {}
    if corpus:
        print("corpus, summary kinds: " + ", ".join(f"{k} {v:.4g}" for k, v in corpus.items()))
    hosted = hosted_row(args.hosted_mb) if args.hosted_mb else {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(args.device), "device": args.device, "rows": rows}
    results.update(processes=processes, scaling=scale, storage=storage)
    results["viewer"] = viewer
    results["long_prompts"] = long_rows
    results["corpus"] = corpus
    results["hosted"] = hosted
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
