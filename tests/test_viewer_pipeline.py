"""The viewer data an export makes in its writer threads, from the tensors in memory, are the
bytes a rebuild from the files on disk makes; and an export interrupted between a prompt's
files and its viewer data leaves a viewer that the rerun makes whole."""

import json

import pytest

from lens_cache.layout import VIEWER_DATA_DIR
from lens_cache.viewer import write_viewer
from tests.helpers import run_cli

TEXTS = [
    "The cat sat on the mat.",
    "def f(x): return x + 1",
    "A B C D A B C D A B",
    "one two three four five six seven eight nine ten " * 8,  # over THUMB_SIZE: thumbnails
]


N_LAYERS = 2  # of the tiny test model (tests/conftest.py)


def viewer_files(save) -> dict:
    root = save / VIEWER_DATA_DIR
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "flags",
    [
        ["--hooks", "pattern", "resid_post", "--dtype", "bfloat16"],
        ["--hooks", "pattern", "resid_pre", "--stacked-heads", "--pattern-dtype", "float16"],
    ],
    ids=["npz-bf16-resid", "stacked-f16-patterns"],
)
def test_pipelined_viewer_data_equal_a_rebuild_from_disk(gpt2_dir, tmp_path, cli_env, flags):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    save = tmp_path / "store"
    args = ["-m", str(gpt2_dir), "-p", str(prompts), "-s", str(save), "-r", "-b", "2", *flags]
    result = run_cli(args, cli_env)
    assert result.returncode == 0, result.stderr
    # the writers made every prompt's data: the last step found all of it up to date
    assert f"({0} built, {len(TEXTS)} up to date" in result.stderr, result.stderr
    pipelined = viewer_files(save)
    assert sum(name.endswith("/prompt.js") for name in pipelined) == len(TEXTS)
    report = write_viewer(save, force=True, log=lambda _: None)  # every prompt from disk
    assert report["built"] == len(TEXTS)
    rebuilt = viewer_files(save)
    assert sorted(pipelined) == sorted(rebuilt)
    for name, data in rebuilt.items():
        assert pipelined[name] == data, name


def test_export_killed_in_its_viewer_data_leaves_a_whole_viewer_after_the_rerun(
    gpt2_dir, tmp_path, cli_env
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    save = tmp_path / "store"
    args = ["-m", str(gpt2_dir), "-p", str(prompts), "-s", str(save), "-r", "-b", "2"]
    # SIGKILL in a writer thread at the last prompt's last viewer file (L0.js, L1.js, prompt.js,
    # stamp.json each): every prompt is in the store, one has no complete viewer data
    last = len(TEXTS) * (N_LAYERS + 2)
    killed = run_cli(args, {**cli_env, "LENS_CACHE_FAULT_AT": f"viewer:{last}"})
    assert killed.returncode == -9, killed.stderr
    assert len(list((save / VIEWER_DATA_DIR).rglob("stamp.json"))) == len(TEXTS) - 1
    assert len(list(save.glob("*/prompts/*/prompt.json"))) == len(TEXTS)
    rerun = run_cli(args, cli_env)
    assert rerun.returncode == 0, rerun.stderr
    after = viewer_files(save)
    assert sum(name.endswith("/stamp.json") for name in after) == len(TEXTS)
    write_viewer(save, force=True, log=lambda _: None)
    assert viewer_files(save) == after  # what the rerun left is what a full build makes
