"""What the model predicts: the final norm and unembedding, per-token loss, top-k and the logit
lens, each checked against a plain transformers forward of the same weights and ids."""

import json

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache.errors import ActivationsMissingError, SettingsMismatchError, UnsupportedModelError
from lens_cache.predictions import FIELDS
from lens_cache.prompts import prompt_hash
from tests.helpers import run_cli

TEXT = "The cat sat on the mat because the mat was warm."


@pytest.fixture(params=["gpt2", "gqa"])
def pair(request):
    """(the tiny model loaded as TransformerLens, the same weights as a plain HF model)."""
    from transformers import AutoModelForCausalLM

    directory = request.getfixturevalue(f"{request.param}_dir")
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return request.getfixturevalue(f"{request.param}_model"), hf


def hf_readout(hf, ids: list[int]):
    """HF's logits, and per layer its final norm + lm_head applied to that layer's output
    (the last hidden state already has the final norm applied: use the logits there)."""
    base = getattr(hf, "transformer", None) or hf.model
    norm = getattr(base, "ln_f", None) or base.norm
    with torch.inference_mode():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        hidden = out.hidden_states[1:]
        lens = [hf.lm_head(norm(h))[0] for h in hidden[:-1]] + [out.logits[0]]
    return out.logits[0].float(), [x.float() for x in lens]


def test_final_norm_and_unembed_give_the_models_own_readout(pair):
    model, hf = pair
    ids = model.tokenize(TEXT)
    _, reference = hf_readout(hf, ids)
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    cache = model.run(torch.tensor([ids]), names, last_layer=model.n_layers - 1)
    for layer, name in enumerate(names):
        with torch.inference_mode():
            logits = model.unembed(model.final_norm(cache[name]))[0]
        assert logits.shape == (len(ids), model.d_vocab)
        # 3.x centres the unembedding: logits move by a constant per row, log-probs do not
        torch.testing.assert_close(
            logits.log_softmax(-1), reference[layer].log_softmax(-1), atol=1e-5, rtol=0
        )


MIXED = [
    "Hi",
    TEXT,
    "def add(a, b):\n    return a + b\n",
    "A longer prompt: " + "one two three four five six seven eight nine ten. " * 6,
]
K = 5


def _export(model, path, **kw):
    from lens_cache import export

    kw = {"prompts": MIXED, "hooks": ["logits", "logit_lens"], "top_k": K, **kw}
    export(model, save_path=path, index_html=False, quiet=True, **kw)
    return lens_cache.open(path)


