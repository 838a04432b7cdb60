"""Any TransformerLens hook point: list a model's hooks and resolve what `--hooks` asks for.

A model's hook points are found by running it, not by reading its module tree: some hooks a
module declares never fire (the bridge's `attn.hook_result` without `use_attn_result`), and
only a run gives each one's shape. Two tiny forward passes (3 and 5 tokens, every hook cached)
tell a per-token hook (`[batch, pos, ...]` whose other axes do not grow with the prompt) from
one that does not fit that (attention scores and patterns, `[batch, heads, pos, pos]`).

Names are TransformerLens 3.x names on both majors. The 4.x bridge fires its canonical name
and the 3.x alias for the same tensor (`blocks.0.hook_in` and `blocks.0.hook_resid_pre`); the
canonical one is left out of the list and mapped to its alias when asked for, so a store holds
the same names whichever major wrote it.

A request is a hook name (`blocks.3.attn.hook_z`), a glob (`blocks.*.hook_mlp_out`,
`blocks.{3,5}.attn.hook_z`), or a site inside every selected layer (`hook_mlp_out`,
`mlp.hook_post`: `blocks.{i}.<site>` for each of `--layers`).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass

import torch

from lens_cache.adapter import LensModel
from lens_cache.errors import NotPerTokenHookError, UnknownHookError
from lens_cache.layout import (
    HOOK_KINDS,
    PATTERN,
    RESID_KINDS,
    could_name_hook_point,
    expand_braces,
    hook_site,
    pool_site,
    site_hook,
)

PROBE_LENGTHS = (3, 5)  # two lengths: an axis that follows the prompt's length is a position
_GLOB = re.compile(r"[*?\[{]")


@dataclass(frozen=True)
class HookPoint:
    """One hook point of a model.

    Args:
        name: its TransformerLens 3.x name.
        shape: the shape one prompt of `T` tokens gives, with `"T"` for the position axes and
            no batch axis, e.g. `("T", 4, 16)` for `attn.hook_z`.
        dtype: e.g. `float32` (token ids are `int64`).
    """

    name: str
    shape: tuple
    dtype: str

    @property
    def per_token(self) -> bool:
        """One value or vector per token: storable in `hooks.safetensors`."""
        return self.shape[:1] == ("T",) and "T" not in self.shape[1:]

    @property
    def width(self) -> int:
        """Numbers per token (for a per-token hook)."""
        n = 1
        for size in self.shape[1:]:
            n *= size if isinstance(size, int) else 1
        return n

    def describe(self) -> str:
        return f"[{', '.join(map(str, self.shape))}] {self.dtype}"


def list_hooks(model) -> list[HookPoint]:
    """Every hook point of a model, in the order a forward pass fires them, with its shape.

    Args:
        model: a `TransformerBridge` (TransformerLens 4), a `HookedTransformer` (3.x), or a
            model spec as `lens_cache.load_model` takes (`"smollm2-135m"`, a local directory).

    Returns:
        A list of `HookPoint`; `per_token` says which `--hooks` can store.

    Example:
        >>> for point in lens_cache.list_hooks(model):
        ...     print(point.name, point.describe())
    """
    return list(probe(as_lens_model(model)).values())


def as_lens_model(model) -> LensModel:
    """A `LensModel` from a loaded model of either major or a model spec."""
    if isinstance(model, LensModel):
        return model
    from lens_cache.models import load_model

    return load_model(model, device=None)


def probe(model: LensModel) -> dict[str, HookPoint]:
    """`{name: HookPoint}` for the model, computed once and kept on the `LensModel`."""
    points = getattr(model, "_hook_points", None)
    if points is None:
        short, long = (_run_all(model, n) for n in PROBE_LENGTHS)
        aliases = _aliases(model.model, short)
        points = {}
        for name, value in short.items():
            if name in aliases or name not in long:
                continue  # a canonical name of the bridge: listed under its 3.x alias
            shape = _shape(value.shape, long[name].shape, *PROBE_LENGTHS)
            points[name] = HookPoint(name, shape, str(value.dtype).removeprefix("torch."))
        model._hook_points = points
        model._hook_aliases = aliases
    return points


def resolve_hooks(model: LensModel, requests, layers) -> tuple[str, ...]:
    """The hook names a list of requests selects, in the model's order, each once.

    Args:
        model: the loaded model.
        requests: hook names, globs, or block sites (see the module docstring).
        layers: the selected layers, for block sites.

    Raises:
        UnknownHookError: a name the model does not have (the message names the nearest ones),
            or a glob that matches nothing.
        NotPerTokenHookError: a hook whose tensor is not one vector per token.
    """
    points = probe(model)
    chosen: set[str] = set()
    for request in requests:
        chosen.update(_resolve_one(model, points, request, layers))
    return tuple(name for name in points if name in chosen)


def split_hook_requests(hooks, kinds=HOOK_KINDS) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`--hooks` split into the stored kinds (`pattern`, `resid_post`, ...) and requests for
    other hook points, resolved per model by `resolve_hooks`.

    Raises:
        UnknownHookError: nothing asked for, or a name that cannot be a hook point.
    """
    hooks = (hooks,) if isinstance(hooks, str) else tuple(hooks)
    requests = tuple(h for h in hooks if h not in kinds)
    # Every TransformerLens hook point's name has `hook` in it: anything else is a typo, told
    # here, before a model is loaded.
    unknown = [h for h in requests if not could_name_hook_point(h)]
    if unknown or not hooks:
        raise UnknownHookError(
            f"unknown hooks {unknown}; choose from {', '.join(kinds)}, or hook points by name "
            "or glob (hook_attn_out, blocks.*.attn.hook_z; --list-hooks lists a model's)"
        )
    return tuple(h for h in hooks if h in kinds), requests


