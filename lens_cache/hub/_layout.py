"""What a lens_cache dataset on the Hugging Face Hub holds, and where: no network in here.

    README.md                      dataset card: YAML `configs:` for `datasets`, then prose
    lens_cache.json                manifest: format, models, selection, every file's size+sha256
    data/prompts-00000-of-00001.parquet   model, hash, text, n_tokens, tokens, token_ids, meta,
                                          mean_loss, tokenizer_tokens
    data/models-00000-of-00001.parquet    model_name, n_layers, n_heads, d_model, config
    tensors/<model>/patterns/layer_05/head_03-00000.safetensors   {<hash>: [T, T]}
    tensors/<model>/resid_post/layer_05-00000.safetensors         {<hash>: [T, d_model]}
    tensors/<model>/predictions-00000.safetensors                 {<hash>/<field>: [T] or [T, k]}
    tensors/<model>/logit_lens/layer_05-00000.safetensors         {<hash>/<field>: [T] or [T, k]}
    tensors/<model>/hooks/layer_05-00000.safetensors              {<hash>/<site>: [T, ...]}
    tensors/<model>/hooks-00000.safetensors                       hooks outside the blocks
    models/<model>/vocab.json                                     a model's file, as stored
    pooled/<model>/resid_post-mean/data-00000-of-00001.parquet    a pooled dataset, as stored

One head (or one residual layer) is fetched without the rest. Each shard holds a contiguous run
of the model's prompts in hash order, at most `shard_max_bytes` of tensor data (doubled where a
kind would otherwise put `FOLDER_MAX_FILES` in a folder, or more than its share of
`REPO_MAX_FILES` in the repo); the boundaries depend only on the prompts' lengths, so every
head of a model shares them and a rerun builds the same bytes. Safetensors headers are
written in `lens_cache.hub._shards` (sorted keys, space-padded like `store.write_safetensors`),
which lets a shard be streamed to disk one prompt at a time and its size be known before it is
built.

Pooled datasets (`lens_cache.pooled`, kind `pooled`) go up whole and byte for byte: their rows
cover every prompt their model had when they were written, whatever the prompt or layer
selection. A manifest that lists one says format version 2, so an older lens_cache refuses the
dataset with "upgrade" instead of taking `pooled/` for a foreign file.

Per-prompt kinds (`PROMPT_KINDS`: `predictions`, `logit_lens`, `head_contributions`,
`pattern_topk`) are
store files of several small tensors per prompt (and per layer), each with its own dtype: a
shard holds one layer (or the whole file, for a kind without layers) of a run of prompts, under
`<hash>/<field>`, in the stored dtypes (never cast: ids are int32, and these files are small),
so a pull writes the prompt's file back bit for bit. Files of the model folder they need
(`vocab.json`, to read top-k ids) go as is to `models/<model>/`. A manifest that lists one says
format version 3.

The kind `hooks` (each prompt's `hooks.safetensors`: whatever hook points `--hooks` named) has
no fixed fields: its fields are the model's block sites (`attn.hook_z`, `hook_mlp_out`) at each
layer, and the hooks outside the blocks (`ln_final.hook_normalized`) under layer `None`. Which
it has come from the store's settings (`extra_hooks`) and go in the plan, as heads do for
patterns (`ModelPlan.tensors["hooks"] = {layer: sites}`); the manifest lists the hook names.
Like residuals they go in the push's `--dtype`. A manifest that lists them says format
version 4.
The kind `pattern_topk` (each prompt's `pattern_topk.safetensors`, `lens_cache.topk`) goes as
stored; its overview's `[heads, B, B]` are side fields. A manifest that lists it says format
version 5.
The kind `head_metrics` (each prompt's `head_metrics.safetensors`: `metrics` `[layers, heads,
metrics]` float32 and its `layers`) goes whole, as stored, in `tensors/<model>/head_metrics-*`:
no field runs over the tokens, so a pull checks each shape against the model's config instead
(`check`) before reading it, and the layers it names after. A manifest that lists it says format
version 6.
A new per-prompt kind is one more `PromptKind` in `PROMPT_KINDS`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lens_cache.errors import HubSelectionError, UnsafeRepoPathError
from lens_cache.layout import (
    DEFAULT_TOPK_KEYS,
    HEAD_CONTRIBUTIONS,
    HEAD_FIELDS,
    HEAD_METRICS,
    HEAD_METRICS_NAME,
    HEADS_NAME,
    HOOKS_NAME,
    LOGIT_LENS,
    LOGIT_LENS_NAME,
    LOGITS,
    METRICS_LAYERS_MEMBER,
    METRICS_MEMBER,
    PATTERN_TOPK,
    PATTERN_TOPK_NAME,
    POOLS,
    PREDICTION_FIELDS,
    PREDICTIONS_NAME,
    RESID_KINDS,
    TOP_BY,
    VOCAB_NAME,
    heads_member,
    hook_site,
    lens_member,
    parse_heads_member,
    parse_lens_member,
    parse_topk_member,
    site_hook,
    topk_member,
)

FORMAT = "lens_cache"
FORMAT_VERSION = 1  # of shards, and of manifests that list no pooled file
POOLED_FORMAT_VERSION = 2  # of manifests that list pooled files
MANIFEST_NAME = "lens_cache.json"
CARD_NAME = "README.md"
PROMPTS_TABLE = "data/prompts-00000-of-00001.parquet"
MODELS_TABLE = "data/models-00000-of-00001.parquet"
PROMPT_KINDS_FORMAT_VERSION = 3  # of manifests that list a per-prompt kind or a model file
PATTERNS = "patterns"
PREDICTIONS = "predictions"
HOOKS = "hooks"  # any other per-token hook points (hooks.safetensors)
HOOKS_FORMAT_VERSION = 4  # of manifests that list hook points
TOPK_FORMAT_VERSION = 5  # of manifests that list the compact pattern (pattern_topk)
HEAD_METRICS_FORMAT_VERSION = 6  # of manifests that list head_metrics
NEWEST_FORMAT_VERSION = HEAD_METRICS_FORMAT_VERSION  # the newest manifest this module reads
POOLED = "pooled"
MODEL_FILE = "model_file"  # the manifest's kind of a file of a model's folder (vocab.json)
# The Hub refuses a folder of 10,000 files or more: a push plans fewer in each, with room to
# spare for the model folder's subfolders (`lens_cache.hub._shards.max_runs`).
FOLDER_MAX_FILES = 9_000
# and advises fewer than 100,000 files in a repo: a push plans at most this many shards
# (with 100 files a commit, at most 900 commits of shards, however many prompts)
REPO_MAX_FILES = 90_000
_ST = ".safetensors"


@dataclass(frozen=True)
class PromptKind:
    """A store file of several small tensors per prompt, sent as shards of `<hash>/<field>`.

    Args:
        name (`str`): the `--kinds` name and the repo folder (`tensors/<model>/<name>`).
        export_kind (`str`): what the exporter's `--hooks` (and `ExportSettings.predictions`)
            call it.
        filename (`str`): the prompt folder's file.
        capture_field (`str`): the `lens_cache.capture.Capture` field that `store` writes it from.
        fields (`tuple[str]`): the tensors each prompt (at each layer) has.
        member (`Callable`): `(layer, field) -> member name` in the file (layer `None` for a
            kind without layers).
        parse (`Callable`): the inverse, `None` for a name that is not a member.
        layered (`bool`): whether `--layers` selects its members.
        model_files (`tuple[str]`): files of the model's folder that go along with it.
        position_axis (`int | None`): the axis of every field that runs over the prompt's
            tokens (0 for `[T]` and `[T, k]`; 1 for `[heads, T]`), checked on pull; `None`
            when none does (then `check` bounds each shape).
        side_fields (`tuple[str]`): tensors a prompt may also have, sent when it has them,
            whose shape does not run over its tokens (head_contributions' top-example
            candidates `[heads, k, 3]`; those by attention need patterns).
        named (`bool`): its fields differ by model (the hook points an export stored): `fields`
            is empty, the store's settings (`extra_hooks`) and the manifest list the members
            by name, and the plan says which fields each layer has (layer `None`: members
            outside the blocks, which go whatever `--layers` says).
        cast (`bool`): sent in the push's `--dtype`, as residuals are (otherwise as stored).
        format_version (`int`): the oldest manifest format that knows the kind.
        check (`Callable`, *optional*): `(field, shape, model cfg) -> bool`, whether a pulled
            field's shape fits the model, asked before the field is read; and
            `(fields, model cfg) -> bool` for `check_values`, asked once they are read.
        check_metadata (`Callable`, *optional*): `(file metadata) -> bool`, whether a
            prompt's file says what a pull writes back (asked on push: a pull cannot see it).
    """

    name: str
    export_kind: str
    filename: str
    capture_field: str
    fields: tuple[str, ...]
    member: Callable[[int | None, str], str]
    parse: Callable[[str], tuple[int | None, str] | None]
    layered: bool
    model_files: tuple[str, ...] = ()
    position_axis: int | None = 0
    side_fields: tuple[str, ...] = ()
    named: bool = False
    cast: bool = False
    format_version: int = PROMPT_KINDS_FORMAT_VERSION
    check: Callable[[str, tuple[int, ...], dict], bool] | None = None
    check_values: Callable[[dict, dict], bool] | None = None
    check_metadata: Callable[[dict], bool] | None = None


def _prediction_field(name: str) -> tuple[None, str] | None:
    return (None, name) if name in PREDICTION_FIELDS else None


_METRICS_FIELDS = (METRICS_LAYERS_MEMBER, METRICS_MEMBER)


def _metrics_field(name: str) -> tuple[None, str] | None:
    return (None, name) if name in _METRICS_FIELDS else None


def _metrics_shape(name: str, shape: tuple[int, ...], cfg: dict) -> bool:
    """`metrics` is `[layers, n_heads, metrics]` and `layers` `[layers]`, at most the model's
    layers: a shard cannot make a pull allocate more than the model's metrics."""
    from lens_cache.attention_metrics import METRIC_NAMES

    n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    if name == METRICS_LAYERS_MEMBER:
        return len(shape) == 1 and 0 < shape[0] <= n_layers
    return (
        len(shape) == 3
        and 0 < shape[0] <= n_layers
        and shape[1:]
        == (
            n_heads,
            len(METRIC_NAMES),
        )
    )


