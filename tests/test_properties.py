"""Property tests for the parsers of user input: `--layers`, hook globs and brace lists, the
command line's list words, prompt files (JSONL and text), `--heads`, `--meta` and `--kinds`.

Each input either parses to what a brute-force reference written here says, or raises the
parser's named error (a `LensCacheError`), never another exception. The references use loops,
`str` methods, `itertools.product` and `fnmatch`, not the regular expressions of the code.
Examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import sys
import time

import pytest
import torch
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from lens_cache.cli.args import split_list_word
from lens_cache.cli.export import build_parser
from lens_cache.errors import (
    DatasetSourceError,
    HubSelectionError,
    LayerSelectionError,
    MalformedPromptError,
    NotPerTokenHookError,
    UnknownHookError,
)
from lens_cache.hooks import split_hook_requests
from lens_cache.hub._layout import SELECTABLE_KINDS
from lens_cache.hub._select import Selection, meta_matches, parse_heads, parse_meta
from lens_cache.layout import (
    HOOK_KINDS,
    MAX_BRACE_PATTERNS,
    check_layer_syntax,
    expand_braces,
    matches_hook_request,
    resolve_layers,
)
from lens_cache.prompts import read_prompts
from lens_cache.sources import read_dataset

PROPS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
FEW = settings(max_examples=60, deadline=None, derandomize=True, database=None)

WHITESPACE = st.sampled_from(["", " ", "\t", "  ", "\u3000", "\xa0"])
HUGE = st.text("0123456789", min_size=19, max_size=5000).filter(lambda s: s.strip("0"))


@contextlib.contextmanager
def _any_int_length():
    """The references may convert numbers of any length (int() refuses 4,300+ digits)."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def _integer(text: str) -> int | None:
    """`-12` or `12` (Unicode decimal digits too, as int() reads them), else None."""
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdecimal():
        return None
    with _any_int_length():
        return int(text)


# --- --layers ------------------------------------------------------------------------------


class Unreadable(Exception):
    """The reference could not read an item."""


class OutOfRange(Exception):
    """The reference read an item the model does not have."""


