"""Build the static attention viewer of a lens_cache store.

``write_viewer(save_path)`` writes ``<save>/index.html`` plus its scripts and data. Open that
file straight from disk (``file://``), offline: nothing is fetched from the network, and
nothing needs a server (``python -m lens_cache.serve`` is there for remote machines only).

Files written
-------------
::

    <save>/index.html                    the page (a jinja2 template; holds no data)
    <save>/pattern-lens.html             pattern-lens's page, when its index writer had put it
                                          in index.html: moved here, ours written again
    <save>/viewer/core.js, ..., viewer.css   the viewer itself (SCRIPTS, in load order, and
                                          viewer.css), copied from lens_cache.web
    <save>/viewer_data/lens_index.js     LENS.index({...}): models, prompts, metrics
    <save>/viewer_data/<model>/<hash>/prompt.js   LENS.prompt(key, {...}): tokens,
                                          thumbnails, per-head metrics, residual norms
    <save>/viewer_data/<model>/<hash>/L<layer>.js LENS.chunk(key, {...}): one layer's patterns
    <save>/viewer_data/<model>/<hash>/stamp.json  what the data was built from (incremental)
    <save>/viewer_data/manifest.npz      every prompt's stamp and per-head metrics in one file:
                                          what an unchanged rebuild reads (``_manifest``)

An export makes each prompt's data in its writer threads, from the tensors it has just written
(:class:`PromptDataProducer`, ``_produce``); a build from disk (``write_viewer``) makes the same
bytes for stores written by pattern-lens, by older versions, or pulled from the Hub.

``<model>`` is the model name made safe for a file name (``models[].slug`` in the index).

Why scripts: a page opened from ``file://`` may not ``fetch()`` or XHR other local files, but
``<script src="relative.js">`` loads. The viewer inserts a data script only when its prompt or
layer is shown, and keeps a bounded number decoded in memory.

Data format
-----------
Every data script calls one global with a key and a plain JSON object: ``LENS.index(obj)``,
``LENS.prompt("<model slug>/<hash>", obj)`` or ``LENS.chunk("<model slug>/<hash>/<layer>",
obj)``. The JSON is escaped for a script context (``<``, ``>``, ``&``, U+2028 and U+2029 as
``\\uXXXX``), so no text from a prompt can close the script or become markup.

Arrays are encoded as ``{"dtype": "f2" | "f4" | "u1", "shape": [...], "b64": str}``: the
little-endian values, deflate-compressed (zlib format, which the browser's
``DecompressionStream("deflate")`` reads), then base64. A layer chunk holds
``{"n_heads": H, "n_tokens": T, "layout": "tril", "data": <f2 array of H * T(T+1)/2>}``: for
each head the causal lower triangle row by row (row ``i`` holds keys ``0..i``), in float16.
float16 keeps attention values to within 2.4e-4; hover values are decoded from these numbers,
never from a colour. ``prompt.js`` holds:

- ``text``, ``tokens`` (BOS included when stored), ``n_tokens``, ``layers`` (stored), ``meta``;
- ``metrics``: metric name -> per stored layer, per head (``null`` for NaN); ``baseline``: the
  metrics of uniform causal attention on this prompt; ``labels``: per stored layer, per head;
- ``thumb``: u1 ``[layers, heads, S(S+1)/2]``, each head max-pooled to ``S = THUMB_SIZE``
  cells a side, times 255, lower triangle row by row as in a chunk; ``null`` when
  ``T <= THUMB_SIZE``, where the page draws thumbnails from the (then as small) chunks;
  ``thumb_size`` is ``min(T, THUMB_SIZE)``;
- ``resid``: ``{"layers": [...], "norms": {hook: f4 [layers, T]}}`` (L2 norm of each token's
  residual, hook one of ``resid_pre``, ``resid_mid``, ``resid_post``) or ``null``;
- ``pred``: what the model predicted at each position (``null`` without the ``logits`` kind;
  format in ``lens_cache.viewer._predictions``);
- ``heads``: value norms, DLA and value-weighted metrics (``null`` without the
  ``head_contributions`` kind; format in ``lens_cache.viewer._heads``);
- ``user`` (only with metrics registered by ``lens_cache.metric``) and ``figures`` (only where
  pattern-lens's ``figures_main`` wrote figures into the prompt's folder): format in
  ``lens_cache.viewer._user``.

URL hash format
---------------
Every view has an address; back and forward work. Model names are URI-encoded.

- ``#/`` home; optional query
  ``?q=<search>&model=<name>&meta=<key>=<value>&sort=<column>&dir=asc|desc``
- ``#/prompt/<model>/<hash>``: the layer x head grid of one prompt
- ``#/head/<model>/<hash>/<layer>/<head>``: one head's full pattern
- ``#/metrics/<model>?sort=<metric>&dir=desc[&prompt=<hash>]``: per-head metrics, averaged
  over the model's prompts (or for one prompt)
- ``#/compare/<model>/<hash>/<layer>/<head>/<model2>/<hash2>/<layer2>/<head2>``: side by side
- ``#/resid/<model>/<hash>?hook=resid_post``: residual-stream norms per layer and token
- ``#/lens/<model>/<hash>[?colour=top]``: the logit lens, layers x positions (with the
  ``logit_lens`` kind; data in ``lens.js``, see ``lens_cache.viewer._predictions``)
- ``#/top/<model>/<layer>/<head>[?by=attention|value_weighted|dla]``: the head's top examples
  across the model's prompts (with ``head_contributions``; data in ``<slug>/top/L<layer>.js``,
  see ``lens_cache.viewer._heads``); ``#/head/...?q=<query>&k=<key>`` selects a cell

Keys: arrows move layer/head, ``j``/``k`` or ``n``/``p`` next/previous prompt, Enter opens,
Escape goes up, ``+``/``-``/``0`` zoom, ``l`` log scale, ``v`` attention / value-weighted,
``t`` theme, ``?`` help.
"""

from lens_cache.viewer._build import (
    APP_DIR,
    ASSETS,
    DATA_DIR,
    FORMAT_VERSION,
    OLD_ASSETS,
    SCRIPTS,
    assets_dir,
    model_slug,
    refresh_store,
    write_viewer,
)
from lens_cache.viewer._encode import THUMB_SIZE, read_data_script
from lens_cache.viewer._inline import INLINE_BUDGET, inline_page
from lens_cache.viewer._produce import CapturedArrays, PromptDataProducer
from lens_cache.viewer._user_read import read_user_metrics

__all__ = [
    "APP_DIR",
    "ASSETS",
    "CapturedArrays",
    "DATA_DIR",
    "FORMAT_VERSION",
    "INLINE_BUDGET",
    "OLD_ASSETS",
    "PromptDataProducer",
    "SCRIPTS",
    "THUMB_SIZE",
    "assets_dir",
    "inline_page",
    "model_slug",
    "read_data_script",
    "read_user_metrics",
    "refresh_store",
    "write_viewer",
]
