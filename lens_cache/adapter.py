"""One small adapter over both TransformerLens majors.

4.x models are `transformer_lens.model_bridge.TransformerBridge`; 3.x models are
`transformer_lens.HookedTransformer`. Everything else in lens_cache talks to `LensModel` only.

Hook names are stored in their 3.x spelling (`blocks.{i}.hook_resid_pre`, ...), which readers
expect; 4.x still accepts those names as aliases of its canonical ones and its cache holds both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

from lens_cache.errors import HookNotFiredError, UnsupportedModelError


def tl_major() -> int:
    """The installed TransformerLens major version."""
    import transformer_lens

    version = getattr(transformer_lens, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("transformer_lens")
    return int(str(version).split(".")[0])


def _is_bridge(model) -> bool:
    return type(model).__name__ == "TransformerBridge" or hasattr(model, "adapter")


@dataclass
class LensModel:
    """A loaded TransformerLens model of either major, with the few calls lens_cache needs.

    Args:
        model: a `TransformerBridge` (TransformerLens 4) or `HookedTransformer` (3.x).
        name: the model's directory name in the store.
        source: where it came from (alias, HF name, local path), recorded in `model_cfg.json`.
        processing: weight processing applied at load time, recorded in `model_cfg.json`.
    """

    model: object
    name: str
    source: str = ""
    processing: dict | None = None

    def __post_init__(self):
        self.model.eval()
        self.bridge = _is_bridge(self.model)
        if getattr(self.cfg, "attention_dir", "causal") != "causal":
            raise UnsupportedModelError(
                f"{self.name}: attention is {self.cfg.attention_dir!r}, not causal; lens_cache "
                "right-pads batches, which is exact only for causal models"
            )
        self._logits_to_keep_ok = True

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype_name(self) -> str:
        """The dtype the model computes in, e.g. `float32`."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @property
    def pad_id(self) -> int:
        # Any id works: right padding sits after every real token, and causal attention never
        # looks ahead, so pad values never reach a kept position. Never find pads by id.
        tok = self.model.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else 0)

    def tokenize(self, text: str) -> list[int]:
        """Token ids as the model sees them (BOS prepended when the model does), untruncated."""
        return self.model.to_tokens(text, truncate=False)[0].tolist()

    def tokenizer_tokens(self, text: str) -> list[str]:
        """`tokenizer.tokenize(text)`: the tokenizer's own strings (`'Ġthe'`), no BOS, as
        pattern-lens stores them in `prompt.json`."""
        return [str(t) for t in self.model.tokenizer.tokenize(text)]

    def str_tokens(self, ids: list[int]) -> list[str]:
        """One string per token id, aligned with the pattern axes."""
        return [str(t) for t in self.model.to_str_tokens(torch.tensor(ids))]

    def run(
        self, tokens: torch.Tensor, names: list[str], last_layer: int | None, fwd_hooks=()
    ) -> dict:
        """One forward pass over a right-padded `[batch, pos]` token tensor.

        Caches only `names`, stops after block `last_layer` and skips the unembedding, which
        is about a third of a small model's forward and is never stored (`last_layer=None`
        runs the whole model, for hooks of the final norm or the unembedding). `fwd_hooks`,
        `(name, fn)` pairs, run as their hooks fire and are removed after the pass: they read
        a tensor the cache does not keep (the compact pattern, lens_cache.topk).
        """
        kwargs: dict = {"names_filter": names}
        stop = self.n_layers + 1 if last_layer is None else last_layer + 1
        if stop > self.n_layers:
            pass  # the whole model: a hook after the blocks (final norm, unembedding) is cached
        elif stop < self.n_layers or not self.bridge:
            kwargs["stop_at_layer"] = stop  # the bridge ignores stop_at_layer == n_layers
        elif self._logits_to_keep_ok:
            kwargs["logits_to_keep"] = 1
        try:
            cache = self._cached(tokens, kwargs, fwd_hooks)
        except TypeError:
            if "logits_to_keep" not in kwargs:
                raise
            self._logits_to_keep_ok = False  # an architecture without the argument
            return self.run(tokens, names, last_layer, fwd_hooks)
        return {name: _fired(cache, name) for name in names}

    def _cached(self, tokens: torch.Tensor, kwargs: dict, fwd_hooks) -> dict:
        with torch.inference_mode(), self.model.hooks(fwd_hooks=list(fwd_hooks)):
            _, cache = self.model.run_with_cache(tokens, **kwargs)
        return cache

    # --- the final norm and the unembedding (logit lens, predictions, logit attribution) -------
    # Both majors expose them as modules `ln_final` and `unembed`. Apply those modules rather
    # than raw weights: 3.x folds the norm's weight (and bias) into W_U under fold_ln, leaving
    # `ln_final` a bare normalisation (LayerNormPre / RMSNormPre), so only the pair of modules
    # together is the model's own readout on either major.

    @property
    def d_vocab(self) -> int:
        return int(self.cfg.d_vocab)

    def check_unembedding(self) -> None:
        """Raise `UnsupportedModelError` unless the final norm and unembedding can be found."""
        missing = [n for n in ("ln_final", "unembed") if _submodule(self.model, n) is None]
        if missing:
            raise UnsupportedModelError(
                f"{self.name}: no {' or '.join(missing)} module found, so its final norm and "
                "unembedding cannot be applied; export without logits / logit_lens"
            )

    def final_norm(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],  # noqa: F722 (a jaxtyping shape)
    ) -> Float[torch.Tensor, "batch pos d_model"]:  # noqa: F722 (a jaxtyping shape)
        """The model's final norm applied afresh to a residual stream (e.g. any layer's
        `resid_post`); on 3.x with fold_ln its weight lives in `W_U` (see `unembed`)."""
        self.check_unembedding()
        return self.model.ln_final(resid)

    def unembed(
        self,
        x: Float[torch.Tensor, "batch pos d_model"],  # noqa: F722 (a jaxtyping shape)
    ) -> Float[torch.Tensor, "batch pos d_vocab"]:  # noqa: F722 (a jaxtyping shape)
        """The unembedding and its bias applied to the output of `final_norm`."""
        self.check_unembedding()
        return self.model.unembed(x)

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:  # noqa: F722 (a jaxtyping shape)
        """The unembedding matrix as the model holds it (on 3.x with fold_ln, times the final
        norm's weight and centred by center_unembed; see `processing`)."""
        return self.model.W_U

    @property
    def b_U(self) -> Float[torch.Tensor, " d_vocab"]:  # noqa: F722 (a jaxtyping shape)
        return self.model.b_U

    # --- weights for head contributions (value norms, direct logit attribution) -------------
    # The model's own weights on either major: on 3.x they are the processed ones (fold_ln
    # leaves `ln_final` without weight or bias and puts them into W_U / b_U).

    def W_O(self, layer: int) -> Float[torch.Tensor, "n_heads d_head d_model"]:
        """The output projection of one layer, split per head."""
        return self.model.blocks[layer].attn.W_O

    @property
    def final_norm_centres(self) -> bool:
        """Whether the final norm is a LayerNorm (it subtracts the mean; RMSNorm does not)."""
        return str(getattr(self.cfg, "normalization_type", "")).startswith("LN")

    def final_norm_affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The final norm's own weight and bias (None where it has none, e.g. 3.x's fold_ln)."""
        params = {n.split(".")[-1]: p for n, p in self.model.ln_final.named_parameters()}
        return params.get("weight", params.get("w")), params.get("bias", params.get("b"))

    def final_norm_scale(
        self, resid: Float[torch.Tensor, "batch pos d_model"]
    ) -> Float[torch.Tensor, "batch pos 1"]:
        """The scale the model's final norm divides each position by, read from its own
        `hook_scale` while applying it to `resid` (the final residual)."""
        seen = []
        hook = self.model.ln_final.hook_scale.register_forward_hook(
            lambda _m, _i, out: seen.append(out)
        )
        try:
            with torch.inference_mode():
                self.model.ln_final(resid)
        finally:
            hook.remove()
        if not seen:
            raise HookNotFiredError(f"{self.name}: ln_final.hook_scale did not fire")
        return seen[-1]

    def config_dict(self) -> dict:
        """The model's config as JSON-ready data, for `model_cfg.json`."""
        from muutils.json_serialize import json_serialize

        raw = self.cfg.to_dict() if hasattr(self.cfg, "to_dict") else dict(vars(self.cfg))
        cfg = {k: v for k, v in raw.items() if not k.startswith("_")}
        cfg = json_serialize(cfg)
        cfg.update(
            model_name=self.name,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_model=self.d_model,
            n_ctx=self.n_ctx,
        )
        return cfg


def _submodule(model, name: str):
    module = getattr(model, name, None)
    return module if isinstance(module, torch.nn.Module) else None


def _fired(cache, name: str) -> torch.Tensor:
    try:
        value = cache[name]
    except KeyError:
        value = None
    if not isinstance(value, torch.Tensor):
        raise HookNotFiredError(f"hook {name} did not fire; this architecture cannot export it")
    return value