def ref_layer_item(item: str, n: int) -> set[int]:
    named = {"all": set(range(n)), "first": {0}, "middle": {n // 2}, "last": {n - 1}}
    if item in named:
        return named[item]
    single = _integer(item)
    if single is not None:
        lo = hi = single
    else:
        ends = item.split("-")
        bounds = [_integer(end) for end in ends]
        if len(ends) != 2 or None in bounds:
            raise Unreadable(item)
        lo, hi = bounds
    chosen = set()
    for i in itertools.count(lo):  # brute force, but stops at the first layer out of range
        if i > hi:
            break
        if not -n <= i < n:
            raise OutOfRange(item)
        chosen.add(i % n)
    if not chosen:
        raise OutOfRange(item)  # a range that runs backwards
    return chosen


def ref_layers(items, n: int) -> tuple[int, ...]:
    chosen, failures = set(), set()
    for item in items:
        try:
            chosen |= ref_layer_item(str(item).strip(), n)
        except (Unreadable, OutOfRange) as e:
            failures.add(type(e))
    for failure in (Unreadable, OutOfRange):  # an unreadable item is told whatever the model
        if failure in failures:
            raise failure()
    return tuple(sorted(chosen))


def _number_words():
    small = st.integers(-70, 70).map(str)
    unicode_digits = st.integers(0, 9).map(lambda d: chr(0x0660 + d))  # Arabic-Indic digits
    return st.one_of(small, HUGE, HUGE.map(lambda s: "-" + s), unicode_digits)


def _layer_item_words():
    number = _number_words()
    ranged = st.tuples(number, number).map("-".join)
    named = st.sampled_from(["all", "first", "middle", "last", "ALL", "al", ""])
    junk = st.text(max_size=6)
    word = st.one_of(number, ranged, named, junk)
    return st.tuples(WHITESPACE, word, WHITESPACE).map("".join)


def _outcome(parse):
    """What a parse gave: a value, or the class of what it raised."""
    try:
        return parse()
    except (Unreadable, OutOfRange, LayerSelectionError) as e:
        return type(e)


@PROPS
@given(items=st.lists(_layer_item_words(), min_size=1, max_size=5), n=st.integers(1, 40))
@example(items=["0-3", "7"], n=12)
@example(items=["0-99999999999"], n=12)
@example(items=["1" * 5000], n=12)
def test_layers_spec_matches_the_brute_force_reference(items, n):
    spec = ",".join(items)
    expected = _outcome(lambda: ref_layers(spec.split(","), n))
    got = _outcome(lambda: resolve_layers(spec, n))
    if isinstance(expected, tuple):
        assert got == expected
    else:
        assert got is LayerSelectionError
    # The syntax check (made before the model loads) refuses exactly the unreadable items.
    syntax = _outcome(lambda: check_layer_syntax(spec))
    assert (syntax is LayerSelectionError) == (expected is Unreadable)


@PROPS
@given(
    items=st.lists(st.one_of(st.integers(-50, 50), _layer_item_words()), min_size=1, max_size=4),
    n=st.integers(1, 30),
)
def test_layers_as_a_list_or_one_int_match_the_reference(items, n):
    expected = _outcome(lambda: ref_layers(items, n))
    got = _outcome(lambda: resolve_layers(items, n))
    assert got == expected if isinstance(expected, tuple) else got is LayerSelectionError
    if isinstance(items[0], int):
        single = _outcome(lambda: ref_layers([items[0]], n))
        got = _outcome(lambda: resolve_layers(items[0], n))
        assert got == single if isinstance(single, tuple) else got is LayerSelectionError


# --- hook globs and brace lists --------------------------------------------------------------

SITES = (
    "hook_resid_pre",
    "ln1.hook_scale",
    "attn.hook_q",
    "attn.hook_z",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
HOOK_NAMES = (
    "hook_embed",
    "hook_pos_embed",
    *(f"blocks.{i}.{site}" for i in range(4) for site in SITES),
    "ln_final.hook_normalized",
)
GLOB_CHARS = "*?[]!"
NAME_CHARS = "blocks.0123456789_hookattnmlpresidpostz"


def _literal():
    return st.text(NAME_CHARS + GLOB_CHARS, max_size=6)


def _glob_tree():
    """A pattern as a tree: a list of parts, each a literal or a brace group `("{", [alts])`
    whose alternatives are lists of parts themselves."""
    part = st.recursive(
        _literal(),
        lambda inner: st.lists(st.lists(inner, max_size=3), min_size=1, max_size=3).map(
            lambda alts: ("{", alts)
        ),
        max_leaves=8,
    )
    return st.lists(part, max_size=4)


def render(parts) -> str:
    out = ""
    for part in parts:
        out += part if isinstance(part, str) else "{" + ",".join(map(render, part[1])) + "}"
    return out


def ref_expand(parts) -> list[str]:
    """Every string the tree names: the product of its parts' expansions."""
    choices = []
    for part in parts:
        if isinstance(part, str):
            choices.append([part])
        else:
            choices.append([s for alt in part[1] for s in ref_expand(alt)])
    return ["".join(combo) for combo in itertools.product(*choices)]


def ref_site(name: str) -> str:
    words = name.split(".")
    if len(words) > 2 and words[0] == "blocks" and words[1].isdecimal():
        return ".".join(words[2:])
    return name


def ref_matches(name: str, request: str, expanded: list[str]) -> bool:
    if request in (name, ref_site(name)):
        return True
    is_glob = any(c in request for c in "*?[{")
    return is_glob and any(fnmatch.fnmatchcase(name, p) for p in expanded)


@PROPS
@given(parts=_glob_tree())
@example(parts=["blocks.", ("{", [["3"], ["1", ("{", [["0"], ["1"]])]]), ".attn.hook_z"])
def test_brace_lists_expand_as_the_product_of_their_groups(parts):
    pattern = render(parts)
    expected = ref_expand(parts)
    assume(len(expected) <= MAX_BRACE_PATTERNS)
    # As sets: a nested list may name a pattern twice (`{3,1{0,1}}` names `3` from each of
    # `{3,10}` and `{3,11}`), which matches the same hooks.
    assert set(expand_braces(pattern)) == set(expected)
    for name in HOOK_NAMES:
        assert matches_hook_request(name, pattern) == ref_matches(name, pattern, expected)


@FEW
@given(sizes=st.lists(st.integers(1, 6), max_size=16), prefix=_literal())
@example(sizes=[2] * 20, prefix="blocks.")
def test_brace_lists_past_the_limit_are_a_named_error(sizes, prefix):
    groups = ["{" + ",".join(str(i) for i in range(size)) + "}" for size in sizes]
    pattern = prefix + ".".join(groups)
    count = 1
    for size in sizes:
        count *= size
    if count > MAX_BRACE_PATTERNS:
        with pytest.raises(UnknownHookError, match="expands to more than"):
            expand_braces(pattern)
    else:
        assert len(expand_braces(pattern)) == count


@PROPS
@given(request=st.text(NAME_CHARS + GLOB_CHARS + "{},", max_size=20) | st.text(max_size=12))
def test_any_hook_request_matches_or_not_without_raising(request):
    """Unbalanced braces, stray brackets and commas are literal characters, never an error."""
    for name in HOOK_NAMES[:20]:
        assert matches_hook_request(name, request) in (True, False)
    if "{" not in request:
        assert expand_braces(request) == [request]


@PROPS
@given(words=st.lists(st.text(max_size=10) | st.sampled_from(HOOK_KINDS), max_size=4))
def test_hooks_words_are_kinds_requests_or_a_named_error(words):
    kinds = [w for w in words if w in HOOK_KINDS]
    requests = [w for w in words if w not in HOOK_KINDS]
    typo = [w for w in requests if "hook" not in w and not any(c in w for c in "*?[{")]
    if typo or not words:
        with pytest.raises(UnknownHookError):
            split_hook_requests(words)
    else:
        assert split_hook_requests(words) == (tuple(kinds), tuple(requests))


@pytest.fixture(scope="module")
def hook_table(gpt2_model):
    """The tiny GPT-2's listed hook points, which of them hold one vector per token (by a live
    5-token run: the position axis first, and no other axis of that length), and the names
    the live run has beside them (the 4.x bridge's canonical names, which a request may use
    for their listed alias)."""
    import lens_cache

    listed = [point.name for point in lens_cache.list_hooks(gpt2_model)]
    tokens = torch.arange(1, 6).unsqueeze(0)
    with torch.inference_mode():
        _, cache = gpt2_model.model.run_with_cache(tokens)
    shapes = {name: tuple(cache[name].shape[1:]) for name in listed}
    per_token = {name: s[:1] == (5,) and 5 not in s[1:] for name, s in shapes.items()}
    return listed, per_token, set(cache.keys()) - set(listed)


def ref_resolve(request: str, expanded: list[str], layers, listed, per_token) -> list[str]:
    """The module docstring of lens_cache.hooks, by brute force: a listed name, else a block
    site at each layer, else a glob over every listed name."""
    if request in listed:
        hits = [request]
    elif f"blocks.0.{request}" in listed:
        hits = [f"blocks.{i}.{request}" for i in layers]
    elif any(c in request for c in "*?[{"):
        hits = [n for n in listed if any(fnmatch.fnmatchcase(n, p) for p in expanded)]
        if any(per_token[n] for n in hits):
            hits = [n for n in hits if per_token[n]]
    else:
        raise UnknownHookError(request)
    if not hits:
        raise UnknownHookError(request)
    if not all(per_token[n] for n in hits):
        raise NotPerTokenHookError(request)
    return [n for n in listed if n in hits]


HOOK_PIECES = st.sampled_from(
    ["blocks.", "0", "1", ".", "attn.", "mlp.", "hook_", "z", "pattern", "post", "mlp_out",
     "resid_pre", "hook_embed", "ln_final.hook_normalized", "*", "?", "[01]", "[!0]", "ln1."]
)  # fmt: skip


def _hook_request():
    """Mostly names, sites and globs shaped like the model's; some free mixtures of pieces."""
    layer = st.sampled_from(["0", "1", "2", "*", "?", "[01]", ("{", [["0"], ["1"]])])
    site = st.sampled_from([*SITES, "attn.hook_*", "hook_*", "*", "mlp.hook_p*"])
    in_block = st.tuples(st.just("blocks."), layer, st.just("."), site).map(list)
    part = st.recursive(
        HOOK_PIECES,
        lambda inner: st.lists(st.lists(inner, max_size=3), min_size=1, max_size=3).map(
            lambda alts: ("{", alts)
        ),
        max_leaves=6,
    )
    free = st.lists(part, min_size=1, max_size=5)
    return st.one_of(in_block, site.map(lambda s: [s]), free)


@FEW
@given(parts=_hook_request(), layers=st.sets(st.integers(0, 1), min_size=1))
@example(parts=["blocks.", ("{", [["0"], ["1"]]), ".attn.hook_z"], layers={0, 1})
@example(parts=["attn.hook_pattern"], layers={1})
def test_hook_requests_resolve_as_the_reference_says(gpt2_model, hook_table, parts, layers):
    from lens_cache.hooks import resolve_hooks

    listed, per_token, canonical = hook_table
    request, expanded = render(parts), ref_expand(parts)
    assume(request not in canonical and len(expanded) <= MAX_BRACE_PATTERNS)
    try:
        expected = ref_resolve(request, expanded, sorted(layers), listed, per_token)
    except UnknownHookError as e:
        event(type(e).__name__)
        with pytest.raises(type(e)) as caught:
            resolve_hooks(gpt2_model, [request], sorted(layers))
        assert type(caught.value) is type(e)
        return
    event(f"{min(len(expected), 3)}+ hooks")
    assert list(resolve_hooks(gpt2_model, [request], sorted(layers))) == expected


# --- list words on the command line -----------------------------------------------------------


def ref_split_word(word: str) -> list[str]:
    """Blank out each innermost `{...}` pair until none is left; the commas still showing are
    the ones that separate items."""
    masked, previous = word, None
    while masked != previous:
        previous, start = masked, -1
        for i, char in enumerate(masked):
            if char == "{":
                start = i
            elif char == "}" and start >= 0:
                masked = masked[:start] + "#" * (i - start + 1) + masked[i + 1 :]
                break
    pieces, begin = [], 0
    for i, char in enumerate(masked):
        if char == ",":
            pieces.append(word[begin:i])
            begin = i + 1
    return [p for p in [*pieces, word[begin:]] if p]


@PROPS
@given(word=st.text("ab.*{},", max_size=16) | st.text(max_size=8))
@example(word="pattern,blocks.{3,{5,6}}.attn.hook_z")
def test_list_words_split_at_commas_outside_brace_pairs(word):
    assert split_list_word(word) == ref_split_word(word)


@FEW
@given(words=st.lists(st.text("ab.*{},5-", min_size=1, max_size=10), min_size=1, max_size=3))
@example(words=["0,{3,{5,6}}", "5-7"])
def test_export_command_line_joins_list_words_like_the_reference(words):
    words = [w for w in words if not w.startswith("-")]  # an option, not a value
    assume(words)
    args = build_parser().parse_args(["--layers", *words])
    assert args.layers == ",".join(item for word in words for item in ref_split_word(word))


# --- prompt files ----------------------------------------------------------------------------


def ref_hash(text: str) -> str:
    """pattern-lens's prompt hash: urlsafe base64 of the MD5 of the UTF-8 text, unpadded."""
    return base64.urlsafe_b64encode(hashlib.md5(text.encode("utf-8")).digest()).decode()[:22]


def _prompt_text():
    # A text file cannot hold a line break inside a prompt; a byte order mark opening the
    # file is taken as one, not as text.
    text = st.text(min_size=1, max_size=30).filter(lambda t: t.strip())
    return text.filter(lambda t: "\n" not in t and "\r" not in t and not t.startswith("\ufeff"))


_META_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_META = st.dictionaries(st.text(max_size=6), _META_VALUE, max_size=3)
_EXTRA = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in ("text", "meta", "hash")), _META_VALUE, max_size=2
)

# Lines that no reading can take: what each is, and its bytes.
BAD_JSONL = {
    "not json": b"{text: 1}",
    "not an object": b'["text"]',
    "no text": b'{"meta": {}}',
    "text not a string": b'{"text": 5}',
    "empty text": b'{"text": " \\t"}',
    "meta not an object": b'{"text": "a", "meta": [1]}',
    "lone surrogate": b'{"text": "a\\ud800"}',
    "number too long": b'{"text": "a", "n": ' + b"7" * 5000 + b"}",
    "nesting too deep": b'{"text": "a", "n": ' + b"[" * 50000 + b"]" * 50000 + b"}",
}
BAD_BYTES = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80")


def _jsonl_line():
    good = st.tuples(_prompt_text(), _META, _EXTRA, st.booleans()).map(lambda t: ("good", *t))
    bad = st.sampled_from(sorted(BAD_JSONL)).map(lambda k: ("bad", k))
    undecodable = st.tuples(_prompt_text(), st.sampled_from(BAD_BYTES)).map(lambda t: ("bytes", *t))
    blank = st.sampled_from(["", " ", "\t", "\u3000"]).map(lambda b: ("blank", b))
    return st.one_of(good, good, bad, undecodable, blank)


def _render_jsonl(line) -> bytes:
    if line[0] == "good":
        _, text, meta, extra, ascii_only = line
        record = {"text": text, **({"meta": meta} if meta else {}), **extra}
        return json.dumps(record, ensure_ascii=ascii_only).encode()
    if line[0] == "bad":
        return BAD_JSONL[line[1]]
    if line[0] == "bytes":
        return json.dumps({"text": line[1]}).encode()[:-2] + line[2] + b'"}'
    return line[1].encode()


def ref_jsonl(lines) -> list[dict] | tuple[str, int]:
    """The prompts, or `("error", line number)`: undecodable bytes anywhere come first, since
    the file must be text before any line is read."""
    for number, line in enumerate(lines, 1):
        if line[0] == "bytes":
            return ("error", number)
    prompts = []
    for number, line in enumerate(lines, 1):
        if line[0] == "bad":
            return ("error", number)
        if line[0] == "good":
            _, text, meta, extra, _ = line
            prompts.append({"text": text, "hash": ref_hash(text), "meta": {**meta, **extra}})
    return prompts


def _write(tmp_path, name: str, lines: list[bytes], newline: bytes, bom: bool) -> object:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines))
    return path


