"""Helpers the test modules share; fixtures live in conftest.py. Test modules import these as
`from tests.helpers import ...`, never from one another.

The readers here use numpy, safetensors and json directly, never lens_cache's own reader, so
what they return is an outside view of the files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The installed TransformerLens major, read without importing torch (child processes of the Hub
# tests import this module too).
TL_MAJOR = int(version("transformer_lens").split(".")[0])


# --- reading the store's files -----------------------------------------------------------------


def read_npz(path: Path) -> dict:
    """Every member of an npz, as numpy arrays."""
    import numpy as np

    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def npz_layer(save: Path, model: str, h: str, layer: int):
    """One layer's patterns `[n_heads, T, T]` of prompt `h`, from its npz."""
    path = Path(save) / model / "prompts" / h / "activations.npz"
    return read_npz(path)[f"blocks.{layer}.attn.hook_pattern"][0]


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file, as torch tensors in their stored dtype (bfloat16 too,
    which numpy lacks)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prompt_dir(save: Path, model: str, text: str) -> Path:
    """`<save>/<model>/prompts/<hash>` of a prompt's text."""
    from lens_cache.prompts import prompt_hash

    return Path(save) / model / "prompts" / prompt_hash(text)


def quiet(_msg: str) -> None:
    """A `log` that says nothing."""


# --- a store as pattern-lens 0.6 writes it, made by hand (test_pattern_lens.py: the real one) ---


def _causal_patterns(rng, heads: int, t: int):
    import numpy as np

    scores = np.tril(rng.random((1, heads, t, t), dtype=np.float32)) + 1e-3
    scores = np.tril(scores)
    return (scores / scores.sum(-1, keepdims=True)).astype(np.float32)


def write_pattern_lens_store(tmp_path: Path):
    """What pattern-lens 0.6 writes: model_cfg.json, prompt.json with top-level metadata and
    tokens without BOS (n_tokens = T - 1), np.savez_compressed patterns [1, H, T, T], and for
    `--stacked-heads` one [1, L, H, T, T] .npy; no residuals, no prompts.jsonl."""
    import numpy as np

    from lens_cache.prompts import prompt_hash

    rng = np.random.default_rng(0)
    model, n_layers, n_heads = "pl-model", 2, 3
    (tmp_path / model).mkdir()
    cfg = {"model_name": model, "n_layers": n_layers, "n_heads": n_heads, "d_model": 8}
    (tmp_path / model / "model_cfg.json").write_text(json.dumps(cfg))
    written = {}
    for i, text in enumerate(["hello there world", "a b c d e", "stacked one"]):
        tokens = text.split()  # tokenizer.tokenize(text): no BOS
        t = len(tokens) + 1  # the patterns include the BOS
        record = {"text": text, "source_fname": "data.jsonl", "hash": prompt_hash(text)}
        record.update(n_tokens=len(tokens), tokens=tokens)
        d = tmp_path / model / "prompts" / record["hash"]
        d.mkdir(parents=True)
        (d / "prompt.json").write_text(json.dumps(record))
        layers = [_causal_patterns(rng, n_heads, t) for _ in range(n_layers)]
        if i < 2:
            np.savez_compressed(
                d / "activations.npz",
                **{f"blocks.{j}.attn.hook_pattern": a for j, a in enumerate(layers)},
            )
        else:
            np.save(d / "activations-blocks.-.attn.hook_pattern.npy", np.stack(layers, axis=1))
        written[text] = (record, np.concatenate(layers))
    return tmp_path, model, written


# --- processes ---------------------------------------------------------------------------------


def run_cli(args: list[str], env: dict, module: str = "lens_cache.activations", **kw):
    """`python -m module ARGS` in a child process; its CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def brute_force_top(store, model: str, layer: int, head: int, by: str, k: int) -> list[tuple]:
    """A head's top examples from a scan of every cell of every stored prompt, ranked as
    documented (lens_cache.top_examples): the first `k` of (-value, hash, query, key)."""
    import numpy as np

    rows = []
    for record in store.prompts(model):
        h = record["hash"]
        a = store.patterns(model, h, layers=[layer])[0, head]
        if by == "dla":
            dla = store.head_dla(model, h, layers=[layer])[0, head]
            rows += [(-float(v), h, i, -1) for i, v in enumerate(dla) if not np.isnan(v)]
            continue
        norms = store.value_norms(model, h, layers=[layer])[0, head]
        for i in range(a.shape[0]):
            for j in range(i + 1):
                if by == "attention" and j == 0:
                    continue  # the first position is left out of the attention ranking
                v = a[i, j] if by == "attention" else np.float32(a[i, j] * norms[j])
                rows.append((-float(v), h, i, j))
    return sorted(rows)[:k]
