"""The per-prompt viewer data producer: the export's writer threads make each prompt's viewer
data right after writing its files, from the tensors still in memory, behind the forward pass.

It runs the same :func:`build_prompt` a rebuild from disk runs, handing it the captured
patterns and residuals instead of re-reading (and re-decompressing) the files just written,
so the bytes are the same (tests/test_viewer_pipeline.py compares them). Everything else a
prompt's viewer data holds (per-kind data such as predictions) `build_prompt` reads from the
prompt's files, so a new kind plugs in there once and both paths have it. The export's last
step then finds every prompt up to date and writes only the index and the page. A prompt
interrupted between its files and its viewer data has no `stamp.json` (written last): the
export's last step, or any rebuild, builds it from disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from lens_cache.layout import PATTERN, hook_name
from lens_cache.progress import log as progress_log
from lens_cache.reader import normalize_record
from lens_cache.viewer._build import (
    DATA_DIR,
    build_prompt,
    check_layer,
    model_slug,
    norms_of,
    read_model,
    stored_layers,
)


class CapturedArrays:
    """A prompt's patterns (`name -> [1, H, T, T]`, as written) and residuals (`name ->
    [T, d_model]` torch tensors, as written), for :func:`build_prompt`."""

    def __init__(self, patterns: dict, residuals: dict, where: Path):
        self._patterns, self._residuals, self.where = patterns, residuals, where

    def patterns(self, prompt: dict, n_heads: int, n_tokens: int):
        if not self._patterns:
            return
        for layer in stored_layers(prompt, list(self._patterns)):
            key = hook_name(PATTERN, layer)
            yield layer, check_layer(self._patterns[key], key, n_heads, n_tokens, self.where)

    def resid_norms(self, n_tokens: int, log) -> dict | None:
        tensors = (  # bf16/f16 widened: exact
            (key, t.detach().cpu().float().numpy()) for key, t in self._residuals.items()
        )
        return norms_of(tensors, n_tokens, log, self.where)


class PromptDataProducer:
    """`producer(record, capture, directory)`: write the viewer data of one prompt just
    written to `directory` (its `prompt.json` record, its `Capture`). Thread-safe: each call
    writes only its own prompt's folder under `viewer_data/`."""

    def __init__(self, save_path: Path, model_name: str, *, quiet: bool = False):
        self.save, self.model, self.quiet = Path(save_path), model_name, quiet
        self.out = self.save / DATA_DIR / model_slug(model_name)
        self._cfg: dict | None = None

    def __call__(self, record: dict, capture, directory: Path) -> None:
        if self._cfg is None:  # model_cfg.json is written before any prompt
            self._cfg = read_model(self.save, self.model)
        prompt = normalize_record(json.loads(json.dumps(record)))  # as the reader gives it
        arrays = None  # a prompt written layer group by layer group: read back from disk
        if not capture.written:  # patterns kept only for head_metrics are not the page's
            stored = PATTERN in prompt["lens_cache"].get("hooks", ())
            patterns = capture.patterns if stored else {}
            arrays = CapturedArrays(patterns, capture.residuals, directory)
        build_prompt(self.save, self._cfg, prompt, self.out / prompt["hash"], self._log, arrays)

    def _log(self, message: str) -> None:
        progress_log(message, quiet=self.quiet)