def _metrics_names(metadata: dict) -> bool:
    """The file's metrics are named, in order, as this version names them (a pull writes those
    names back: shards carry no file metadata)."""
    from lens_cache.attention_metrics import METRIC_NAMES

    try:
        return json.loads(metadata.get("metrics", "null")) == list(METRIC_NAMES)
    except (TypeError, ValueError):
        return False


def _metrics_values(fields: dict, cfg: dict) -> bool:
    """As many distinct layers of the model as rows of metrics."""
    layers = fields[METRICS_LAYERS_MEMBER].tolist()
    rows = fields[METRICS_MEMBER].shape[0]
    inside = all(0 <= x < int(cfg["n_layers"]) for x in layers)
    return inside and len(set(layers)) == len(layers) == rows


def _hook_member(layer: int | None, site: str) -> str:
    return site_hook(site, layer)


def _parse_hook_member(name: str) -> tuple[int | None, str]:
    site, layer = hook_site(name)
    return layer, site


def hook_fields(names) -> dict[int | None, tuple[str, ...]]:
    """Hook names -> `{layer: sites}` (`None`: hooks outside the blocks), sites in the order
    given: `["blocks.0.hook_mlp_out", "ln_final.hook_normalized"]` ->
    `{0: ("hook_mlp_out",), None: ("ln_final.hook_normalized",)}`."""
    fields: dict[int | None, list[str]] = {}
    for name in names:
        site, layer = hook_site(name)
        fields.setdefault(layer, []).append(site)
    return {layer: tuple(sites) for layer, sites in fields.items()}


