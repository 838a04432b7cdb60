/* lens_cache viewer, views_head.js: the head view (one head of one prompt) and the compare
 * view (two heads side by side), both built on HeadPane.
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { HeadPane, INDEX, METRIC_SHORT, METRIC_TITLES, canvasPoint, clamp, cssVar, rgb, clear, entryFor, entryOf, fill, fillTokens, fmt,
    lossComparison, headRow, hideTip, legend, maxAbs, showTip, signedColor, weighted, weightingButton,
    fmtValue, go, h, hashFor, headHash, layerData, link, modelOf, nearestLayer, neighbour, noPatternsNote, option,
    promptCrumbs, promptData, promptHash, promptName, promptToolbar, scaleLegend, select, setCrumbs,
    showError, state } = LENS_UI;

  // ------------------------------------------------------------------ head view

  /** This head's metrics on this prompt beside uniform attention's, as a small table; with
   * head contributions also on the value-weighted pattern, and the head's mean DLA. */
  function metricTable(p, li, head) {
    const row = (label, get) => h("tr", null, h("th", { text: label }),
      ...INDEX.metrics.map((m) => h("td", { class: "num", text: fmt(get(m)) })));
    const vw = p.heads ? p.heads.metrics : null;
    const dli = p.heads ? p.heads.layers.indexOf(p.layers[li]) : -1;
    return h("table", { class: "mini" },
      h("tr", null, h("th"), ...INDEX.metrics.map((m) => h("th", { title: METRIC_TITLES[m], text: METRIC_SHORT[m] }))),
      row("head", (m) => (p.metrics[m][li] ? p.metrics[m][li][head] : null)),
      vw ? row("value-weighted", (m) => (vw[m][li] ? vw[m][li][head] : null)) : null,
      row("uniform", (m) => p.baseline[m]),
      dli >= 0 ? h("tr", null, h("th", { title: METRIC_TITLES.dla, text: "mean DLA" }),
        h("td", { class: "num", text: fmt(p.heads.dla_mean[dli][head], 5) })) : null);
  }

  /** The user metrics (lens_cache.metric) of this head: scalars as a table, each matrix as a
   * small heat map coloured on its own range (hover shows the stored value); and the figures
   * pattern-lens's figures_main wrote for this head, linked (images shown). Null when none. */
  function userPart(p, li, head) {
    const u = p.user, figs = p.figures && p.figures.heads[p.layers[li] + "/" + head];
    if (!u && !figs) return null;
    const box = h("div", { class: "user-part" });
    if (u) {
      const names = Object.keys(u.scalars);
      if (names.length) {
        box.append(h("table", { class: "mini user-scalars" },
          h("tr", null, ...names.map((n) => h("th", { text: n, title: "your metric (lens_cache.metric)" }))),
          h("tr", null, ...names.map((n) => h("td", { class: "num", dataset: { name: n }, text: fmtUser(u.scalars[n][li][head]) })))));
      }
      for (const [name, arr] of Object.entries(u.matrices)) box.append(matrixThumb(name, arr, li, head));
    }
    if (figs) box.append(figureList(p.figures.dir, p.layers[li], head, figs));
    return box;
  }

  function fmtUser(v) { return v == null ? "–" : fmtValue(v); }

  function matrixThumb(name, arr, li, head) {
    const [, H, R, C] = arr.shape, off = (li * H + head) * R * C;
    const vals = arr.data.subarray(off, off + R * C);
    const finite = Array.from(vals).filter(Number.isFinite);
    const lo = Math.min(...finite), hi = Math.max(...finite);
    const cell = clamp(Math.floor(96 / Math.max(R, C)), 1, 12);
    const c = h("canvas", { class: "user-matrix", width: C * cell, height: R * cell,
      dataset: { name, rows: R, cols: C, cell } });
    const ctx = c.getContext("2d");
    for (let i = 0; i < R; i++) {
      for (let j = 0; j < C; j++) {
        const v = vals[i * C + j];
        ctx.fillStyle = Number.isFinite(v) ? rgb(Math.round(((v - lo) / (hi - lo || 1)) * 255)) : cssVar("--mask");
        ctx.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    c.addEventListener("mousemove", (e) => {
      const [x, y] = canvasPoint(c, e), i = Math.floor(y / cell), j = Math.floor(x / cell);
      if (i < 0 || i >= R || j < 0 || j >= C) { hideTip(); return; }
      showTip(e.clientX, e.clientY, [`${name} [${i}, ${j}]`, `value ${fmtValue(vals[i * C + j])}`]);
    });
    c.addEventListener("mouseleave", hideTip);
    return h("figure", { class: "user-thumb" }, c, h("figcaption", { class: "note", text: `${name} (${R}×${C})` }));
  }

  /** Links to the head's figure files (relative to index.html); images shown inline, other
   * formats (svgz, error notes) linked only, since a browser will not inflate them from disk. */
  function figureList(dir, layer, head, names) {
    const path = (n) => [...dir.split("/"), "L" + layer, "H" + head, n].map(encodeURIComponent).join("/");
    return h("div", { class: "figures" }, h("span", { class: "note", text: "pattern-lens figures:" }),
      ...names.map((n) => {
        const inline = /\.(png|svg)$/.test(n) ? h("img", { src: path(n), alt: n, class: "figure" }) : null;
        return h("a", { href: path(n), target: "_blank", rel: "noopener", title: n, dataset: { figure: n } }, inline || n);
      }));
  }

  /** The head's direct logit attribution at each position as a token strip: red raises the
   * logit of the actual next token, blue lowers it; hover shows the stored value. */
  function fillDla(box, p, layer, head) {
    const dla = headRow(p, "dla", layer, head);
    box.hidden = !dla;
    if (!dla) return;
    const scale = maxAbs(dla), strip = h("div", { class: "tokens dla" });
    p.tokens.slice(0, 2048).forEach((t, i) => {
      const span = h("span", { class: "tok", dataset: { pos: i }, text: t });
      const bg = signedColor(dla[i], scale);
      if (bg) span.style.background = bg;
      strip.append(span);
    });
    strip.onmousemove = (e) => {
      const span = e.target.closest(".tok");
      if (!span) { hideTip(); return; }
      const i = Number(span.dataset.pos), T = p.tokens.length;
      showTip(e.clientX, e.clientY, i + 1 < T
        ? [`position ${i}: ${JSON.stringify(p.tokens[i])} → next ${JSON.stringify(p.tokens[i + 1])}`, `DLA ${fmtValue(dla[i])}`]
        : [`position ${i}: ${JSON.stringify(p.tokens[i])}`, "last position: no next token"]);
    };
    strip.onmouseleave = hideTip;
    fill(box, h("div", { class: "note", text: `L${layer} H${head}: direct logit attribution toward the actual next token ` +
      `(red raises its logit, blue lowers it; |max| ${fmt(scale, 5)})` }), strip);
  }

  class HeadView {
    constructor(root, route) {
      this.root = root;
      this.mount(route);
    }

    parse(route) {
      const [name, hash, layer, head] = route.args;
      const model = modelOf(name), entry = entryFor(model, hash);
      const l = Number(layer), hd = Number(head);
      if (!Number.isInteger(l) || !Number.isInteger(hd) || hd < 0 || hd >= model.n_heads) {
        throw new Error(`no head ${layer}.${head} in ${name} (${model.n_layers} layers × ${model.n_heads} heads)`);
      }
      // ?q=<query>&k=<key>: a cell to select once shown (links from the top-examples page)
      const q = route.query.get("q"), k = route.query.get("k");
      const want = q != null && k != null ? { i: Number(q), j: Number(k) } : null;
      return { model, entry, layer: l, head: hd, want };
    }

    mount(route) {
      Object.assign(this, this.parse(route));
      state.lastPrompt[this.model.name] = this.entry.h;
      const root = clear(this.root);
      this.layerSel = h("select", { title: "layer (↑ ↓)", onchange: (e) => this.goto(Number(e.target.value), this.head) });
      this.headSel = h("select", { title: "head (← →)", onchange: (e) => this.goto(this.layer, Number(e.target.value)) });
      for (let hd = 0; hd < this.model.n_heads; hd++) this.headSel.append(option(hd, "head " + hd));
      this.legendBox = h("span", null, scaleLegend());
      this.weightBox = h("span");
      this.topLink = h("span");
      const zoomBtn = (text, f, title) => h("button", { type: "button", text, title, onclick: () => this.pane.zoom(f) });
      root.append(promptToolbar(this, this.model, this.entry, [
        this.layerSel, this.headSel,
        zoomBtn("−", 0.8, "zoom out (-)"), zoomBtn("fit", 0, "fit (0)"), zoomBtn("+", 1.25, "zoom in (+)"),
        this.legendBox, this.weightBox, this.topLink,
        link("grid", promptHash(this.model, this.entry.h), "all heads of this prompt (Esc)"),
        h("a", { href: "#", text: "compare", title: "side by side with another model or head",
          onclick: (e) => { e.preventDefault(); go(this.compareHash()); } }),
      ]));
      this.info = h("div", { class: "side" });
      this.panes = h("div", { class: "panes" });
      this.tokens = h("div", { class: "tokens", hidden: true }); // with predictions only
      this.dlaRow = h("div", { class: "dla-row", hidden: true }); // with head contributions only
      root.append(this.tokens, this.info, this.panes, this.dlaRow);
      this.pane = new HeadPane(this.panes, { onSelect: () => this.showSelection() });
      this.aside = h("aside", { class: "sel-panel" });
      this.panes.append(this.aside);
      this.load();
    }

    /** Same view type, same prompt: keep the pane (and its zoom), load another head. */
    update(route) {
      const next = this.parse(route);
      if (next.model !== this.model || next.entry !== this.entry) return false;
      this.layer = next.layer;
      this.head = next.head;
      this.want = next.want;
      this.load();
      return true;
    }

    hashForModel(model) {
      const e = entryFor(model, this.entry.h);
      return headHash(model, e.h, this.layer, Math.min(this.head, model.n_heads - 1));
    }
    step(delta) {
      const e = neighbour(this.model, this.entry.h, delta);
      go(headHash(this.model, e.h, this.layer, this.head));
    }
    goto(layer, head) { go(headHash(this.model, this.entry.h, layer, head)); }

    compareHash() {
      const other = INDEX.models.find((m) => m !== this.model && entryOf.has(m.idx + "|" + this.entry.h));
      const a = [this.model.name, this.entry.h, this.layer, this.head];
      const b = other
        ? [other.name, this.entry.h, Math.min(this.layer, other.n_layers - 1), Math.min(this.head, other.n_heads - 1)]
        : [this.model.name, this.entry.h, this.layer, (this.head + 1) % this.model.n_heads];
      return hashFor("compare", a.concat(b));
    }

    async load() {
      const { model, entry, layer, head } = this;
      promptCrumbs(model, entry, `L${layer} H${head}`);
      this.headSel.value = String(head);
      try {
        const p = await promptData(model, entry.h);
        if (!p.layers.length) throw new Error("no layers stored for this prompt");
        if (p.patterns === false) throw new Error(noPatternsNote(p));
        if (!p.layers.includes(layer)) { // e.g. after j/k onto a prompt exported with fewer layers
          location.replace(headHash(model, entry.h, nearestLayer(p.layers, layer), head));
          return;
        }
        clear(this.layerSel);
        for (const l of p.layers) this.layerSel.append(option(l, "layer " + l, l === layer));
        const chunk = await layerData(model, entry.h, layer);
        if (this.layer !== layer || this.head !== head) return; // a newer request won
        this.p = p;
        if (p.pred && this.tokens.hidden) { this.tokens.hidden = false; fillTokens(this.tokens, p); }
        this.pane.set(chunk, head, p.tokens, this.weights());
        this.pane.el.dataset.shown = layer + "/" + head; // what is drawn now (tests, benchmarks)
        this.showContributions();
        if (this.want) { this.pane.reveal(this.want.i, this.want.j); this.want = null; }
        this.showSelection();
      } catch (err) {
        showError(this.info, err);
      }
    }

    /** The head's value norms when the pattern is shown value-weighted, else null. */
    weights() { return weighted(this.p) ? headRow(this.p, "value_norms", this.layer, this.head) : null; }

    /** The DLA row, the legend and the link to the head's top examples. */
    showContributions() {
      const { model, layer, head, p } = this;
      fillDla(this.dlaRow, p, layer, head);
      const w = this.pane.weights;
      fill(this.legendBox, w ? legend(["0", fmtValue(this.pane.max) + " (A·‖v W_O‖)"]) : scaleLegend());
      fill(this.weightBox, p.heads ? weightingButton() : null);
      fill(this.topLink, (model.top || []).concat(model.dist || []).includes(layer)
        ? link("top examples", hashFor("top", [model.name, layer, head]), "this head's strongest cells across the model's prompts")
        : null);
    }

    showSelection() {
      const p = this.p, li = p.layers.indexOf(this.layer);
      const labels = p.labels && p.labels[li] ? p.labels[li][this.head] : [];
      fill(this.info,
        h("span", { class: "title", text: `L${this.layer} H${this.head}` }),
        labels.length ? h("span", { class: "badge", text: labels.join(", ") }) : null,
        metricTable(p, li, this.head),
        userPart(p, li, this.head),
        h("span", { class: "note", text: "drawn in " + this.pane.el.dataset.drawMs + " ms" }));
      const box = clear(this.aside), sel = this.pane.sel;
      if (!sel) {
        box.append(h("p", { class: "note", text: "Click a cell or a token label to highlight its row and column." }));
        return;
      }
      box.append(h("div", { class: "note", text: `query ${sel.i}` }), h("div", { class: "tok", text: JSON.stringify(p.tokens[sel.i]) }),
        h("div", { class: "note", text: "attends most to" }));
      const tbl = h("table");
      for (const [j, v] of this.pane.topKeys(sel.i, 10)) {
        tbl.append(h("tr", null, h("td", { class: "num", text: String(j) }),
          h("td", { class: "tok", text: JSON.stringify(p.tokens[j]) }), h("td", { class: "num", text: fmtValue(v) })));
      }
      box.append(tbl);
    }

    redraw() {
      if (!this.p) return;
      this.pane.weights = this.weights();
      this.pane.rebuild();
      this.showContributions();
      this.showSelection();
    }

    onKey(e) {
      const k = e.key;
      if (k === "j" || k === "n") { this.step(1); return true; }
      if (k === "k" || k === "p") { this.step(-1); return true; }
      if (k === "Escape") { go(promptHash(this.model, this.entry.h)); return true; }
      if (!this.p) return false;
      const L = this.p.layers, li = L.indexOf(this.layer), H = this.model.n_heads;
      if (k === "ArrowLeft") { this.goto(this.layer, (this.head + H - 1) % H); return true; }
      if (k === "ArrowRight") { this.goto(this.layer, (this.head + 1) % H); return true; }
      if (k === "ArrowUp") { this.goto(L[Math.max(0, li - 1)], this.head); return true; }
      if (k === "ArrowDown") { this.goto(L[Math.min(L.length - 1, li + 1)], this.head); return true; }
      if (k === "+" || k === "=") { this.pane.zoom(1.25); return true; }
      if (k === "-") { this.pane.zoom(0.8); return true; }
      if (k === "0") { this.pane.zoom(0); return true; }
      if (k === "c") { go(this.compareHash()); return true; }
      return false;
    }

    unmount() { this.pane.destroy(); }
  }

  // ------------------------------------------------------------------ compare view

  class CompareView {
    constructor(root, route) {
      const a = route.args;
      if (a.length !== 8) throw new Error("compare needs model/hash/layer/head twice");
      this.sides = [a.slice(0, 4), a.slice(4, 8)].map((s) => ({
        model: modelOf(s[0]), hash: s[1], layer: Number(s[2]), head: Number(s[3]),
      }));
      this.sides.forEach((s) => entryFor(s.model, s.hash));
      const A = this.sides[0];
      setCrumbs([{ text: "prompts", href: "#/" }, { text: promptName(entryFor(A.model, A.hash)), href: promptHash(A.model, A.hash) }, { text: "compare" }]);
      this.sync = h("input", { type: "checkbox", checked: true });
      root.append(h("div", { class: "toolbar" }, h("span", { class: "title", text: "compare" }),
        h("label", null, this.sync, "sync scroll and zoom"), scaleLegend()));
      const panes = h("div", { class: "panes" });
      const losses = h("div", { class: "loss-compare" });
      root.append(losses, panes);
      this.panes = this.sides.map((side, k) => this.column(panes, side, k));
      Promise.all(this.sides.map((s) => promptData(s.model, s.hash))).then(([pa, pb]) => {
        const strip = lossComparison(pa, pb, this.sides.map((s) => s.model.name));
        if (strip) losses.append(strip);
      }).catch((err) => showError(losses, err));
    }

    column(parent, side, k) {
      const col = h("div", { class: "pane-col" });
      parent.append(col);
      const setSide = (patch) => {
        const next = this.sides.map((s) => Object.assign({}, s));
        Object.assign(next[k], patch);
        go(hashFor("compare", next.flatMap((s) => [s.model.name, s.hash, s.layer, s.head])));
      };
      const models = INDEX.models.filter((m) => entryOf.has(m.idx + "|" + side.hash));
      const layerSel = select([], (v) => setSide({ layer: Number(v) }), "layer");
      const headOpts = [];
      for (let hd = 0; hd < side.model.n_heads; hd++) headOpts.push(option(hd, "head " + hd, hd === side.head));
      const e = entryFor(side.model, side.hash);
      col.append(h("div", { class: "toolbar" },
        select(models.map((m) => option(m.name, m.name, m === side.model)), (v) => setSide({ model: modelOf(v), head: 0 }), "model"),
        layerSel, select(headOpts, (v) => setSide({ head: Number(v) }), "head"),
        link(promptName(e), headHash(side.model, side.hash, side.layer, side.head), "open this head")));
      const info = h("div", { class: "side" });
      col.append(info);
      const pane = new HeadPane(col, { compact: true, onScroll: (p) => this.follow(p) });
      promptData(side.model, side.hash).then(async (p) => {
        for (const l of p.layers) layerSel.append(option(l, "layer " + l, l === side.layer));
        if (!p.layers.includes(side.layer)) throw new Error(`layer ${side.layer} not stored; stored: ${p.layers.join(", ")}`);
        const chunk = await layerData(side.model, side.hash, side.layer);
        pane.set(chunk, side.head, p.tokens);
        const li = p.layers.indexOf(side.layer);
        clear(info).append(metricTable(p, li, side.head));
      }).catch((err) => showError(info, err));
      return pane;
    }

    /** Mirror scroll (and zoom) onto the other pane when both show the same number of tokens. */
    follow(src) {
      if (!this.sync.checked || this.following) return;
      const other = this.panes.find((p) => p !== src);
      if (!other || !other.chunk || !src.chunk || other.chunk.T !== src.chunk.T) return;
      this.following = true;
      if (other.cs !== src.cs) { other.cs = src.cs; other.fitMode = src.fitMode; other.applySize(); }
      other.scroller.scrollLeft = src.scroller.scrollLeft;
      other.scroller.scrollTop = src.scroller.scrollTop;
      other.draw();
      this.following = false;
    }

    redraw() { this.panes.forEach((p) => p.rebuild()); }
    onKey(e) {
      if (e.key === "Escape") { const s = this.sides[0]; go(headHash(s.model, s.hash, s.layer, s.head)); return true; }
      return false;
    }
    unmount() { this.panes.forEach((p) => p.destroy()); }
  }

  Object.assign(LENS_UI, { HeadView, CompareView });
})();
