import json

import pytest

from lens_cache.errors import MalformedPromptError, PromptsError, PromptsFileNotFoundError
from lens_cache.prompts import prompt_hash, read_prompts, select_prompts


def test_hash_matches_pattern_lens_formula():
    # urlsafe base64 of the md5 digest, '=' stripped: the name pattern-lens gives the directory
    assert prompt_hash("hello") == "XUFAKrxLKna5cZ2REBfFkg"


def test_default_prompt_set_is_varied():
    prompts = read_prompts("default")
    kinds = {p["meta"]["kind"] for p in prompts}
    assert 50 <= len(prompts) <= 100
    assert {"prose", "code", "list", "dialogue", "induction"} <= kinds
    assert max(len(p["text"]) for p in prompts) > 1500  # a few long ones


def test_jsonl_keeps_meta_and_merges_extra_keys(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"text": "a b", "meta": {"kind": "x"}, "label": 1})
        + "\n\n"
        + json.dumps({"text": "c"})
        + "\n"
    )
    prompts = read_prompts(path)
    assert [p["text"] for p in prompts] == ["a b", "c"]
    assert prompts[0]["meta"] == {"kind": "x", "label": 1}
    assert prompts[1]["meta"] == {}


def test_txt_is_one_prompt_per_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first line\n\nsecond line\n")
    assert [p["text"] for p in read_prompts(path)] == ["first line", "second line"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "p.jsonl:2: not valid JSON"),
        ('{"meta": {}}', 'p.jsonl:2: no "text" field'),
        ('{"text": "   "}', "p.jsonl:2: empty prompt"),
        ('{"text": 5}', 'p.jsonl:2: "text" is not a string'),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    with pytest.raises(MalformedPromptError, match=message) as info:
        read_prompts(path)
    assert info.value.line == 2


def test_missing_file(tmp_path):
    with pytest.raises(PromptsFileNotFoundError, match="prompts file not found"):
        read_prompts(tmp_path / "nope.jsonl")


def _prompts(*texts):
    from lens_cache.prompts import make_prompt

    return [make_prompt(t, {"i": i}) for i, t in enumerate(texts)]


def test_max_chars_splits_and_min_chars_filters():
    out = select_prompts(_prompts("abcdefghij", "xy"), max_chars=4, min_chars=3)
    assert [p["text"] for p in out] == ["abcd", "efgh"]
    assert [p["meta"]["chunk"] for p in out] == [0, 1]


def test_raw_ignores_char_limits():
    out = select_prompts(_prompts("abcdefghij", "xy"), max_chars=4, min_chars=3, raw=True)
    assert [p["text"] for p in out] == ["abcdefghij", "xy"]


def test_shuffle_is_seeded_and_n_samples_cuts():
    texts = [f"prompt {i}" for i in range(30)]
    a = select_prompts(_prompts(*texts), shuffle=True, seed=3, n_samples=5)
    b = select_prompts(_prompts(*texts), shuffle=True, seed=3, n_samples=5)
    c = select_prompts(_prompts(*texts), shuffle=True, seed=4, n_samples=5)
    assert [p["text"] for p in a] == [p["text"] for p in b] != [p["text"] for p in c]
    assert len(a) == 5


def test_duplicates_collapse_to_the_first_and_nothing_left_is_an_error():
    first, again, other = _prompts("same", "same", "other")
    first["meta"], again["meta"] = {"n": 1}, {"n": 2}
    assert select_prompts([first, again, other]) == [first, other]
    with pytest.raises(PromptsError, match="no prompts left"):
        select_prompts(_prompts("ab"), min_chars=10)


def test_without_shuffle_the_source_is_read_only_as_far_as_needed():
    read = []

    def source():
        for i in range(1000):
            read.append(i)
            yield from _prompts(f"prompt {i // 2}")  # each text twice: duplicates are skipped

    chosen = select_prompts(source(), n_samples=3, max_chars=100, min_chars=2)
    assert [p["text"] for p in chosen] == ["prompt 0", "prompt 1", "prompt 2"]
    assert len(read) == 5  # the sixth row, a duplicate of the third prompt, is never asked for
    assert len(select_prompts(source(), n_samples=3, shuffle=True)) == 3
    assert len(read) == 5 + 1000