PROMPT_KINDS = {
    PREDICTIONS: PromptKind(
        PREDICTIONS,
        LOGITS,
        PREDICTIONS_NAME,
        "predictions",
        PREDICTION_FIELDS,
        lambda layer, field: field,
        _prediction_field,
        layered=False,
        model_files=(VOCAB_NAME,),
    ),
    LOGIT_LENS: PromptKind(
        LOGIT_LENS,
        LOGIT_LENS,
        LOGIT_LENS_NAME,
        "logit_lens",
        PREDICTION_FIELDS,
        lens_member,
        parse_lens_member,
        layered=True,
        model_files=(VOCAB_NAME,),
    ),
    HEAD_CONTRIBUTIONS: PromptKind(
        HEAD_CONTRIBUTIONS,
        HEAD_CONTRIBUTIONS,
        HEADS_NAME,
        "contributions",
        HEAD_FIELDS,
        heads_member,
        parse_heads_member,
        layered=True,
        position_axis=1,
        side_fields=tuple(f"top_{by}" for by in TOP_BY),
    ),
    # the compact pattern (lens_cache.topk): the overview's blocks do not run over the tokens
    PATTERN_TOPK: PromptKind(
        PATTERN_TOPK,
        PATTERN_TOPK,
        PATTERN_TOPK_NAME,
        "topk",
        ("keys", "values", "rest"),
        topk_member,
        parse_topk_member,
        layered=True,
        position_axis=1,
        side_fields=("overview_max", "overview_sum"),
        format_version=TOPK_FORMAT_VERSION,
    ),
    # per-head statistics (lens_cache.attention_metrics): nothing runs over the tokens
    HEAD_METRICS: PromptKind(
        HEAD_METRICS,
        HEAD_METRICS,
        HEAD_METRICS_NAME,
        "head_metrics",
        _METRICS_FIELDS,
        lambda layer, field: field,
        _metrics_field,
        layered=False,
        position_axis=None,
        format_version=HEAD_METRICS_FORMAT_VERSION,
        check=_metrics_shape,
        check_values=_metrics_values,
        check_metadata=_metrics_names,
    ),
    HOOKS: PromptKind(
        HOOKS,
        HOOKS,
        HOOKS_NAME,
        "hooks",
        (),
        _hook_member,
        _parse_hook_member,
        layered=True,
        named=True,
        cast=True,
        format_version=HOOKS_FORMAT_VERSION,
    ),
}
MODEL_FILES = tuple(sorted({f for k in PROMPT_KINDS.values() for f in k.model_files}))
KINDS = (PATTERNS, *RESID_KINDS, *PROMPT_KINDS)  # tensor kinds, sharded by prompt
SELECTABLE_KINDS = (*KINDS, POOLED)  # what --kinds takes
KIND_ALIASES = {"pattern": PATTERNS, LOGITS: PREDICTIONS}  # the exporter's spellings
# What a selected layer does not apply to: these go whole.
WHOLE_KINDS = (POOLED, *(k for k, v in PROMPT_KINDS.items() if not v.layered))

