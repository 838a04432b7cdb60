"""`make bench`'s reference row really is pattern-lens 0.6.0: what that row wrote is read back
by pattern-lens's own loader and equals the live model's single-prompt patterns, and lens_cache's
rows are compared against it. pattern-lens imports only under TransformerLens 3.x, so this runs
in `make test-tl3` and skips under 4.x (as tests/test_pattern_lens.py does)."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from tests.helpers import REPO, TL_MAJOR, run_cli

pytestmark = pytest.mark.skipif(
    TL_MAJOR >= 4, reason="pattern-lens 0.6.0 imports only under TransformerLens 3.x"
)
TEXTS = ["The cat sat on the mat.", "def f(x): return x + 1", "A B C D A B C D A B"]


@pytest.fixture(scope="module")
def bench_run(gpt2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-pl")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out, keep = tmp / "results.json", tmp / "kept"
    keep.mkdir()
    args = ["--models", str(gpt2_dir), "--prompts", str(prompts), "-n", "3", "--batch-size", "2"]
    args += ["--device", "cpu", "--no-scaling", "--no-viewer", "--no-storage", "--out", str(out)]
    args += ["--corpus-prompts", "0"]
    args += ["--pattern-lens-python", sys.executable, "--keep", str(keep)]
    args += ["--variants", "pattern-lens", "default"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}  # this checkout's code
    result = run_cli(args, env, module="lens_cache.bench")
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), next(keep.iterdir())


def test_reference_row_is_pattern_lens_and_ours_match_it(bench_run):
    results, _ = bench_run
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {"pattern-lens", "default"}
    assert {r["reference"] for r in rows.values()} == {"pattern-lens"}
    assert rows["pattern-lens"]["prompts"] == rows["default"]["prompts"] == len(TEXTS)
    assert rows["default"]["max_diff"] < 1e-5  # lens_cache stored pattern-lens's patterns
    assert rows["pattern-lens"]["process_s"] > rows["pattern-lens"]["wall_s"] > 0
    processes = {r["what"]: r for r in results["processes"]}
    for what in ("pattern-lens", "lens_cache", "lens_cache+viewer", "launch to first batch"):
        assert processes[what]["seconds"] > 0, what
    for what in ("--help", "lens-cache --help", "pattern-lens --help"):
        assert processes[what]["seconds"] > 0, what
    lens = processes["lens_cache"]
    assert lens["vs_pattern_lens"] == pytest.approx(
        processes["pattern-lens"]["seconds"] / lens["seconds"]
    )


def test_pattern_lens_loader_reads_the_reference_rows_files(bench_run, gpt2_model):
    from pattern_lens.load_activations import load_activations

    _, kept = bench_run
    save = kept / "pattern-lens"
    model = gpt2_model.model
    for text in TEXTS:
        _, stored = load_activations(gpt2_model.name, {"text": text}, save, return_fmt="numpy")
        with torch.inference_mode():
            _, cache = model.run_with_cache(model.to_tokens(text))
        names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
        assert sorted(stored) == names
        for key, value in stored.items():
            np.testing.assert_allclose(value, cache[key].numpy(), atol=1e-5, rtol=0)
    for record in (save / gpt2_model.name / "prompts").glob("*/prompt.json"):
        record = json.loads(record.read_text())  # pattern-lens's loader marks its source file
        assert "source_fname" in record and "lens_cache" not in record
    assert (save / "models.jsonl").is_file()
