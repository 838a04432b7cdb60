/* lens_cache viewer, views_topk.js: one head of a long prompt from its compact pattern
 * (export kind pattern_topk; data: lens_cache/viewer/_topk.py). It opens on the overview,
 * max-pooled per block so a single strong cell far back stays visible, and a click zooms into
 * a region of ZOOM tokens a side, loading only the row bands that region crosses.
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { DATA_DIR, canvasPoint, clamp, colorIndex, cssVar, decodeArray, fmtValue, go, h,
    hashFor, hideTip, link, loadScript, modelOf, entryFor, packed, promptData, promptHash,
    promptName, setCrumbs, settings, showError, showTip } = LENS_UI;

  const ZOOM = 128; // tokens a side of a zoomed region
  const SIDE = 512; // CSS pixels a side of each canvas

  function overviewData(model, hash, layer) {
    const rel = model.slug + "/" + hash;
    return loadScript("topk:" + rel + "/" + layer, DATA_DIR + "/" + rel + "/K" + layer + ".js",
      async (obj) => {
        const max = await decodeArray(obj.max), sum = await decodeArray(obj.sum);
        return [{ max, sum }, max.data.byteLength * 2];
      });
  }
  function bandData(model, hash, layer, band) {
    const rel = model.slug + "/" + hash + "/" + layer + "/" + band;
    return loadScript("topkband:" + rel,
      DATA_DIR + "/" + model.slug + "/" + hash + "/K" + layer + "_" + band + ".js",
      async (obj) => {
        const keys = await decodeArray(obj.keys), values = await decodeArray(obj.values);
        const rest = await decodeArray(obj.rest);
        const band = { lo: obj.lo, rows: keys.shape[1], k: keys.shape[2], keys, values, rest };
        return [band, keys.data.byteLength * 3];
      });
  }

  /** The prompt view's grid for a prompt with only the compact pattern: one link per head. */
  function topkLinks(model, hash, part, H) {
    const rows = part.layers.map((layer) => h("tr", null, h("th", { text: "L" + layer }),
      ...Array.from({ length: H }, (_, hd) => h("td", null,
        link("H" + hd, hashFor("topk", [model.name, hash, layer, hd]))))));
    return h("div", null, h("p", { class: "note", text: `Compact pattern: each row's ${part.k} strongest keys and an overview in blocks of ${part.block} tokens.` }),
      h("table", { class: "mini topk-links" }, ...rows));
  }

  function paint(canvas, n, valueAt) {
    canvas.width = canvas.height = n;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(n, n);
    const px = new Uint32Array(img.data.buffer), mask = cssVar("--mask") || "#888";
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const v = valueAt(i, j);
        px[i * n + j] = v === null ? 0 : packed(colorIndex(v, settings.scale));
      }
    }
    ctx.fillStyle = mask;
    ctx.fillRect(0, 0, n, n);
    const layer = document.createElement("canvas");
    layer.width = layer.height = n;
    layer.getContext("2d").putImageData(img, 0, 0);
    ctx.drawImage(layer, 0, 0);
  }

  class TopkView {
    constructor(root, route) {
      const [name, hash, layer, head] = route.args;
      this.model = modelOf(name);
      this.entry = entryFor(this.model, hash);
      this.layer = Number(layer);
      this.head = Number(head);
      setCrumbs([{ text: "prompts", href: "#/" }, { text: promptName(this.entry), href: promptHash(this.model, hash) },
        { text: `L${this.layer} H${this.head} (compact)` }]);
      this.note = h("p", { class: "note", text: "loading…" });
      this.over = h("canvas", { class: "topk-overview" });
      this.zoom = h("canvas", { class: "topk-zoom", hidden: true });
      for (const c of [this.over, this.zoom]) {
        c.style.width = c.style.height = SIDE + "px";
        c.style.imageRendering = "pixelated"; // one canvas pixel per cell or block, kept sharp
      }
      this.caption = h("p", { class: "note topk-caption" });
      root.append(this.note, h("div", { class: "topk-panes" }, this.over, this.zoom), this.caption);
      const at = [Number(route.query.get("r")), Number(route.query.get("c"))];
      Promise.all([promptData(this.model, hash), overviewData(this.model, hash, this.layer)])
        .then(([p, ov]) => this.show(p, ov, route.query.has("r") ? at : null),
          (err) => showError(this.note, err));
    }

    show(p, ov, at) {
      this.p = p;
      const part = p.topk, T = p.n_tokens, B = ov.max.shape[1];
      this.part = part; this.T = T; this.B = B; this.ov = ov;
      this.paintOverview();
      this.note.textContent = `overview: blocks of ${part.block} tokens, each the block's largest cell; click to zoom`;
      this.over.dataset.blocks = B;
      this.over.addEventListener("mousemove", (e) => this.overTip(e));
      this.over.addEventListener("mouseleave", hideTip);
      this.over.addEventListener("click", (e) => {
        const [bi, bj] = this.blockAt(e);
        const mid = (b) => b * part.block + part.block / 2 - ZOOM / 2;
        this.zoomTo(mid(bi), mid(bj));
      });
      this.zoom.addEventListener("mousemove", (e) => this.zoomTip(e));
      this.zoom.addEventListener("mouseleave", hideTip);
      if (at) this.zoomTo(at[0], at[1]);
    }

    paintOverview() {
      const B = this.B, ov = this.ov, off = this.head * B * B;
      paint(this.over, B, (i, j) => (j > i ? null : ov.max.data[off + i * B + j]));
    }

    paintZoom() {
      const { r0, c0, W, cells } = this.region;
      paint(this.zoom, W, (i, j) => (c0 + j > r0 + i ? null : Math.max(0, cells.value[i * W + j])));
    }

    /** The colour scale changed (`l`): draw both again. */
    redraw() {
      if (this.ov) this.paintOverview();
      if (this.region) this.paintZoom();
    }

    blockAt(e) {
      const [x, y] = canvasPoint(this.over, e); // in canvas pixels: one per block
      return [clamp(Math.floor(y), 0, this.B - 1), clamp(Math.floor(x), 0, this.B - 1)];
    }

    overTip(e) {
      const [bi, bj] = this.blockAt(e), b = this.part.block, B = this.B, k = this.head * B * B + bi * B + bj;
      const last = (x) => Math.min(this.T, (x + 1) * b) - 1;
      showTip(e.clientX, e.clientY, [`queries ${bi * b}–${last(bi)}, keys ${bj * b}–${last(bj)}`,
        `max ${fmtValue(this.ov.max.data[k])}`, `sum ${fmtValue(this.ov.sum.data[k])}`]);
    }

    /** Zoom on the region whose top-left cell is about (r, c), loading its rows' bands. */
    zoomTo(r, c) {
      const W = Math.min(ZOOM, this.T), T = this.T, band = this.part.band;
      const r0 = clamp(Math.round(r), 0, T - W), c0 = clamp(Math.round(c), 0, T - W);
      const bands = [];
      for (let b = Math.floor(r0 / band); b <= Math.floor((r0 + W - 1) / band); b++) bands.push(b);
      const hash = this.entry.h;
      Promise.all(bands.map((b) => bandData(this.model, hash, this.layer, b))).then((got) => {
        this.region = { r0, c0, W, cells: this.cells(got, r0, c0, W) };
        this.paintZoom();
        Object.assign(this.zoom.dataset, { r0, c0, size: W });
        this.zoom.hidden = false;
        const tok = (i) => JSON.stringify(this.p.tokens[i]), span = (a) => `${a}–${a + W - 1} (${tok(a)} … ${tok(a + W - 1)})`;
        this.caption.textContent = `zoomed: queries ${span(r0)}, keys ${span(c0)}; hover a cell for its tokens and value`;
        this.zoom.dataset.drawn = "1";
      }, (err) => showError(this.note, err));
    }

    /** The region's stored values (-1 where a cell is not among its row's k), each row's k-th
     * value and its rest. */
    cells(bands, r0, c0, W) {
      const value = new Float32Array(W * W).fill(-1), kth = new Float32Array(W), rest = new Float32Array(W);
      for (let i = 0; i < W; i++) {
        const q = r0 + i, bd = bands.find((x) => q >= x.lo && q < x.lo + x.rows);
        const base = (this.head * bd.rows + (q - bd.lo)) * bd.k;
        rest[i] = bd.rest.data[this.head * bd.rows + (q - bd.lo)];
        kth[i] = bd.values.data[base + bd.k - 1];
        for (let s = 0; s < bd.k; s++) {
          const key = bd.keys.data[base + s];
          if (key >= c0 && key < c0 + W) value[i * W + key - c0] = bd.values.data[base + s];
        }
      }
      return { value, kth, rest };
    }

    zoomTip(e) {
      const g = this.region;
      if (!g) return;
      const [x, y] = canvasPoint(this.zoom, e); // in canvas pixels: one per cell
      const i = clamp(Math.floor(y), 0, g.W - 1), j = clamp(Math.floor(x), 0, g.W - 1);
      const q = g.r0 + i, key = g.c0 + j, tokens = this.p.tokens, v = g.cells.value[i * g.W + j];
      const lines = [`query ${q}: ${JSON.stringify(tokens[q])}`, `key   ${key}: ${JSON.stringify(tokens[key])}`];
      if (key > q) lines.push("masked (after the query)");
      else if (v >= 0) lines.push(`value ${fmtValue(v)}`);
      else {
        lines.push(`below the row's k-th value (${fmtValue(g.cells.kth[i])}): not stored`);
        lines.push(`the row's unstored keys hold ${fmtValue(g.cells.rest[i])} in all`);
      }
      showTip(e.clientX, e.clientY, lines);
    }

    hashForModel(model) { return hashFor("topk", [model.name, this.entry.h, this.layer, this.head]); }
    step() { go(promptHash(this.model, this.entry.h)); }
  }

  Object.assign(LENS_UI, { TopkView, topkLinks });
})();
