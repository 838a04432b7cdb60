"""What a new user meets first (issue #18): argument errors in one line with the valid choices
and the nearest one, one syntax for lists, `--help` that states each default once."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

import pytest

from lens_cache.cli import cache, export, hub, pool, run_cli, serve, view
from lens_cache.cli import main as lens_cache_main
from lens_cache.synthetic import SMALL_MODEL, write_store

PARSERS = {
    "export": export.build_parser,
    "pool": pool.build_parser,
    "cache": cache.build_parser,
    "hub": hub.build_parser,
    "serve": serve.build_parser,
    "view": view.build_parser,
    "lens-cache": lens_cache_main.build_parser,
}


def _all_parsers():
    """Every parser a user can ask `--help` of: each command and each of its subcommands."""
    for name, build in PARSERS.items():
        parser = build()
        yield name, parser
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            for sub, subparser in (action.choices or {}).items():
                if name != "lens-cache":  # lens-cache's own subparsers only hand over
                    yield f"{name} {sub}", subparser


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("s") / "store", models=[SMALL_MODEL])["save_path"]


NEW = ["-s", "{tmp}/new"]  # a store the failed run must not leave behind
# (command main, argv, exit code, what the line says); {store} is a small real store.
USER_ERRORS = [
    (export.main, ["--hooks", "patern"], 2, "valid choices: pattern, resid_pre"),
    (export.main, ["--hooks", "patern"], 2, "did you mean pattern?"),
    (export.main, ["--hooks", "pattern,resid_pst"], 2, "did you mean resid_post?"),
    (export.main, ["--dtype", "float8"], 2, "valid choices: bfloat16, float16, float32"),
    (export.main, ["--compress-level", "10"], 2, "invalid choice 10; valid choices: 0-9"),
    (export.main, ["--batch-size", "x"], 2, "argument -b/--batch-size: invalid int value"),
    (export.main, ["--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (export.main, ["-m", "nonexistent-model-xyz", *NEW], 2, "alias or cached Hub model is named"),
    (export.main, ["-m", "nonexistent-model-xyz", *NEW], 2, "(aliases: smollm2-135m)"),
    (export.main, ["-m", "org/nonexistent-xyz", *NEW], 2, "but the network is off"),
    # read before the model loads: the model named does not exist, the layers are reported
    (export.main, ["--layers", "abc", "-m", "nonexistent-model-xyz", *NEW], 2, "cannot read"),
    (export.main, ["-p", "{tmp}/none.jsonl", *NEW], 2, "none.jsonl"),
    (pool.main, ["--pool", "lst_token"], 2, "did you mean last_token?"),
    (pool.main, ["-s", "{store}", "--hook", "resid_pre"], 2, "run:"),
    (cache.main, ["prune", "--max-gb", "abc"], 2, "--max-gb: not a number of GB: 'abc'"),
    (cache.main, ["prnue"], 2, "did you mean prune?"),
    (cache.main, ["info", "-s", "{tmp}/none"], 2, "no store at"),
    (hub.main, ["push", "--repo", "a/b", "--kinds", "patern"], 2, "did you mean patterns?"),
    (hub.main, ["push", "--repo", "a/b", "-s", "{tmp}/none"], 2, "error:"),
    (hub.main, ["pul"], 2, "did you mean pull?"),
    (serve.main, ["--port", "eighty"], 2, "invalid int value: 'eighty'"),
    (serve.main, ["-s", "{tmp}/none"], 2, "error:"),
    (view.main, ["-s", "{tmp}/none"], 2, "no store at"),
    (lens_cache_main.main, ["exprot"], 2, "did you mean export?"),
]


@pytest.mark.parametrize("main, argv, code, says", USER_ERRORS)
def test_a_user_error_is_one_line_with_its_exit_code(
    main, argv, code, says, store, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LENS_CACHE_DEBUG", raising=False)
    argv = [a.format(store=store, tmp=tmp_path) for a in argv]
    got, err = _run_capturing(main, argv)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no usage block, no traceback
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert "network" not in lines[0] or "org/" in " ".join(argv)
    assert not (tmp_path / "new").exists()  # a failed run leaves no empty store folder


@pytest.mark.parametrize("name", ["nonexistent-model-xyz", "org/nonexistent-xyz"])
def test_an_unknown_model_with_the_hub_unreachable_is_one_line_at_once(name, tmp_path):
    """Network not switched off, but the Hub's endpoint refuses (a closed local port stands in
    for a machine without network): one line naming the aliases and why, no loader retries."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    new = [a.format(tmp=tmp_path) for a in NEW]
    cmd = [sys.executable, "-m", "lens_cache.activations", "-m", name, *new]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no local directory") and "(aliases: smollm2-135m)" in line
    assert "the Hub cannot be reached (127.0.0.1:9: " in line
    assert not (tmp_path / "new").exists()


