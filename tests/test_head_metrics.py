"""Export kind head_metrics: every head's attention metrics, taken from the patterns in memory
and stored without them. Checked against the viewer's metrics of the same prompts' stored
patterns and against a float64 computation written here from the metrics' definitions."""

import json
import math
import re

import numpy as np
import pytest

import lens_cache
from lens_cache.layout import HEAD_METRICS_NAME, NPZ_NAME
from lens_cache.prompts import prompt_hash
from lens_cache.viewer import metrics as M
from tests.helpers import npz_layer, read_safetensors, safetensors_metadata

PROMPTS = [
    "The lighthouse keeper kept two logbooks, one for ships and one for birds.",
    "a b a b c a b a b c",
    "Heat rises; the cooler surface sinks.",
]


@pytest.fixture(scope="module")
def stores(gpt2_model, tmp_path_factory) -> dict:
    """The same prompts exported three ways: metrics only, metrics beside stored patterns, and
    metrics only with every prompt over the byte cap (captured in layer groups)."""

    def export(name, hooks, **kw):
        path = tmp_path_factory.mktemp(name)
        kw.update(save_path=path, hooks=hooks, quiet=True, index_html=False)
        lens_cache.export(gpt2_model, prompts=PROMPTS, **kw)
        return path

    return {
        "metrics": export("metrics", ["head_metrics"]),
        "patterns": export("patterns", ["pattern", "head_metrics"]),
        "groups": export("groups", ["head_metrics"], batch_size=1, max_batch_mb=0.001),
    }


def _stored(save, model: str, h: str) -> tuple[np.ndarray, list[int], list[str]]:
    """`([layers, heads, metrics], layers, names)` read from the file with safetensors."""
    path = save / model / "prompts" / h / HEAD_METRICS_NAME
    tensors = read_safetensors(path)
    names = safetensors_metadata(path)["metrics"]
    return tensors["metrics"].numpy(), tensors["layers"].tolist(), names


def _brute_force(a: np.ndarray, tokens: list[str]) -> list[float]:
    """One head's metrics in METRIC_NAMES order, in float64, row by row from the definitions."""
    a = a.astype(np.float64)
    t = len(tokens)
    rows = [-sum(x * math.log(x) for x in a[i, : i + 1] if x > 0) for i in range(t)]
    dup, ind = [], []
    for i in range(t):
        same = [j for j in range(i) if tokens[j] == tokens[i]]
        if same:
            dup.append(sum(a[i, j] for j in same))
        targets = {j + 1 for j in same if j + 1 < i}
        if targets:
            ind.append(sum(a[i, k] for k in targets))
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return [
        mean(rows),
        mean([rows[i] / math.log(i + 1) for i in range(1, t)]),
        mean([a[i, 0] for i in range(t)]),
        mean([a[i, i - 1] for i in range(1, t)]),
        mean([a[i, i] for i in range(t)]),
        mean(dup),
        mean(ind),
        mean([max(a[i, : i + 1]) for i in range(t)]),
    ]


@pytest.mark.parametrize("text", PROMPTS)
def test_stored_metrics_equal_viewer_and_brute_force(stores, gpt2_model, text):
    model, h = gpt2_model.name, prompt_hash(text)
    values, layers, names = _stored(stores["metrics"], model, h)
    assert names == '["' + '", "'.join(M.METRIC_NAMES) + '"]'
    assert layers == list(range(gpt2_model.n_layers))
    assert values.dtype == np.float32 and values.shape == (len(layers), 4, len(M.METRIC_NAMES))
    tokens = lens_cache.open(stores["patterns"]).prompt(model, text)["tokens"]
    for k, layer in enumerate(layers):
        pattern = npz_layer(stores["patterns"], model, h, layer)
        viewer = M.head_metrics(pattern, tokens)
        for m, name in enumerate(M.METRIC_NAMES):
            np.testing.assert_allclose(values[k, :, m], viewer[name], rtol=1e-6, atol=1e-7)
        brute = np.array([_brute_force(pattern[head], tokens) for head in range(4)])
        np.testing.assert_allclose(values[k], brute, rtol=1e-5, atol=1e-6)
    assert not np.isnan(values[:, :, M.METRIC_NAMES.index("induction")]).all() or "a b" not in text


@pytest.mark.parametrize("route", ["patterns", "groups"])
def test_every_route_stores_the_same_metrics(stores, gpt2_model, route):
    """Beside stored patterns, or captured in layer groups: the same numbers, and patterns only
    where they were asked for."""
    model = gpt2_model.name
    for text in PROMPTS:
        h = prompt_hash(text)
        ours, _, _ = _stored(stores["metrics"], model, h)
        theirs, _, _ = _stored(stores[route], model, h)
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-7)
        folder = stores[route] / model / "prompts" / h
        assert (folder / NPZ_NAME).is_file() == (route == "patterns")
    assert not (stores["metrics"] / model / "prompts" / h / NPZ_NAME).exists()


def _data_script(path):
    """The payload of a viewer data script ``LENS.f(<key>, <payload>);``."""
    text = path.read_text(encoding="utf-8")
    m = re.fullmatch(r"LENS\.(\w+)\((.*)\);\n", text, re.S)
    return json.loads("[" + m.group(2) + "]")[-1]


def test_the_viewer_shows_the_stored_metrics_without_patterns(gpt2_model, tmp_path):
    """A prompt stored with head_metrics alone: its page and the model's averages carry the
    stored numbers, and it has no pattern chunks to load."""
    hooks = ["head_metrics", "head_contributions"]
    lens_cache.export(gpt2_model, prompts=PROMPTS, save_path=tmp_path, hooks=hooks, quiet=True)
    model, data = gpt2_model.name, tmp_path / "viewer_data"
    (folder,) = [p for p in data.iterdir() if p.is_dir()]
    per_prompt = []
    for text in PROMPTS:
        values, layers, _ = _stored(tmp_path, model, prompt_hash(text))
        page = _data_script(folder / prompt_hash(text) / "prompt.js")
        assert page["layers"] == layers and page["patterns"] is False
        assert not list((folder / prompt_hash(text)).glob("L*.js"))
        for m, name in enumerate(M.METRIC_NAMES):
            shown = np.array(page["metrics"][name], dtype=np.float64)  # None -> NaN
            np.testing.assert_allclose(shown, values[:, :, m], atol=5.1e-6)  # shown to 5 decimals
        per_prompt.append(values.astype(np.float64))
    index = _data_script(data / "lens_index.js")
    (entry,) = [m for m in index["models"] if m["name"] == model]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.stack(per_prompt), axis=0)
    for m, name in enumerate(M.METRIC_NAMES):
        shown = np.array(entry["avg"][name], dtype=np.float64)
        np.testing.assert_allclose(
            shown, mean[:, :, m], atol=1.1e-5, err_msg=name
        )  # of rounded values
