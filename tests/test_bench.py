"""`make bench` itself: every variant runs on a tiny model, and the check that the variants
stored the same patterns catches a difference."""

import json

import numpy as np
import pytest

from lens_cache.bench import VARIANTS, max_diff, reference_export
from tests.helpers import run_cli

TEXTS = [
    "The cat sat on the mat.",
    "def f(x): return x + 1",
    "One, two, three, four, five.",
    "A B C D A B C D A B",
    "Paris is the capital of France.",
]


# pattern-lens itself runs only under TransformerLens 3: tests/test_bench_pattern_lens.py
OURS = [v for v in VARIANTS if v != "pattern-lens"]


def test_every_variant_runs_and_stores_the_reference_patterns(gpt2_dir, tmp_path, cli_env):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "results.json"
    args = ["--models", str(gpt2_dir), "--prompts", str(prompts), "-n", "4", "--batch-size", "2"]
    args += ["--device", "cpu", "--no-scaling", "--no-viewer", "--no-processes"]
    args += ["--corpus-prompts", "0", "--hosted-mb", "0"]
    args += ["--out", str(out), "--variants"]
    result = run_cli([*args, *OURS], cli_env, module="lens_cache.bench")
    assert result.returncode == 0, result.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(OURS)
    assert {r["prompts"] for r in rows.values()} == {4}
    assert {r["reference"] for r in rows.values()} == {"reimplemented"}
    # the same float32 patterns, batched the same, with or without the flushes
    for variant in ("default", "default+viewer", "no_fsync"):
        assert rows[variant]["max_diff"] < 1e-5
    assert rows["head_contributions"]["max_diff"] < 1e-5  # and with the contributions beside
    heads, default = rows["head_contributions"], rows["default"]
    assert heads["bytes_per_prompt"] > default["bytes_per_prompt"]
    assert 0 < rows["fastest"]["max_diff"] < 1e-3  # float16 rounding, and no more
    assert rows["fastest"]["bytes_per_prompt"] < rows["default"]["bytes_per_prompt"]
    assert 0 < rows["logits"]["bytes_per_prompt"] < rows["logit_lens"]["bytes_per_prompt"]
    bound, ref = rows["forward_copy"], rows["reimplemented"]
    for r in rows.values():  # the ratio columns are the ratios of the measured columns
        assert r["bound"] == "forward_copy"
        assert r["x_bound"] == pytest.approx(r["wall_s"] / bound["wall_s"])
        assert r["speedup_vs_reference"] == pytest.approx(ref["wall_s"] / r["wall_s"])
        assert r["rss_vs_reference"] == pytest.approx(r["peak_rss_mb"] / ref["peak_rss_mb"])
    assert "max diff" in result.stdout and "x bound: wall time over forward_copy's" in result.stdout
    storage = {r["format"]: r for r in json.loads(out.read_text())["storage"]}
    assert len(storage) == 6
    size = {name: r["bytes_vs_raw"] for name, r in storage.items()}
    assert size["npz stored (--compress-level 0)"] >= 1  # headers, no deflate
    assert size["npz float16 (--pattern-dtype)"] < size["npz deflate-1 (default)"] < 1
    assert size["lower triangle f16, deflate-1"] < size["lower triangle, deflate-1"] < 1


def test_reference_variant_stores_single_prompt_patterns(gpt2_model, tmp_path):
    """The variant every other one is compared with stores what TransformerLens computes for
    each prompt alone (so the `max diff` column measures against the truth)."""
    import torch

    from lens_cache.prompts import prompt_hash

    prompts = [{"text": t, "hash": prompt_hash(t), "meta": {}} for t in TEXTS]
    reference_export(gpt2_model, prompts, tmp_path, batch_size=2)
    for text in TEXTS:
        with torch.inference_mode():
            _, cache = gpt2_model.model.run_with_cache(gpt2_model.model.to_tokens(text))
        path = tmp_path / gpt2_model.name / "prompts" / prompt_hash(text) / "activations.npz"
        with np.load(path) as stored:
            assert sorted(stored.files) == [f"blocks.{i}.attn.hook_pattern" for i in range(2)]
            for key in stored.files:
                np.testing.assert_allclose(stored[key], cache[key].numpy(), atol=1e-5, rtol=0)