def _read_outcome(path):
    try:
        return read_prompts(path)
    except MalformedPromptError as e:
        return ("error", e.line)


NEWLINES = st.sampled_from([b"\n", b"\r\n", b"\r"])


@PROPS
@given(lines=st.lists(_jsonl_line(), max_size=6), newline=NEWLINES, bom=st.booleans())
@example(lines=[("good", "a\u2028b\x85c", {}, {}, False)], newline=b"\n", bom=False)
@example(lines=[("bad", "lone surrogate")], newline=b"\n", bom=False)
def test_jsonl_prompt_files_read_as_the_reference_says(tmp_path_factory, lines, newline, bom):
    tmp_path = tmp_path_factory.mktemp("jsonl")
    path = _write(tmp_path, "p.jsonl", [_render_jsonl(x) for x in lines], newline, bom)
    assert _read_outcome(path) == ref_jsonl(lines)


def _text_line():
    good = _prompt_text().map(lambda t: ("good", t))
    undecodable = st.tuples(_prompt_text(), st.sampled_from(BAD_BYTES)).map(lambda t: ("bytes", *t))
    blank = st.sampled_from(["", " ", "\t\u3000"]).map(lambda b: ("blank", b))
    return st.one_of(good, good, undecodable, blank)


@PROPS
@given(lines=st.lists(_text_line(), max_size=6), newline=NEWLINES, bom=st.booleans())
@example(lines=[("good", "form\x0cfeed\u2028line")], newline=b"\n", bom=True)
def test_text_prompt_files_read_as_the_reference_says(tmp_path_factory, lines, newline, bom):
    tmp_path = tmp_path_factory.mktemp("txt")
    rendered = [x[1].encode() + (x[2] if x[0] == "bytes" else b"") for x in lines]
    path = _write(tmp_path, "p.txt", rendered, newline, bom)
    undecodable = [n for n, x in enumerate(lines, 1) if x[0] == "bytes"]
    expected = [{"text": x[1], "hash": ref_hash(x[1]), "meta": {}} for x in lines if x[0] == "good"]
    assert _read_outcome(path) == (("error", undecodable[0]) if undecodable else expected)