def test_layers_are_range_checked_after_loading_before_writing(gpt2_dir, tmp_path):
    new = [a.format(tmp=tmp_path) for a in NEW]
    got, err = _run_capturing(export.main, ["-m", str(gpt2_dir), "--layers", "0,5", "-q", *new])
    assert got == 2 and err.strip() == "error: --layers 5: the model has layers 0-1 (2 layers)"
    assert not (tmp_path / "new").exists()


def _run_capturing(main, argv):
    """(exit code, stderr) of a command line run as the console scripts run it."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = run_cli(main, argv)
        except SystemExit as stop:
            code = stop.code
    return code, err.getvalue()


@pytest.mark.parametrize(
    "words, hooks",
    [
        (["--hooks", "pattern,resid_post"], ["pattern", "resid_post"]),
        (["--hooks", "pattern", "resid_post"], ["pattern", "resid_post"]),
        (["--hooks", "patterns"], ["pattern"]),  # the Hub's spelling
        (["--hooks", "resid_pre,", "resid_mid"], ["resid_pre", "resid_mid"]),
        ([], ["pattern", "resid_post"]),
    ],
)
def test_export_lists_take_commas_or_spaces(words, hooks):
    args = export.build_parser().parse_args(words)
    assert args.hooks == hooks


def test_every_list_option_takes_commas_or_spaces():
    spaced = export.build_parser().parse_args(
        ["--layers", "0", "5-7", "--pool", "mean", "--pool", "last_token,mean_real"]
        + ["--label-columns", "a", "b,c"]
    )
    assert spaced.layers == "0,5-7" and spaced.pool == ["mean", "last_token", "mean_real"]
    assert spaced.label_columns == ["a", "b", "c"]
    assert export.build_parser().parse_args(["--layers", "-1"]).layers == "-1"
    pushed = hub.build_parser().parse_args(
        ["push", "--repo", "a/b", "--kinds", "pattern", "resid_post", "--heads", "5.1", "5.3"]
        + ["--layers", "0,2", "4", "-m", "x,y", "--prompts", "h1", "h2,h3"]
    )
    assert pushed.kinds == ["patterns", "resid_post"]  # the exporter's spelling
    assert pushed.heads == "5.1,5.3" and pushed.layers == "0,2,4"
    assert pushed.models == ["x", "y"] and pushed.prompts == ["h1", "h2", "h3"]
    assert cache.build_parser().parse_args(["list", "-m", "a,b"]).models == ["a", "b"]


def _entries(help_text: str) -> dict[str, str]:
    """Each option's help entry, its wrapped lines joined, keyed by its first flag."""
    entries, current = {}, None
    for line in help_text.splitlines():
        flag = re.match(r"^  (-{1,2}[\w-]+)", line)
        if flag:
            current = flag.group(1)
            entries[current] = line.strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("name, parser", list(_all_parsers()), ids=lambda x: str(x)[:20])
def test_help_states_each_default_once(name, parser):
    text = parser.format_help()
    entries = _entries(text)
    assert "(default: None)" not in text and "%(default)" not in text
    for action in parser._actions:
        if not action.option_strings or action.help == "==SUPPRESS==":
            continue
        entry = entries[action.option_strings[0]]
        assert entry.count("(default") <= 1, entry
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.default not in (None, False, [], "==SUPPRESS==") and action.nargs != 0:
            assert "default" in entry, f"{name}: {entry} hides its default"
        if "--save-path" in action.option_strings:
            assert "$LENS_CACHE_DIR, else lens_cache_data" in entry, f"{name}: {entry}"


def test_serve_help_shows_a_tunnel_with_its_host():
    text = " ".join(serve.build_parser().format_help().split())
    assert "ssh -L 8000:localhost:8000 user@remote-host" in text
    assert "(default: 8000)" in text