# Model names and prompt hashes become directory names on pull: keep them to one plain path
# component (no separators, no leading dot) and free of glob characters (allow_patterns).
_MODEL_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}"
_HASH_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # urlsafe base64 of an md5, padding stripped
_LAYERED = "|".join([*RESID_KINDS, *(k for k, v in PROMPT_KINDS.items() if v.layered)])
# kinds with a shard outside layers: those without layers, and hook points outside the blocks
_WHOLE = "|".join(k for k, v in PROMPT_KINDS.items() if not v.layered or v.named)
_TENSOR_RE = re.compile(
    rf"tensors/(?P<model>{_MODEL_RE})/(?:patterns/layer_(?P<pl>\d+)/head_(?P<head>\d+)"
    rf"|(?P<kind>{_LAYERED})/layer_(?P<rl>\d+)|(?P<whole>{_WHOLE}))-(?P<index>\d{{5}})"
    r"\.safetensors"
)
_MODEL_FILE_RE = re.compile(
    rf"models/(?P<model>{_MODEL_RE})/(?P<name>{'|'.join(map(re.escape, MODEL_FILES))})"
)
_DATA_RE = re.compile(r"data/(?:prompts|models)-\d{5}-of-\d{5}\.parquet")
_VIEWER_RE = re.compile(r"viewer/(?:index|prompts-\d{5})\.json")  # the hosted viewer's
# A pooled dataset's folder is `<hook>-<pool>` (`lens_cache.layout.pooled_name`).
_POOLED_NAME_RE = re.compile(rf"(?P<hook>{'|'.join(RESID_KINDS)})-(?P<pool>{'|'.join(POOLS)})")
_POOLED_FILE_RE = re.compile(r"data-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet")
_POOLED_RE = re.compile(
    rf"pooled/(?P<model>{_MODEL_RE})/(?P<name>{_POOLED_NAME_RE.pattern})/"
    rf"(?P<file>{_POOLED_FILE_RE.pattern})"
)


# --- names and paths -------------------------------------------------------------------------


def check_model_name(name: str, where: str = "the store") -> str:
    """Refuse a model name that is not one plain path component.

    Raises:
        UnsafeRepoPathError: the name has a separator, a leading dot, or unusual characters.
    """
    if not isinstance(name, str) or not re.fullmatch(_MODEL_RE, name):
        raise UnsafeRepoPathError(
            f"model name {name!r} in {where} is not a plain directory name (letters, digits, "
            "'.', '_', '+', '-'; no path separators); refusing it",
            str(name),
        )
    return name


