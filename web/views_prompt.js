/* lens_cache viewer, views_prompt.js: the prompt view (one prompt's layer x head grid of
 * thumbnails) and the toolbar and crumbs of every view about one prompt.
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { INDEX, METRIC_SHORT, clamp, clear, colorIndex, entryFor, entryOf, f16Colors, fill,
    fillTokens, fmt, go, h, hashFor, headHash, hideTip, layerData, link, modelOf, neighbour, option, packed,
    promptData, promptHash, promptName, scaleLegend, select, setCrumbs, settings, showError,
    showTip, state } = LENS_UI;

  // ------------------------------------------------------------------ prompt view

  /** Shared header of the views about one prompt of one model. */
  function promptToolbar(view, model, entry, extra) {
    const others = INDEX.models.filter((m) => entryOf.has(m.idx + "|" + entry.h));
    const modelSel = select(others.map((m) => option(m.name, m.name, m === model)),
      (v) => go(view.hashForModel(modelOf(v))), "the same prompt under another model");
    const meta = INDEX.texts[entry.h].meta || {};
    return h("div", { class: "toolbar" },
      h("span", { class: "title", text: promptName(entry) }),
      meta.kind != null ? h("span", { class: "note", text: String(meta.kind) }) : null,
      h("span", { class: "note", text: entry.n + " tokens" }),
      modelSel,
      h("button", { type: "button", title: "previous prompt (k / p)", text: "◀ prev",
        onclick: () => view.step(-1) }),
      h("button", { type: "button", title: "next prompt (j / n)", text: "next ▶",
        onclick: () => view.step(1) }),
      ...(extra || []));
  }

  function promptCrumbs(model, entry, last) {
    const items = [{ text: "prompts", href: "#/" }, { text: model.name, href: hashFor("metrics", [model.name]) },
      { text: promptName(entry), href: last ? promptHash(model, entry.h) : null }];
    if (last) items.push({ text: last });
    setCrumbs(items);
  }

  function metricLines(p, li, head) {
    return INDEX.metrics.map((m) => {
      const v = p.metrics[m][li] ? p.metrics[m][li][head] : null;
      const base = p.baseline[m];
      return `${(METRIC_SHORT[m] + ":").padEnd(13)}${fmt(v)}   uniform ${fmt(base)}`;
    });
  }

  class PromptView {
    constructor(root, route) {
      const [name, hash] = route.args;
      this.model = modelOf(name);
      this.entry = entryFor(this.model, hash);
      this.sel = { li: 0, head: 0 };
      state.lastPrompt[this.model.name] = hash;
      promptCrumbs(this.model, this.entry, null);
      const m = this.model;
      this.gridWrap = h("div", { class: "grid-wrap" }, h("p", { class: "note", text: "loading…" }));
      this.textBox = h("div", { class: "prompt-text", text: INDEX.texts[hash].text });
      this.tokens = h("div", { class: "tokens" });
      root.append(promptToolbar(this, m, this.entry, [
        link("metrics", hashFor("metrics", [m.name], new URLSearchParams({ prompt: hash, sort: "induction", dir: "desc" }))),
        this.entry.r ? link("residual norms", hashFor("resid", [m.name, hash])) : null,
        this.entry.lens ? link("logit lens", hashFor("lens", [m.name, hash])) : null,
        scaleLegend()]), this.textBox, this.tokens, this.gridWrap);
      promptData(m, hash).then((p) => this.show(p), (err) => showError(this.gridWrap, err));
    }

    hashForModel(model) { return promptHash(model, this.entry.h); }
    step(delta) { const e = neighbour(this.model, this.entry.h, delta); go(promptHash(this.model, e.h)); }

    show(p) {
      this.p = p;
      fillTokens(this.tokens, p);
      if (p.thumb) { this.buildGrid(); return; }
      // short prompts carry no thumbnails: their layer chunks are as small, so draw from those
      const m = this.model, hash = this.entry.h;
      Promise.all(p.layers.map((l) => layerData(m, hash, l))).then((chunks) => {
        this.chunks = chunks;
        this.buildGrid();
      }, (err) => showError(this.gridWrap, err));
    }

    buildGrid() {
      const p = this.p, H = this.model.n_heads;
      if (!p.layers.length) {
        fill(this.gridWrap, h("p", { class: "note", text: "No attention patterns stored for this prompt (exported without the pattern hook)." }));
        return;
      }
      const avail = Math.max(200, this.gridWrap.clientWidth - 60);
      const cell = clamp(Math.floor(avail / H) - 8, 28, 112);
      const grid = h("div", { class: "grid" });
      grid.style.gridTemplateColumns = `44px repeat(${H}, ${cell + 4}px)`;
      grid.append(h("span"));
      for (let hd = 0; hd < H; hd++) grid.append(h("span", { class: "hdr", text: "H" + hd }));
      this.thumbs = [];
      p.layers.forEach((layer, li) => {
        grid.append(h("span", { class: "lbl", text: "L" + layer }));
        const row = [];
        for (let hd = 0; hd < H; hd++) {
          const c = h("canvas", { class: "thumb", dataset: { li, head: hd }, "aria-label": `layer ${layer} head ${hd}` });
          c.style.width = c.style.height = cell + "px";
          grid.append(c);
          row.push(c);
        }
        this.thumbs.push(row);
      });
      grid.addEventListener("click", (e) => {
        const c = e.target.closest("canvas.thumb");
        if (c) this.open(Number(c.dataset.li), Number(c.dataset.head));
      });
      grid.addEventListener("mousemove", (e) => {
        const c = e.target.closest("canvas.thumb");
        if (!c) { hideTip(); return; }
        const li = Number(c.dataset.li), hd = Number(c.dataset.head);
        showTip(e.clientX, e.clientY, [`layer ${p.layers[li]} head ${hd}`, ...metricLines(p, li, hd)]);
      });
      grid.addEventListener("mouseleave", hideTip);
      clear(this.gridWrap).append(grid);
      this.redraw();
    }

    redraw() {
      if (!this.thumbs) return;
      const S = this.p.thumb_size, n = (S * (S + 1)) / 2, H = this.model.n_heads;
      const fromChunks = !this.p.thumb;
      const colors = fromChunks ? f16Colors(settings.scale) : thumbColors(settings.scale);
      this.thumbs.forEach((row, li) => row.forEach((c, hd) => {
        if (fromChunks) drawThumb(c, this.chunks[li].u16, hd * n, S, colors);
        else drawThumb(c, this.p.thumb.data, (li * H + hd) * n, S, colors);
        c.classList.toggle("selected", li === this.sel.li && hd === this.sel.head);
      }));
    }

    open(li, head) { go(headHash(this.model, this.entry.h, this.p.layers[li], head)); }

    onKey(e) {
      if (["j", "n"].includes(e.key)) { this.step(1); return true; }
      if (["k", "p"].includes(e.key)) { this.step(-1); return true; }
      if (e.key === "Escape") { go("#/"); return true; }
      if (!this.p || !this.thumbs) return false;
      const L = this.p.layers.length, H = this.model.n_heads;
      const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
      if (moves[e.key]) {
        this.sel.li = clamp(this.sel.li + moves[e.key][0], 0, L - 1);
        this.sel.head = clamp(this.sel.head + moves[e.key][1], 0, H - 1);
        this.redraw();
        const c = this.thumbs[this.sel.li][this.sel.head];
        c.scrollIntoView({ block: "nearest", inline: "nearest" });
        return true;
      }
      if (e.key === "Enter") { this.open(this.sel.li, this.sel.head); return true; }
      return false;
    }

    unmount() { hideTip(); }
  }

  const thumbTables = {};
  function thumbColors(scale) {
    if (!thumbTables[scale]) {
      const t = new Uint32Array(256);
      for (let u = 0; u < 256; u++) t[u] = packed(colorIndex(u / 255, scale));
      thumbTables[scale] = t;
    }
    return thumbTables[scale];
  }

  /** A thumbnail is the max-pooled lower triangle, row by row, from `offset`. */
  function drawThumb(canvas, data, offset, S, colors) {
    canvas.width = S;
    canvas.height = S;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(S, S);
    const px = new Uint32Array(img.data.buffer);
    let k = offset;
    for (let i = 0; i < S; i++) {
      for (let j = 0; j <= i; j++) px[i * S + j] = colors[data[k++]];
    }
    ctx.putImageData(img, 0, 0);
  }

  Object.assign(LENS_UI, { promptToolbar, promptCrumbs, PromptView });
})();
