"""One prompt's viewer as a single self-contained HTML page, for a notebook cell's output.

The page is the static viewer's own (`index.html.j2`, the same scripts and stylesheet), built
from the same data scripts `write_viewer` writes for that prompt (`build_prompt`), with every
file carried as a `data:` URL instead of a path: nothing is fetched, nothing needs a server or
a CDN, and only that prompt's data is in it. `window.LENS_INLINE` maps each data script's
usual path to its `data:` URL, which is how `core.js` finds them.

Layer data is the bulk (float16 lower triangles, deflated): past `budget` bytes only the
layer the display opens on is carried, so a 256-token prompt of a 12 x 12-head model stays
well under 3 MB; the page then says which layers it lacks instead of failing silently.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import quote

from lens_cache.viewer._build import (
    DATA_DIR,
    FORMAT_VERSION,
    SCRIPTS,
    assets_dir,
    build_prompt,
    entry_of,
    index_payload,
    model_entry,
    model_slug,
)
from lens_cache.viewer._encode import script_call

INLINE_BUDGET = 2_000_000  # bytes of layer scripts carried whole; past it, only the shown layer
# Characters a data: URL may carry as they are; everything else is %-encoded (`#` would end
# the URL, `%` starts an escape, quotes and brackets would meet HTML).
_SAFE = "/+=:;,.-_()[]{}!*'@$?~ "


def inline_page(
    save: Path | None,
    cfg: dict,
    record: dict,
    route: str,
    keep_layer=None,
    budget=None,
    arrays=None,
):
    """The page, as text, of one prompt's viewer opened at `route` (e.g. `#/head/m/h/3/1`).

    Args:
        save: the store (`None`: no store, everything comes from `arrays`); `cfg` its model's
            `model_cfg.json`; `record` the prompt's record.
        keep_layer: the layer whose data is carried even past `budget` (`None`: none).
        budget: bytes of layer data carried whole (default `INLINE_BUDGET`).
        arrays: the prompt's patterns and residuals in memory (`CapturedArrays`); by default
            they are read from the store.
    """
    with tempfile.TemporaryDirectory() as tmp:  # build_prompt writes the scripts to files
        # without a store, the empty folder stands in for one: every other kind is absent
        files = _data_scripts(save or Path(tmp), cfg, record, Path(tmp), arrays)
    layers = {path: data for path, data in files.items() if Path(path).name.startswith("L")}
    if sum(map(len, layers.values())) > (INLINE_BUDGET if budget is None else budget):
        wanted = f"L{keep_layer}.js"
        files = {p: d for p, d in files.items() if p not in layers or Path(p).name == wanted}
    return _render(files, route)


def _data_scripts(save: Path, cfg: dict, record: dict, tmp: Path, arrays) -> dict[str, bytes]:
    """`{path the viewer loads: script bytes}` for the index and the prompt's data."""
    slug, hash_ = model_slug(cfg["model_name"]), record["hash"]
    out = tmp / slug / hash_
    out.mkdir(parents=True)
    stamp = build_prompt(save, cfg, record, out, log=lambda _: None, arrays=arrays)
    texts = {hash_: {"text": record.get("text", ""), "meta": record.get("meta") or {}}}
    index = index_payload(
        [model_entry(cfg, [record], [stamp])], [entry_of(0, record, stamp)], texts
    )
    files = {f"{DATA_DIR}/lens_index.js": script_call("index", index)}
    for name in stamp["files"]:
        files[f"{DATA_DIR}/{slug}/{hash_}/{name}"] = (out / name).read_bytes()
    return files


def _data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};charset=utf-8," + quote(data.decode("utf-8"), safe=_SAFE)


def _render(files: dict[str, bytes], route: str) -> str:
    import jinja2

    assets = assets_dir()
    index = files.pop(f"{DATA_DIR}/lens_index.js")
    urls = {path: _data_url("text/javascript", data) for path, data in files.items()}
    # Before core.js: the data map, and the view to open (the page routes on its address).
    boot = f"window.LENS_INLINE={json.dumps(urls)};location.hash={json.dumps(route)};"
    scripts = [assets.joinpath(name).read_bytes() for name in SCRIPTS]
    source = assets.joinpath("index.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source).render(
        data_dir=DATA_DIR,
        stylesheet=_data_url("text/css", assets.joinpath("viewer.css").read_bytes()),
        scripts=[_data_url("text/javascript", s) for s in [boot.encode(), *scripts]],
        index_script=_data_url("text/javascript", index),
        format=FORMAT_VERSION,
        inline_src=" data:",
    )
