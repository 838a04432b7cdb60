/* lens_cache viewer, views_prompt.js: the prompt view (one prompt's layer x head grid of
 * thumbnails) and the toolbar and crumbs of every view about one prompt.
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { F16, INDEX, METRIC_SHORT, clamp, clear, colorIndex, entryFor, entryOf, f16Colors, fill,
    fillTokens, fmt, fmtValue, go, h, hashFor, headHash, headRow, hideTip, layerData, link, maxAbs, modelOf,
    neighbour, noPatternsNote, option, packed, promptData, promptHash, promptName, scaleLegend, select, setCrumbs, settings,
    showError, showTip, signedColor, state, weighted, weightingButton } = LENS_UI;

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
      this.dlaGrid = h("div", { class: "dla-grid", hidden: true }); // with head contributions
      this.weightBox = h("span");
      this.tokens.addEventListener("click", (e) => {
        const span = e.target.closest(".tok");
        if (span) this.showDla(Number(span.dataset.pos));
      });
      root.append(promptToolbar(this, m, this.entry, [this.weightBox,
        link("metrics", hashFor("metrics", [m.name], new URLSearchParams({ prompt: hash, sort: "induction", dir: "desc" }))),
        this.entry.r ? link("residual norms", hashFor("resid", [m.name, hash])) : null,
        this.entry.lens ? link("logit lens", hashFor("lens", [m.name, hash])) : null,
        scaleLegend()]), this.textBox, this.tokens, this.dlaGrid, this.gridWrap);
      promptData(m, hash).then((p) => this.show(p), (err) => showError(this.gridWrap, err));
    }

    hashForModel(model) { return promptHash(model, this.entry.h); }
    step(delta) { const e = neighbour(this.model, this.entry.h, delta); go(promptHash(this.model, e.h)); }

    show(p) {
      this.p = p;
      fillTokens(this.tokens, p);
      fill(this.weightBox, p.heads ? weightingButton() : null);
      if (p.heads) this.showDla(null);
      if (p.thumb || p.patterns === false) { this.buildGrid(); return; }
      // short prompts carry no thumbnails: their layer chunks are as small, so draw from those
      const m = this.model, hash = this.entry.h;
      Promise.all(p.layers.map((l) => layerData(m, hash, l))).then((chunks) => {
        this.chunks = chunks;
        this.buildGrid();
      }, (err) => showError(this.gridWrap, err));
    }

    buildGrid() {
      const p = this.p, H = this.model.n_heads;
      if (!p.layers.length || p.patterns === false) {
        fill(this.gridWrap, p.topk ? LENS_UI.topkLinks(this.model, this.entry.h, p.topk, H)
          : h("p", { class: "note", text: noPatternsNote(p) }));
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
      if (this.p) fill(this.weightBox, this.p.heads ? weightingButton() : null);
      if (!this.thumbs) return;
      const p = this.p, S = p.thumb_size, n = (S * (S + 1)) / 2, H = this.model.n_heads;
      const fromChunks = !p.thumb, vw = weighted(p);
      const thumbs = vw ? p.heads.thumb : p.thumb; // value-weighted: row shares / head max
      const colors = fromChunks ? f16Colors(settings.scale) : thumbColors(settings.scale);
      this.thumbs.forEach((row, li) => row.forEach((c, hd) => {
        const norms = vw && fromChunks ? headRow(p, "value_norms", p.layers[li], hd) : null;
        if (norms) drawWeightedThumb(c, this.chunks[li].u16, hd * n, S, norms);
        else if (fromChunks) drawThumb(c, this.chunks[li].u16, hd * n, S, colors);
        else drawThumb(c, thumbs.data, (li * H + hd) * n, S, colors);
        c.classList.toggle("selected", li === this.sel.li && hd === this.sel.head);
      }));
    }

    /** The layer x head grid of direct logit attributions at position `pos` (a clicked
     * token), toward the token after it; hover shows the stored value. */
    showDla(pos) {
      const p = this.p, T = p.tokens.length;
      if (!p || !p.heads) return;
      this.dlaGrid.hidden = false;
      const note = (text) => h("div", { class: "note", text });
      if (pos == null || pos >= T - 1) {
        fill(this.dlaGrid, note(pos == null ? "Click a token to see each head's direct logit attribution toward the token after it."
          : "The last position has no next token: no logit attribution."));
        return;
      }
      this.dlaPos = pos;
      const L = p.heads.layers, H = this.model.n_heads, cell = 22;
      const at = (li, hd) => p.heads.dla.data[(li * H + hd) * T + pos];
      const values = [];
      L.forEach((_, li) => { for (let hd = 0; hd < H; hd++) values.push(at(li, hd)); });
      const scale = maxAbs(values);
      const grid = h("div", { class: "dla-cells" });
      grid.style.gridTemplateColumns = `44px repeat(${H}, ${cell}px)`;
      grid.append(h("span"));
      for (let hd = 0; hd < H; hd++) grid.append(h("span", { class: "hdr", text: "H" + hd }));
      L.forEach((layer, li) => {
        grid.append(h("span", { class: "lbl", text: "L" + layer }));
        for (let hd = 0; hd < H; hd++) {
          const c = h("span", { class: "dla-cell", dataset: { layer, head: hd } });
          c.style.background = signedColor(at(li, hd), scale) || "";
          grid.append(c);
        }
      });
      grid.onmousemove = (e) => {
        const c = e.target.closest(".dla-cell");
        if (!c) { hideTip(); return; }
        const layer = Number(c.dataset.layer), hd = Number(c.dataset.head);
        showTip(e.clientX, e.clientY, [`L${layer} H${hd}, position ${pos}: ${JSON.stringify(p.tokens[pos])} → next ${JSON.stringify(p.tokens[pos + 1])}`,
          `DLA ${fmtValue(at(L.indexOf(layer), hd))}`]);
      };
      grid.onmouseleave = hideTip;
      grid.onclick = (e) => {
        const c = e.target.closest(".dla-cell");
        if (c) go(headHash(this.model, this.entry.h, Number(c.dataset.layer), Number(c.dataset.head)));
      };
      fill(this.dlaGrid, note(`direct logit attribution of each head at position ${pos} ${JSON.stringify(p.tokens[pos])} ` +
        `toward ${JSON.stringify(p.tokens[pos + 1])} (red raises its logit, blue lowers it; |max| ${fmt(scale, 5)})`), grid);
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

  /** A short prompt's value-weighted thumbnail from its chunk: A[i, j] · norms[j], each row
   * divided by its sum, scaled by the head's largest share (as the stored long-prompt ones). */
  function drawWeightedThumb(canvas, u16, offset, S, norms) {
    const shares = new Float32Array((S * (S + 1)) / 2);
    let k = offset, m = 0, at = 0;
    for (let i = 0; i < S; i++) {
      let sum = 0;
      for (let j = 0; j <= i; j++) sum += F16[u16[k + j]] * norms[j];
      for (let j = 0; j <= i; j++, at++) {
        shares[at] = sum > 0 ? (F16[u16[k + j]] * norms[j]) / sum : 0;
        m = Math.max(m, shares[at]);
      }
      k += i + 1;
    }
    canvas.width = S;
    canvas.height = S;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(S, S);
    const px = new Uint32Array(img.data.buffer);
    at = 0;
    for (let i = 0; i < S; i++) {
      for (let j = 0; j <= i; j++) px[i * S + j] = packed(colorIndex(shares[at++] / (m || 1), settings.scale));
    }
    ctx.putImageData(img, 0, 0);
  }

  Object.assign(LENS_UI, { promptToolbar, promptCrumbs, PromptView });
})();