def _store(root, value: float, hashes=("a", "b")):
    for h in hashes:
        d = root / "m" / "prompts" / h
        d.mkdir(parents=True)
        np.savez(
            d / "activations.npz", **{"blocks.0.attn.hook_pattern": np.full((1, 2, 3, 3), value)}
        )
    return root


def test_max_diff_sees_a_difference_and_a_missing_prompt(tmp_path):
    reference = _store(tmp_path / "ref", 0.5)
    assert max_diff(reference, _store(tmp_path / "same", 0.5)) == 0
    assert max_diff(reference, _store(tmp_path / "off", 0.25)) == pytest.approx(0.25)
    with pytest.raises(SystemExit, match="did not store the prompts the reference did"):
        max_diff(reference, _store(tmp_path / "fewer", 0.5, hashes=("a",)))


def test_viewer_row_builds_rebuilds_and_draws_a_head():
    import shutil

    from lens_cache.bench import viewer_timing

    row = viewer_timing(4, long_head=False)
    assert row["prompts"] == 4 and row["build_s"] > 0 and row["rebuild_unchanged_s"] > 0
    if shutil.which("chromium"):
        assert row["home_ready_ms"] > 0 and row["head_draw_ms"] > 0


def test_a_pattern_lens_source_tree_adds_rows_at_its_default_batch_and_ours(tmp_path):
    """`make bench PATTERN_LENS_SRC=tree` builds a venv for the tree under bench/ and hands its
    Python to the bench, which runs that pattern-lens at its own default batch size and ours."""
    import argparse
    import subprocess

    from lens_cache.bench import child_command, run_variants
    from tests.helpers import REPO

    args = argparse.Namespace(
        variants=["pattern-lens", "default"],
        pattern_lens_python="/v06/bin/python",
        pattern_lens_src_python="/vsrc/bin/python",
        batch_size=8,
        device="cpu",
    )
    assert run_variants(args) == ["pattern-lens", "default", "pl-src-default", "pl-src-ours"]
    expected = {"pattern-lens": "/v06", "pl-src-default": "/vsrc", "pl-src-ours": "/vsrc"}
    batches = {"pattern-lens": "8", "pl-src-default": "default", "pl-src-ours": "8"}
    for variant, venv in expected.items():
        cmd = child_command(args, "m", variant, tmp_path / variant, tmp_path / "p.jsonl")
        assert cmd[:3] == [f"{venv}/bin/python", "-m", "lens_cache.bench_pattern_lens"]
        assert cmd[cmd.index("--batch-size") + 1] == batches[variant], variant
    assert run_variants(argparse.Namespace(**{**vars(args), "pattern_lens_src_python": None})) == [
        "pattern-lens",
        "default",
    ]
    tree = tmp_path / "pattern-lens"
    tree.mkdir()
    (tree / "pyproject.toml").write_text('[project]\nname = "pattern_lens"\nversion = "0.8.0"\n')
    make = ["make", "-n", "bench", f"PATTERN_LENS_SRC={tree}", "PYTHON=python3"]
    plan = subprocess.run(make, cwd=REPO, capture_output=True, text=True, check=True).stdout
    venv = "bench/venv-pattern-lens-pattern-lens"
    assert f'{venv}/bin/pip install -q --no-deps "{tree}"' in plan
    assert '"transformer_lens>=3.9,<4"' in plan.split(f"python3 -m venv {venv}")[1]
    assert f"-m lens_cache.bench --pattern-lens-src-python {venv}/bin/python" in plan


def test_corpus_row_stores_summaries_only_and_reports_its_ratios():
    """The corpus row on 12 prompts: four files per prompt (prompt.json, head_metrics,
    head_contributions, predictions: no pattern), its ratio the ratio of its columns."""
    from lens_cache.bench_corpus import corpus_timing

    row = corpus_timing(12)
    assert row["prompts"] == 12 and row["files_per_prompt"] == 4
    assert row["x_forward"] == pytest.approx(row["export_s"] / row["forward_s"])
    assert 0 < row["bytes_per_prompt"] and row["export_peak_rss_mb"] > 0
    assert row["viewer_build_s"] > 0 and row["viewer_rebuild_unchanged_s"] > 0