@FEW
@given(lines=st.lists(_jsonl_line(), min_size=1, max_size=5), newline=NEWLINES)
def test_jsonl_datasets_read_or_raise_their_named_error(tmp_path_factory, lines, newline):
    path = _write(
        tmp_path_factory.mktemp("ds"), "d.jsonl", [_render_jsonl(x) for x in lines], newline, False
    )
    expected = ref_jsonl(lines)
    try:
        got = read_dataset(path)
    except DatasetSourceError:
        # a named error: for what a prompt file refuses too, or for a file with no prompt
        assert not isinstance(expected, list) or not expected
        return
    if isinstance(expected, list):  # else a dataset may take more (a row without text is skipped)
        assert [(p["text"], p["hash"]) for p in got] == [(p["text"], p["hash"]) for p in expected]


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_10_mb_line_is_one_prompt_and_a_bad_byte_in_it_a_named_error(tmp_path, suffix):
    text = "ab\u00e9 " * 2_000_000  # 10 MB of UTF-8
    line = json.dumps({"text": text}).encode() if suffix == ".jsonl" else text.encode()
    path = tmp_path / f"long{suffix}"
    path.write_bytes(b"\n" + line + b"\n")
    start = time.perf_counter()
    assert [p["text"] for p in read_prompts(path)] == [text]
    assert time.perf_counter() - start < 5
    path.write_bytes(b"\n" + line[:-5_000_000] + b"\xff" + line[-5_000_000:])
    with pytest.raises(MalformedPromptError, match=":2: not UTF-8") as caught:
        read_prompts(path)
    assert caught.value.line == 2