def _check_readout(stored, logits: torch.Tensor, ids: list[int]) -> None:
    """Stored fields against a full-vocabulary reference: cross-entropy, entropy, a full sort.
    Ties aside: a stored id must hold the value of its place in the full sort, and a rank must
    fall within the run of values equal to the actual token's."""
    logprobs = logits.log_softmax(-1)
    targets = torch.tensor(ids[1:])
    loss = torch.nn.functional.cross_entropy(logits[:-1], targets, reduction="none")
    np.testing.assert_allclose(stored["loss"][:-1], loss.numpy(), atol=1e-4, rtol=0)
    assert np.isnan(stored["loss"][-1]) and stored["target_rank"][-1] == -1
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    np.testing.assert_allclose(stored["entropy"], entropy.numpy(), atol=1e-4, rtol=0)
    ordered = logprobs.sort(-1, descending=True).values[:, :K]
    at_ids = logprobs.gather(-1, torch.from_numpy(stored["top_ids"]).long())
    np.testing.assert_allclose(at_ids.numpy(), ordered.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(stored["top_logprobs"], ordered.numpy(), atol=1e-4, rtol=0)
    assert all(len(set(row)) == K for row in stored["top_ids"].tolist())
    actual = logprobs[:-1].gather(-1, targets[:, None])
    above = (logprobs[:-1] > actual + 1e-5).sum(-1).numpy()
    not_below = (logprobs[:-1] >= actual - 1e-5).sum(-1).numpy() - 1
    assert (above <= stored["target_rank"][:-1]).all()
    assert (stored["target_rank"][:-1] <= not_below).all()


def test_predictions_and_lens_match_transformers(pair, tmp_path):
    model, hf = pair
    store = _export(model, tmp_path, batch_size=len(MIXED))
    for text in MIXED:
        ids = model.tokenize(text)
        logits, lens = hf_readout(hf, ids)
        predicted = store.predictions(model.name, text)
        assert predicted["top_ids"].shape == (len(ids), K)
        _check_readout(predicted, logits, ids)
        stored_lens = store.logit_lens(model.name, text)
        assert stored_lens["loss"].shape == (model.n_layers, len(ids))
        for layer in range(model.n_layers - 1):
            picked = {name: value[layer] for name, value in stored_lens.items()}
            _check_readout(picked, lens[layer], ids)
        last = store.logit_lens(model.name, text, layers=-1)
        for name, value in predicted.items():  # the lens at the last layer is the prediction
            np.testing.assert_array_equal(last[name][0], value)


def test_batched_and_chunked_equal_single_prompt(tiny_model, tmp_path):
    batched = _export(tiny_model, tmp_path / "batched", batch_size=len(MIXED))
    # ~1 KB per chunk: one vocabulary row at a time, one prompt per batch
    single = _export(tiny_model, tmp_path / "single", batch_size=1, max_batch_mb=0.001)
    for text in MIXED:
        pairs = [
            (batched.predictions(tiny_model.name, text), single.predictions(tiny_model.name, text)),
            (batched.logit_lens(tiny_model.name, text), single.logit_lens(tiny_model.name, text)),
        ]
        for a, b in pairs:
            assert a.keys() == b.keys() == set(FIELDS)
            for name in FIELDS:
                np.testing.assert_allclose(a[name], b[name], atol=1e-5, rtol=0)


def test_mean_loss_in_prompt_records(gpt2_model, tmp_path):
    store = _export(gpt2_model, tmp_path, hooks=["pattern", "logits"])
    records = store.prompts(gpt2_model.name)
    assert len(records) == len(MIXED)
    for record in records:
        loss = store.predictions(gpt2_model.name, record["hash"])["loss"]
        assert record["mean_loss"] == pytest.approx(float(np.nanmean(loss)), abs=1e-6)
        assert record["lens_cache"]["predictions"] == ["logits"]
    with pytest.raises(ActivationsMissingError, match="--hooks pattern,logits,logit_lens"):
        store.logit_lens(gpt2_model.name, MIXED[1])


def test_missing_predictions_name_the_command(gpt2_model, tmp_path):
    store = _export(gpt2_model, tmp_path, hooks=["pattern"])
    with pytest.raises(ActivationsMissingError, match="--hooks pattern,logits .*--force"):
        store.predictions(gpt2_model.name, MIXED[1])
    assert "mean_loss" not in store.prompts(gpt2_model.name)[0]
    with pytest.raises(SettingsMismatchError, match="hooks: stored pattern, asked pattern logits"):
        _export(gpt2_model, tmp_path, hooks=["pattern", "logits"])


@pytest.mark.parametrize("top_k", ["0", "513"])
def test_bad_top_k_is_one_line_and_writes_nothing(gpt2_dir, cli_env, tmp_path, top_k):
    store = tmp_path / "store"
    args = ["-m", str(gpt2_dir), "-s", str(store), "--hooks", "logits", "--top-k", top_k]
    result = run_cli([*args, "--no-index-html", "--quiet"], cli_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --top-k"), result.stderr
    assert not store.exists() or not any(store.iterdir())


def test_logit_lens_without_a_final_norm_is_a_named_error(gpt2_dir, tmp_path):
    from lens_cache import export
    from lens_cache.models import load_model

    model = load_model(str(gpt2_dir), device="cpu")
    del model.model.ln_final  # an architecture whose final norm the adapter cannot find
    with pytest.raises(UnsupportedModelError, match="no ln_final module"):
        export(model, prompts=MIXED, save_path=tmp_path, hooks=["logit_lens"], quiet=True)
    assert not any(tmp_path.iterdir())


def test_cache_info_and_verify_know_the_prediction_files(gpt2_model, tmp_path, capsys):
    from lens_cache import cli
    from lens_cache.cli import cache

    _export(gpt2_model, tmp_path, hooks=["logits", "logit_lens"], prompts=MIXED[:2])
    folder = tmp_path / gpt2_model.name / "prompts" / prompt_hash(MIXED[1])
    args = ["-s", str(tmp_path)]
    assert cli.run_cli(cache.main, ["info", "--json", *args]) == 0
    row = json.loads(capsys.readouterr().out)["models"][gpt2_model.name]
    files = [*tmp_path.rglob("predictions.safetensors"), *tmp_path.rglob("logit_lens.safetensors")]
    assert len(files) == 4 and row["predictions"] == sum(p.stat().st_size for p in files)
    assert cli.run_cli(cache.main, ["verify", *args]) == 0
    capsys.readouterr()
    (folder / "logit_lens.safetensors").unlink()
    blob = (folder / "predictions.safetensors").read_bytes()
    (folder / "predictions.safetensors").write_bytes(blob[: len(blob) // 2])
    assert cli.run_cli(cache.main, ["verify", *args]) == 1
    found = sorted(line.split("\t")[:2] for line in capsys.readouterr().out.splitlines())
    assert found == [
        ["corrupt", str(folder / "predictions.safetensors")],
        ["missing", str(folder / "logit_lens.safetensors")],
    ]


def test_pooled_dataset_has_a_mean_loss_column(gpt2_model, tmp_path):
    import pyarrow.parquet as pq

    store = _export(gpt2_model, tmp_path, hooks=["resid_post", "logits"], pool="last_token")
    (folder,) = (tmp_path / gpt2_model.name / "pooled").iterdir()
    table = pq.read_table(folder)
    hashes, means = table.column("hash").to_pylist(), table.column("mean_loss").to_pylist()
    losses = dict(zip(hashes, means, strict=True))
    assert len(losses) == len(MIXED)
    for text in MIXED:
        loss = store.predictions(gpt2_model.name, text)["loss"]
        assert losses[prompt_hash(text)] == pytest.approx(float(np.nanmean(loss)), abs=1e-6)


def test_a_prompt_run_in_layer_groups_reads_the_same(gpt2_model, tmp_path):
    """A prompt over --max-batch-mb runs one layer group per pass: its lens is gathered over
    the groups and its prediction read in the last one, as in one pass."""
    hooks = ["pattern", "logits", "logit_lens"]
    whole = _export(gpt2_model, tmp_path / "whole", hooks=hooks, prompts=MIXED[3:])
    grouped = _export(
        gpt2_model, tmp_path / "grouped", hooks=hooks, prompts=MIXED[3:], max_batch_mb=0.1
    )
    name, text = gpt2_model.name, MIXED[3]
    for read in (lambda s: s.predictions(name, text), lambda s: s.logit_lens(name, text)):
        a, b = read(whole), read(grouped)
        for field in FIELDS:
            np.testing.assert_allclose(a[field], b[field], atol=1e-5, rtol=0)


@pytest.mark.parametrize("max_batch_mb", [1024, 0.1], ids=["one pass", "layer groups"])
def test_lens_layers_read_out_only_those_layers(pair, tmp_path, max_batch_mb):
    """`lens_layers` picks which stored layers the logit lens reads out, in one pass and in
    layer groups alike; each read-out layer still equals transformers' own."""
    model, hf = pair
    store = _export(
        model,
        tmp_path,
        hooks=["pattern", "logits", "logit_lens"],
        prompts=MIXED[3:],
        lens_layers=[0],
        max_batch_mb=max_batch_mb,
    )
    text = MIXED[3]
    ids = model.tokenize(text)
    logits, lens = hf_readout(hf, ids)
    stored = store.logit_lens(model.name, text)
    assert stored["loss"].shape == (1, len(ids))  # not the last layer, read for `logits`
    _check_readout({name: value[0] for name, value in stored.items()}, lens[0], ids)
    _check_readout(store.predictions(model.name, text), logits, ids)
    assert store.stored_layers(model.name, text) == list(range(model.n_layers))
    assert "--lens-layers 0 " in store.export_command(model.name)


def test_lens_layers_outside_layers_or_without_the_lens_are_refused(gpt2_dir, cli_env, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text(TEXT + "\n")
    for extra, said in (
        (["--hooks", "pattern,logit_lens", "--layers", "0", "--lens-layers", "1"], "not among"),
        (["--hooks", "pattern", "--lens-layers", "0"], "needs logit_lens"),
    ):
        args = ["-m", str(gpt2_dir), "-s", str(tmp_path / "s"), "-p", str(prompts), *extra]
        result = run_cli([*args, "--quiet"], cli_env)
        assert result.returncode != 0 and said in result.stderr, result.stderr
        assert not (tmp_path / "s").exists()
