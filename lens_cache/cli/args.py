"""What every command line shares: a parser whose argument errors are one line (the usage
block belongs to `--help`), help that states each default once, one syntax for lists."""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from lens_cache.errors import EXIT_BAD_INPUT
from lens_cache.layout import NO_FSYNC_ENV, default_save_path

SAVE_HELP = "the store (default: $LENS_CACHE_DIR, else lens_cache_data)"
METRICS_MODULE_HELP = (
    "a module registering per-head metrics with @lens_cache.metric (an import path or a .py "
    "file); the viewer computes them for every stored head. Repeat for several"
)


_THE_DEFAULT = object()


def add_save_path(parser, default=_THE_DEFAULT, **options) -> None:
    """`-s/--save-path`, the one definition every command line uses. Its default is the
    default save path (`$LENS_CACHE_DIR`, else `lens_cache_data`), read when the parser is
    built; a command may pass another (`None` when it resolves the path itself, SUPPRESS for a
    subcommand's copy that only overrides the main one) and `options` such as `type`."""
    if default is _THE_DEFAULT:
        default = default_save_path()
    parser.add_argument("-s", "--save-path", default=default, help=SAVE_HELP, **options)


def add_metrics_module(parser: argparse.ArgumentParser) -> None:
    """`--metrics-module`, shared by `export` and `view`."""
    parser.add_argument(
        "--metrics-module",
        action="append",
        default=[],
        metavar="MODULE",
        help=METRICS_MODULE_HELP,
    )


def load_metrics_modules(specs: list[str]) -> None:
    """Import each `--metrics-module`: the import registers its metrics."""
    if specs:
        from lens_cache.user_metrics import load_metrics_module

        for spec in specs:
            load_metrics_module(spec)


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless the help already names its default
    or there is none to name (None, False, an empty list): no "(default: None)", no doubles."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if "default" in help_ or action.default in (None, False, [], argparse.SUPPRESS):
            return help_
        if not action.option_strings:
            return help_
        default = action.default
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{help_} (default: {shown})".replace("%", "%%")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are `error: <what was wrong>` on one line, exit 2, with
    the valid choices and the nearest one; subcommand parsers are Parsers too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, invalid_choice(value, action.choices))


def invalid_choice(value, choices) -> str:
    """`invalid choice 'patern'; valid choices: a, b; did you mean pattern?`"""
    if isinstance(choices, range):
        return f"invalid choice {value!r}; valid choices: {choices.start}-{choices.stop - 1}"
    names = [str(c) for c in choices]
    message = f"invalid choice {str(value)!r}; valid choices: {', '.join(names)}"
    nearest = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return f"{message}; did you mean {nearest[0]}?" if nearest else message


def split_list_word(word: str) -> list[str]:
    """`pattern,blocks.{3,{5,6}}.hook_z` -> `pattern`, `blocks.{3,{5,6}}.hook_z`: split at the
    commas outside brace pairs (those inside belong to a hook glob's brace list, nested or not;
    an unclosed `{` is a plain character, as in the shell)."""
    inside = [False] * len(word)
    opened = []
    for i, char in enumerate(word):
        if char == "{":
            opened.append(i)
        elif char == "}" and opened:
            start = opened.pop()
            inside[start:i] = [True] * (i - start)
    cuts = [i for i, char in enumerate(word) if char == "," and not inside[i]]
    pieces = [word[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(word)], strict=True)]
    return [piece for piece in pieces if piece]


class ListOption(argparse.Action):
    """A list option taking words, commas, or both: `--hooks pattern,resid_post` is
    `--hooks pattern resid_post`. Repeating the flag adds to the list. `aliases` maps other
    spellings to a choice (`patterns` -> `pattern`); `join` stores one comma-joined string, for
    options parsed later (`--layers 0 5-7` is `--layers 0,5-7`); `accept(word)` lets through
    words outside `choices` that are checked later (`--hooks` takes hook point names)."""

    def __init__(
        self, option_strings, dest, choices=None, aliases=None, join=False, accept=None, **kwargs
    ):
        kwargs.setdefault("nargs", "+")
        if choices is not None:
            kwargs.setdefault("metavar", "{" + ",".join(map(str, choices)) + "}")
        super().__init__(option_strings, dest, **kwargs)
        self.valid = None if choices is None else tuple(choices)
        self.aliases = aliases or {}
        self.join = join
        self.accept = accept  # other words it takes (hook point names), checked later

    def __call__(self, parser, namespace, values, option_string=None):
        # A comma inside braces belongs to a hook glob (`blocks.{3,5}.attn.hook_z`).
        items = [item for word in values for item in split_list_word(word)]
        items = [self.aliases.get(item, item) for item in items]
        for item in items:
            taken = self.accept is not None and self.accept(item)
            if self.valid is not None and item not in self.valid and not taken:
                raise argparse.ArgumentError(self, invalid_choice(item, self.valid))
        if self.join:
            setattr(namespace, self.dest, ",".join(items))
            return
        current = getattr(namespace, self.dest, None)
        fresh = current is None or current is self.default
        setattr(namespace, self.dest, items if fresh else [*current, *items])


class NoFsync(argparse.Action):
    """`--no-fsync`: sets `LENS_CACHE_NO_FSYNC=1` as it is parsed, so the store's writers and
    any worker process started later (which inherit the environment) all skip the flushes."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[NO_FSYNC_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_no_fsync(parser: argparse.ArgumentParser) -> None:
    """The `--no-fsync` option of every command that writes a store."""
    parser.add_argument(
        "--no-fsync",
        action=NoFsync,
        help=f"do not flush written files and folders to disk (also ${NO_FSYNC_ENV}=1): faster, "
        "for a scratch store that need not survive a power cut",
    )