def check_hash(hash_: str, where: str) -> str:
    """Refuse a prompt hash that is not pattern-lens's 22-character urlsafe base64."""
    if not isinstance(hash_, str) or not _HASH_RE.fullmatch(hash_):
        raise UnsafeRepoPathError(
            f"prompt hash {hash_!r} in {where} is not a 22-character urlsafe base64 name; "
            "refusing it",
            str(hash_),
        )
    return hash_


def check_repo_path(path: str) -> str:
    """Refuse a repo path that could escape a directory or is not part of our layout.

    Raises:
        UnsafeRepoPathError: absolute, `..`, backslashes, empty parts, or an unknown file.
    """
    parts = path.split("/") if isinstance(path, str) else [""]
    if (
        not isinstance(path, str)
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
        or re.match(r"[A-Za-z]:", path)
    ):
        raise UnsafeRepoPathError(
            f"the manifest lists {path!r}, which would escape the target directory; "
            "refusing this repo",
            str(path),
        )
    known = path in (CARD_NAME,) or is_layout_path(path)
    if not known:
        raise UnsafeRepoPathError(
            f"the manifest lists {path!r}, which is not a lens_cache file; refusing this repo",
            path,
        )
    return path


def is_layout_path(path: str) -> bool:
    """Whether a repo path is one of ours (so a new push may replace or delete it)."""
    layout = (_DATA_RE, _TENSOR_RE, _POOLED_RE, _MODEL_FILE_RE, _VIEWER_RE)
    return any(r.fullmatch(path) for r in layout)


def is_viewer_path(path: str) -> bool:
    """Whether a repo path is one of the hosted viewer's files (`hub._viewer_index`)."""
    return _VIEWER_RE.fullmatch(path) is not None


def _layer_dir(layer: int) -> str:
    return f"layer_{layer:02d}"


def tensor_path(model: str, kind: str, layer: int | None, head: int | None, index: int) -> str:
    """The repo path of one shard (`layer` is `None` for a per-prompt kind without layers)."""
    if kind == PATTERNS:
        return f"tensors/{model}/{PATTERNS}/{_layer_dir(layer)}/head_{head:02d}-{index:05d}{_ST}"
    if layer is None:
        return f"tensors/{model}/{kind}-{index:05d}{_ST}"
    return f"tensors/{model}/{kind}/{_layer_dir(layer)}-{index:05d}{_ST}"


def model_file_path(model: str, name: str) -> str:
    """The repo path of a file of a model's folder (`vocab.json`)."""
    return f"models/{model}/{name}"


def is_model_file_path(path: str) -> bool:
    return bool(_MODEL_FILE_RE.fullmatch(path))


def manifest_version(kinds: set[str], pooled: bool) -> int:
    """The oldest format version that can read a dataset with these tensor kinds (and pooled
    files or not): older versions then refuse it with "upgrade"."""
    if kinds & set(PROMPT_KINDS):
        return max(PROMPT_KINDS[k].format_version for k in kinds & set(PROMPT_KINDS))
    return POOLED_FORMAT_VERSION if pooled else FORMAT_VERSION


def pooled_path(model: str, name: str, filename: str) -> str:
    """The repo path of one file of a pooled dataset (`name` is `<hook>-<pool>`)."""
    return f"{POOLED}/{model}/{name}/{filename}"


def split_pooled_name(name: str) -> tuple[str, str] | None:
    """`"resid_post-mean_real"` -> `("resid_post", "mean_real")`; `None` for any other name."""
    m = _POOLED_NAME_RE.fullmatch(name) if isinstance(name, str) else None
    return (m["hook"], m["pool"]) if m else None


def pooled_files_complete(filenames: list[str]) -> bool:
    """Whether names are exactly `data-00000-of-NNNNN.parquet` ... `data-<N-1>-of-NNNNN`."""
    found = [_POOLED_FILE_RE.fullmatch(f) for f in filenames]
    if not found or not all(found):
        return False
    counts = {int(m["count"]) for m in found}
    indexes = sorted(int(m["index"]) for m in found)
    return len(counts) == 1 and indexes == list(range(counts.pop()))