# --- Hub selections --------------------------------------------------------------------------


def ref_head_item(item: str) -> tuple[int, int]:
    words = item.strip().split(".")
    numbers = [_integer(w) for w in words]
    if len(words) != 2 or None in numbers or words[1].startswith("-"):
        raise Unreadable(item)
    return numbers[0], numbers[1]


def ref_heads(spec: str, n_layers: int, n_heads: int) -> dict:
    chosen: dict[int, set[int]] = {}
    for item in spec.split(","):
        layer, head = ref_head_item(item)
        if not (-n_layers <= layer < n_layers and 0 <= head < n_heads):
            raise OutOfRange(item)
        chosen.setdefault(layer % n_layers, set()).add(head)
    return {layer: tuple(sorted(heads)) for layer, heads in sorted(chosen.items())}


def _head_words():
    number = _number_words()
    pair = st.tuples(number, number).map(".".join)
    return st.tuples(WHITESPACE, pair | st.text(max_size=5), WHITESPACE).map("".join)


@PROPS
@given(
    items=st.lists(_head_words(), min_size=1, max_size=4),
    n_layers=st.integers(1, 30),
    n_heads=st.integers(1, 16),
)
@example(items=["5.1", "5.3", "-1.0"], n_layers=12, n_heads=4)
@example(items=["1" * 5000 + ".1"], n_layers=12, n_heads=4)
def test_heads_spec_matches_the_reference(items, n_layers, n_heads):
    spec = ",".join(items)
    expected = _outcome(lambda: ref_heads(spec, n_layers, n_heads))
    got = _outcome(lambda: parse_heads(spec, n_layers, n_heads))
    assert got == expected if isinstance(expected, dict) else got is LayerSelectionError