def hooks_width(model: LensModel, names) -> int:
    """Numbers per token the hooks `names` hold together (for batch sizing)."""
    if not names:
        return 0
    points = probe(model)
    return sum(points[name].width for name in names)


def pool_sites(kinds, extra_hooks) -> list[str]:
    """What `--pool` pools: each residual kind stored, and the block site of each other hook
    stored per layer (`blocks.3.attn.hook_z` -> `attn.hook_z`); hooks outside the blocks have
    no layers and are not pooled."""
    sites = [kind for kind in kinds if kind in RESID_KINDS]
    sites += [pool_site(name) for name in extra_hooks if hook_site(name)[1] is not None]
    return list(dict.fromkeys(sites))


def _resolve_one(model: LensModel, points: dict, request: str, layers) -> list[str]:
    request = model._hook_aliases.get(request, request)
    if request in points:
        return [_per_token(model, points[request])]
    if f"blocks.0.{request}" in points:
        return [_per_token(model, points[site_hook(request, i)]) for i in layers]
    if _GLOB.search(request):
        matched = [n for p in expand_braces(request) for n in points if fnmatch.fnmatchcase(n, p)]
        kept = [n for n in matched if points[n].per_token]
        if kept:
            return kept
        if matched:
            _per_token(model, points[matched[0]])
    near = difflib.get_close_matches(request, [*HOOK_KINDS, *points], n=3, cutoff=0.6)
    raise UnknownHookError(
        f"{model.name} has no hook {request!r}"
        + (f"; nearest: {', '.join(near)}" if near else "")
        + "; --list-hooks lists them all"
    )


def _per_token(model: LensModel, point: HookPoint) -> str:
    if not point.per_token:
        use = "; attention patterns are --hooks pattern" if point.name.endswith(PATTERN) else ""
        raise NotPerTokenHookError(
            f"hook {point.name} of {model.name} is {point.describe()} per prompt, not one "
            f"vector per token; only per-token hooks can be stored{use}"
        )
    return point.name


def _run_all(model: LensModel, n_tokens: int) -> dict[str, torch.Tensor]:
    tokens = (torch.arange(n_tokens) % int(model.cfg.d_vocab)).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        _, cache = model.model.run_with_cache(tokens)
    return {name: value for name, value in cache.items() if isinstance(value, torch.Tensor)}


def _shape(short, long, n_short: int, n_long: int) -> tuple:
    """A hook's shape for one prompt: the batch axis dropped, axes that grew with the prompt
    written `"T"`; an unexpected shape (no batch axis of 1) is kept whole."""
    if len(short) != len(long) or not short or short[0] != 1:
        return tuple(short)
    return tuple(
        "T" if (a, b) == (n_short, n_long) else a for a, b in zip(short[1:], long[1:], strict=True)
    )


def _aliases(model, cache: dict) -> dict[str, str]:
    """`{canonical name: 3.x alias}` for the 4.x bridge's hooks that fired under both names
    (empty for 3.x, which has only the 3.x names)."""
    aliases = {}
    for prefix, module in model.named_modules():
        table = getattr(module, "hook_aliases", None)
        if not isinstance(table, dict):
            continue
        for alias, targets in table.items():
            alias = f"{prefix}.{alias}" if prefix else alias
            for target in [targets] if isinstance(targets, str) else targets:
                target = f"{prefix}.{target}" if prefix else target
                if alias in cache and target in cache:
                    aliases[target] = alias
    return aliases