def pooled_entries(manifest: dict) -> dict[tuple[str, str], list[dict]]:
    """`{(model, "<hook>-<pool>"): manifest entries}` of a validated manifest, paths sorted."""
    found: dict[tuple[str, str], list[dict]] = {}
    for entry in sorted(manifest["files"], key=lambda e: e["path"]):
        if entry["path"].startswith(f"{POOLED}/"):
            key = (entry["model"], f"{entry['hook']}-{entry['pool']}")
            found.setdefault(key, []).append(entry)
    return found


def read_table(path: Path) -> list[dict]:
    """The rows of one of the dataset's parquet tables."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


# --- sizes -----------------------------------------------------------------------------------


def parse_size(value) -> int:
    """`1000`, `"500MB"`, `"2GiB"` -> bytes (decimal units for kB/MB/GB, binary for KiB/...).

    Raises:
        HubSelectionError: unreadable or not positive.
    """
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    units.update(kib=2**10, mib=2**20, gib=2**30, k=10**3, m=10**6, g=10**9)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m[2].lower() not in units or float(m[1]) <= 0:
        raise HubSelectionError(f"size {value!r}: write bytes or e.g. 500MB, 2GiB")
    return int(float(m[1]) * units[m[2].lower()])


# --- what a model contributes ----------------------------------------------------------------


@dataclass
class ModelPlan:
    """One model's share of a push or pull.

    Args:
        name (`str`): the model's store name.
        cfg (`dict`): its `model_cfg.json`.
        records (`list[dict]`): the selected prompts' records, sorted by hash.
        tensors (`dict`): `{kind: {layer: heads}}`, heads `()` for other kinds than patterns;
            the one layer of a per-prompt kind without layers is `None`.
        pooled (`tuple[str]`): the pooled datasets that go along, by folder name
            (`<hook>-<pool>`), sorted; each goes whole, whatever `records` and `tensors` say.
    """

    name: str
    cfg: dict
    records: list[dict]
    tensors: dict[str, dict[int, tuple[int, ...]]]
    pooled: tuple[str, ...] = ()

    @property
    def n_layers(self) -> int:
        return int(self.cfg["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.cfg["n_heads"])

    @property
    def d_model(self) -> int:
        return int(self.cfg["d_model"])

    def summary(self) -> dict:
        """JSON-ready counts, for the manifest and the card."""
        pats = self.tensors.get(PATTERNS, {})
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_model": self.d_model,
            "n_prompts": len(self.records),
            "n_tokens": sum(int(r["n_tokens"]) for r in self.records),
            "patterns": {str(layer): list(h) for layer, h in pats.items()},
            "residuals": {k: sorted(v) for k, v in self.tensors.items() if k in RESID_KINDS},
            "pooled": list(self.pooled),
            **self._prompt_kinds(),
        }

    def _prompt_kinds(self) -> dict:
        """`{"prompt_kinds": {kind: layers, None for a kind without layers, or the member
        names of a named kind}}`, or nothing (so a manifest without them keeps its bytes)."""
        kinds = {k: self._kind_summary(k) for k in self.tensors if k in PROMPT_KINDS}
        return {"prompt_kinds": kinds} if kinds else {}

    def _kind_summary(self, kind: str) -> list | None:
        spec = PROMPT_KINDS[kind]
        if spec.named:
            return self.named_members(kind)
        return sorted(self.tensors[kind]) if spec.layered else None

    def named_members(self, kind: str) -> list[str]:
        """The members of a named kind (hook names) that the plan takes, in the order the
        store's settings list them (the order the model fires them)."""
        spec = PROMPT_KINDS[kind]
        chosen = {
            spec.member(layer, f) for layer, fs in self.tensors.get(kind, {}).items() for f in fs
        }
        stored = (self.cfg.get("lens_cache") or {}).get("extra_hooks") or []
        return [n for n in stored if n in chosen] + sorted(chosen - set(stored))

    @property
    def topk_keys(self) -> int:
        """Keys kept per query row by `pattern_topk` (the export's `--topk-keys`)."""
        return int((self.cfg.get("lens_cache") or {}).get("topk_keys", DEFAULT_TOPK_KEYS))

    @property
    def top_k(self) -> int:
        """Top tokens stored per position by the prediction kinds (the export's `--top-k`)."""
        return int((self.cfg.get("lens_cache") or {}).get("top_k", 10))
