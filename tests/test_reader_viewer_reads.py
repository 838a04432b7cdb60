"""What the viewer reads through `reader.Store`: a prompt's head contributions, its
top-example candidates and the vocabulary, each compared with the files read by the
safetensors and json libraries themselves."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

import lens_cache
from lens_cache.layout import HEADS_NAME, VOCAB_NAME, parse_heads_member

TEXTS = ["The cat sat on the mat.", "Short one."]


@pytest.fixture(scope="module")
def store(gpt2_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("reads")
    hooks = ["pattern", "logits", "head_contributions"]
    lens_cache.export(gpt2_model, TEXTS, save_path=path, hooks=hooks, quiet=True, index_html=False)
    return lens_cache.open(path)


def _files(store, model):
    for record in store.prompts(model):
        yield record["hash"], load_file(str(store.prompt_dir(model, record["hash"]) / HEADS_NAME))


def test_head_contributions_and_candidates_are_the_files_members(store, gpt2_model):
    model = gpt2_model.name
    for hash_, tensors in _files(store, model):
        members = {parse_heads_member(k): v for k, v in tensors.items()}
        read = store.head_contributions(model, hash_)
        layers = sorted({layer for layer, field in members if field == "dla"})
        assert read["layers"] == layers and layers
        for field in ("value_norms", "dla"):
            want = np.stack([members[(i, field)] for i in layers])
            np.testing.assert_array_equal(read[field], want)
        found = {(layer, by): cells for layer, by, cells in store.head_candidates(model, hash_)}
        tops = {(i, f[4:]): v for (i, f), v in members.items() if f.startswith("top_")}
        assert found.keys() == tops.keys() and tops
        for key, cells in tops.items():
            np.testing.assert_array_equal(found[key], cells)


def test_vocab_is_a_copy_and_follows_a_rewritten_file(store, gpt2_model):
    model = gpt2_model.name
    path = store.path / model / VOCAB_NAME
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    first = store.vocab(model)
    assert first == on_disk
    first[0] = "changed by a caller"
    assert store.vocab(model) == on_disk  # a caller's edit never reaches the next reader
    stat = path.stat()
    path.write_text(json.dumps(["x"] * len(on_disk)), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse clock: later
    try:
        assert store.vocab(model) == ["x"] * len(on_disk)
    finally:
        path.write_text(json.dumps(on_disk), encoding="utf-8")
