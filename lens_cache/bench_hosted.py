"""`python -m lens_cache.bench_hosted`: what the hosted viewer fetches from a Hub-compatible
server to open the home page, a prompt and a head, against the size of the dataset.

Exports the default model's patterns for prompts of about `--tokens` tokens until the float32
patterns reach `--size-mb`, pushes them with `hub push --space` to the test Hub server
(`tests/hubserver.py`, so this runs from a source checkout) and opens the Space in Chromium.
Each view's bytes and requests are the page's own counters; its time is from the navigation
(or the change of address) to the last response it waited for. The top-examples page is not
measured: the dataset holds patterns only. Prints one JSON object (and
writes it to `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO, SPACE = "alice/hosted-bench", "alice/hosted-bench-viewer"
# the page's own counters of what it fetched from the Hub
COUNTERS = (
    "() => ['bytes', 'requests'].map(k => +document.getElementById('hub-fetched').dataset[k] || 0)"
)
WORDS = (
    "the keeper of the lighthouse wrote each night in two logbooks about weather ships and "
    "the hours the lamp burned while storms crossed the island and the sea rose"
).split()


def prompts_for(size_mb: int, tokens: int, n_heads_total: int) -> list[dict]:
    """Enough prompts of about `tokens` tokens for `size_mb` of float32 patterns."""
    per_prompt = tokens * tokens * 4 * n_heads_total
    n = max(1, round(size_mb * 2**20 / per_prompt))
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * (i % 5 + 1)) % len(WORDS)] for k in range(tokens - 2)]
        out.append({"text": f"{i}: " + " ".join(words), "meta": {"i": i}})
    return out


def build_store(work: Path, size_mb: int, tokens: int) -> Path:
    from lens_cache import export
    from lens_cache.models import DEFAULT_MODEL, load_model

    model = load_model(DEFAULT_MODEL, device="cpu")
    heads = model.cfg.n_layers * model.cfg.n_heads
    save = work / "store"
    export(model, prompts=prompts_for(size_mb, tokens, heads), save_path=save, quiet=True)
    return save


def push(hub, save: Path, work: Path) -> float:
    from tests.hubserver import ALICE, client_env

    env = {**client_env(hub.url, work), "HF_TOKEN": ALICE}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    start = time.perf_counter()
    args = ["push", "--repo", REPO, "-s", str(save), "--space", SPACE, "-q"]
    subprocess.run(
        [sys.executable, "-m", "lens_cache.hub", *args], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def dataset_bytes(hub) -> int:
    repo = hub.repos[f"dataset:{REPO}"]
    return sum(f["size"] for f in repo["commits"][repo["branches"]["main"]]["files"].values())


def view(page, fragment: str, selector: str) -> dict:
    """Open `fragment` on the open page; what it fetched and how long until its data was in."""
    before = page.evaluate(COUNTERS)
    start = page.evaluate("performance.now()")
    page.evaluate(f"location.hash = {json.dumps(fragment)}")
    page.wait_for_selector(selector)
    page.wait_for_load_state("networkidle")
    last = page.evaluate(
        "s => Math.max(s, ...performance.getEntriesByType('resource')"
        ".filter(e => e.startTime >= s).map(e => e.responseEnd))",
        start,
    )
    after = page.evaluate(COUNTERS)
    return {
        "bytes": after[0] - before[0],
        "requests": after[1] - before[1],
        "ms": round(last - start, 1),
    }


def measure(hub, model: str, first_hash: str) -> dict:
    from playwright import sync_api

    from lens_cache.bench import CHROMIUM_FLAGS

    chromium = shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(hub.static_url(SPACE) + "#/")
        page.wait_for_selector(".vrow")
        page.wait_for_load_state("networkidle")
        counters = page.evaluate(COUNTERS)
        # from the navigation's start to the last response (the page's scripts and the index)
        last = page.evaluate(
            "Math.max(...performance.getEntriesByType('resource').map(e => e.responseEnd))"
        )
        home = {"bytes": counters[0], "requests": counters[1], "ms": round(last, 1)}
        prompt = view(page, f"#/prompt/{model}/{first_hash}", ".prompt-text")
        head = view(page, f"#/head/{model}/{first_hash}/5/3", ".pane[data-draw-ms]")
        browser.close()
    return {"home": home, "prompt": prompt, "head": head}


def run(size_mb: int, tokens: int, work: Path) -> dict:
    from lens_cache.reader import Store
    from tests.hubserver import HubServer

    save = build_store(work, size_mb, tokens)
    store = Store(save)
    (model,) = store.models()
    first = sorted(r["hash"] for r in store.prompts(model))[0]
    with HubServer(root=work / "hub").start() as hub:
        seconds = push(hub, save, work)
        size = dataset_bytes(hub)
        views = measure(hub, model, first)
    for v in views.values():
        v["share"] = v["bytes"] / size
    return {"dataset_bytes": size, "push_seconds": round(seconds, 1), "views": views}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_cache.bench_hosted", description=__doc__)
    p.add_argument("--size-mb", type=int, default=1024, help="float32 patterns to push")
    p.add_argument("--tokens", type=int, default=128, help="tokens per prompt, about")
    p.add_argument("--out", help="also write the result here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model loads from the local cache
    with tempfile.TemporaryDirectory(prefix="lens_cache-bench-hosted-") as tmp:
        result = run(args.size_mb, args.tokens, Path(tmp))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
