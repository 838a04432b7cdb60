"""Shared fixtures: tiny real TransformerLens models with random weights and a tokenizer
trained here, so no test needs the network.

Under TransformerLens 4 the models are Hugging Face models saved to a local directory and
booted with `TransformerBridge.boot_transformers`; under 3.x they are `HookedTransformer`s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the network fails fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.helpers import REPO  # noqa: E402

DEFAULT_PROMPTS = REPO / "data" / "prompts.jsonl"
N_CTX = 512


def _corpus() -> list[str]:
    with open(DEFAULT_PROMPTS, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained on our own prompts (any text encodes). Its pad id
    equals its BOS id, as in GPT-2, so padding can only be found by length."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=special, eos_token=special, pad_token=special
    )
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(path)  # TransformerLens needs a tokenizer loaded from a directory
    return path


def _save_hf(model, tokenizer_dir: Path, path: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def gqa_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A Llama-architecture model with grouped-query attention (4 query heads, 2 KV heads),
    random weights, saved as a local HF directory. (The directory name avoids 'llama':
    TransformerLens 3 guesses architectures from names.)"""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=N_CTX,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return _save_hf(LlamaForCausalLM(cfg), tokenizer_dir, tmp_path_factory.mktemp("tiny-gqa"))


@pytest.fixture(scope="session")
def gpt2_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A GPT-2-architecture model with random weights, saved as a local HF directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=512,
        n_positions=N_CTX,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _save_hf(GPT2LMHeadModel(cfg), tokenizer_dir, tmp_path_factory.mktemp("tiny-causal"))


def boot(path: Path):
    """Load a local HF directory as a TransformerLens model of the installed major."""
    from lens_cache.models import load_model

    return load_model(str(path), device="cpu")


@pytest.fixture(scope="module")
def hub():
    """A local Hub-compatible server for one test module (tests/hubserver.py)."""
    from tests.hubserver import TOKENS, HubServer

    with HubServer(tokens=TOKENS).start() as server:
        yield server


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for this test: two runs that must give the same bytes then do the
    same arithmetic. With two threads, how a reduction is split can change the last bit of a
    float from one run to the next when the machine is loaded (seen only with both suites
    running at once)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gpt2_model(gpt2_dir):
    return boot(gpt2_dir)


@pytest.fixture(scope="session")
def gqa_model(gqa_dir):
    return boot(gqa_dir)


@pytest.fixture(params=["gpt2", "gqa"])
def tiny_model(request):
    """Each tiny model in turn (GPT-2-like; Llama-like with grouped-query attention)."""
    return request.getfixturevalue(f"{request.param}_model")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where browser tests save screenshots: $LENS_CACHE_ARTIFACTS, else a temporary folder."""
    folder = os.environ.get("LENS_CACHE_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by Playwright (no browser download)."""
    from lens_cache.bench import CHROMIUM_FLAGS
    from tests.browser import missing_browser

    chromium = shutil.which("chromium")
    if chromium is None:
        missing_browser("chromium not found on PATH", "apt-get install chromium")
    try:
        from playwright import sync_api
    except ImportError:
        missing_browser("playwright is not installed", "pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        yield b
        b.close()


@pytest.fixture
def cli_env(tmp_path) -> dict:
    """Environment for CLI subprocesses: offline, converted models cached under tmp."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), LENS_CACHE_DIR=str(tmp_path / "store"))
    env.pop("LENS_CACHE_DEBUG", None)
    return env


PREDICTION_TEXT = "The cat sat on the mat. The cat sat on the mat again, and then it slept."


@pytest.fixture(scope="session")
def prediction_store(gpt2_model, gqa_model, tmp_path_factory) -> dict:
    """A real export of both tiny models with logits and the logit lens, its viewer built, and
    the stored values the browser tests compare the tooltips with."""
    import lens_cache
    from lens_cache import export
    from lens_cache.prompts import prompt_hash
    from lens_cache.viewer import write_viewer
    from tests.helpers import quiet

    path = tmp_path_factory.mktemp("pred-store")
    hooks = ["pattern", "logits", "logit_lens"]
    export(
        [gpt2_model, gqa_model],
        prompts=[PREDICTION_TEXT, "Short one."],
        save_path=path,
        hooks=hooks,
        quiet=True,
        index_html=False,
    )
    write_viewer(path, log=quiet)
    store = lens_cache.open(path)
    name = gpt2_model.name
    return {
        "save_path": path,
        "model": name,
        "hash": prompt_hash(PREDICTION_TEXT),
        "tokens": store.prompt(name, PREDICTION_TEXT)["tokens"],
        "pred": store.predictions(name, PREDICTION_TEXT),
        "lens": store.logit_lens(name, PREDICTION_TEXT),
        "vocab": store.vocab(name),
        "other": gqa_model.name,
        "other_loss": store.predictions(gqa_model.name, PREDICTION_TEXT)["loss"],
    }


HEADS_TEXTS = [
    PREDICTION_TEXT,
    "Short one.",
    # over THUMB_SIZE tokens: the prompt view draws thumbnails, value-weighted ones too
    " ".join(["the lighthouse keeper counted ships and birds"] * 8),
]


@pytest.fixture(scope="session")
def heads_store(gpt2_model, gqa_model, tmp_path_factory) -> dict:
    """A real export of both tiny models with head contributions, its viewer built; the store
    (`lens_cache.open`) is there to read the stored values the tests compare the page with."""
    import lens_cache
    from lens_cache.prompts import prompt_hash

    path = tmp_path_factory.mktemp("heads-store")
    hooks = ["pattern", "head_contributions"]
    models = [gpt2_model, gqa_model]
    lens_cache.export(models, prompts=HEADS_TEXTS, save_path=path, hooks=hooks, quiet=True)
    store = lens_cache.open(path)
    names = {"model": gpt2_model.name, "other": gqa_model.name}
    hashes = {"hash": prompt_hash(PREDICTION_TEXT), "long": prompt_hash(HEADS_TEXTS[2])}
    tokens = store.prompt(gpt2_model.name, PREDICTION_TEXT)["tokens"]
    return {"save_path": path, **names, **hashes, "tokens": tokens, "store": store}