@PROPS
@given(pairs=st.lists(st.tuples(st.text(max_size=5) | st.integers(), st.text(max_size=5))))
def test_heads_as_pairs_never_raise_anything_but_the_named_error(pairs):
    try:
        parse_heads(pairs, 12, 4)
    except LayerSelectionError:
        pass


def ref_meta(items) -> tuple | type:
    pairs = []
    for item in items:
        if "=" not in item or item.index("=") == 0:
            return HubSelectionError
        at = item.index("=")
        pairs.append((item[:at], item[at + 1 :]))
    return tuple(sorted(pairs))


@PROPS
@given(items=st.lists(st.text("ab=", max_size=5) | st.text(max_size=6), max_size=4))
@example(items=["kind=code", "a==b", "=x"])
def test_meta_filters_read_key_value_pairs_like_the_reference(items):
    expected = ref_meta(items)
    try:
        got = parse_meta(items)
    except HubSelectionError:
        got = HubSelectionError
    assert got == expected


@PROPS
@given(meta=st.dictionaries(st.text("ab", max_size=2), _META_VALUE, max_size=3), wanted=_META)
def test_meta_matching_is_every_pair_equal_as_text_or_json(meta, wanted):
    def as_text(value):  # the documented rule: a string as it is, any other value as JSON
        return value if isinstance(value, str) else json.dumps(value)

    expected = all(k in meta and as_text(meta[k]) == as_text(v) for k, v in wanted.items())
    assert meta_matches(meta, Selection(meta=dict(wanted)).meta) == expected


@PROPS
@given(
    kinds=st.lists(st.sampled_from([*SELECTABLE_KINDS, "pattern", "logits"]) | st.text(max_size=6))
)
def test_kinds_are_known_names_or_a_named_error(kinds):
    aliases = {"pattern": "patterns", "logits": "predictions"}
    named = [aliases.get(k, k) for k in kinds]
    if not kinds or any(k not in SELECTABLE_KINDS for k in named):
        with pytest.raises(HubSelectionError):
            Selection(kinds=kinds)
    else:
        assert Selection(kinds=kinds).kinds == tuple(k for k in SELECTABLE_KINDS if k in named)
