/* lens_cache viewer, views_lens.js: the logit lens of one prompt (#/lens/<model>/<hash>):
 * layers x positions, each cell the top-1 token that layer's residual predicts, coloured by the
 * probability of the actual next token (or, switched with `s`, of that top-1 token).
 * Only the cells in view are drawn, on one canvas the size of the viewport, so 1,024 tokens x
 * 30 layers cost what a screenful does. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { colorIndex, entryFor, go, h, hashFor, hideTip, legend, lensData, modelOf,
    neighbour, option, predictionLines, promptCrumbs, promptData, promptHash, promptToolbar,
    rgb, select, showError, showTip, state, tokLabel, cssVar } = LENS_UI;

  const CELL_W = 64, CELL_H = 20, LABEL_W = 44, HEAD_H = 22;
  const COLOURS = { target: "p(actual next token)", top: "p(top-1 token)" };

  class LensView {
    constructor(root, route) {
      const [name, hash] = route.args;
      this.model = modelOf(name);
      this.entry = entryFor(this.model, hash);
      this.colour = route.query.get("colour") === "top" ? "top" : "target";
      state.lastPrompt[this.model.name] = hash;
      promptCrumbs(this.model, this.entry, "logit lens");
      this.colourSel = select(Object.entries(COLOURS).map(([v, label]) => option(v, "colour: " + label, v === this.colour)),
        (v) => this.setColour(v), "cell colour (s)");
      root.append(promptToolbar(this, this.model, this.entry, [
        this.colourSel, legend(["0", "1"]), h("a", { href: promptHash(this.model, hash), text: "grid", title: "all heads (Esc)" })]));
      this.wrap = h("div", { class: "lens-wrap" }, h("p", { class: "note", text: "loading…" }));
      root.append(this.wrap);
      // Reached by address or by prev/next from a prompt that has it: say what is missing and
      // how to get it, rather than failing to load a data file that was never written.
      if (!this.entry.lens) {
        this.wrap.replaceChildren(h("p", { class: "note", text: "The logit lens was not exported for this prompt. "
          + "Export again with logit_lens among --hooks (and the same other kinds) and --force to add it." }));
        return;
      }
      Promise.all([promptData(this.model, hash), lensData(this.model, hash)])
        .then(([p, lens]) => this.show(p, lens), (err) => showError(this.wrap, err));
    }

    hashForModel(model) { return hashFor("lens", [model.name, this.entry.h]); }
    step(delta) { go(hashFor("lens", [this.model.name, neighbour(this.model, this.entry.h, delta).h])); }

    setColour(v) {
      this.colour = v;
      this.colourSel.value = v;
      history.replaceState(null, "", hashFor("lens", [this.model.name, this.entry.h], v === "top" ? "colour=top" : ""));
      this.redraw();
    }

    show(p, lens) {
      this.p = p;
      this.lens = lens;
      this.T = p.tokens.length;
      const L = lens.layers.length;
      this.scroller = h("div", { class: "lens-scroller", dataset: {
        cellW: CELL_W, cellH: CELL_H, labelW: LABEL_W, headH: HEAD_H } });
      const spacer = h("div");
      spacer.style.width = LABEL_W + this.T * CELL_W + "px";
      spacer.style.height = HEAD_H + L * CELL_H + "px";
      this.scroller.append(spacer);
      this.scroller.style.height = Math.min(HEAD_H + L * CELL_H + 18, Math.max(200, innerHeight - 160)) + "px";
      this.canvas = h("canvas", { class: "lens-canvas", "aria-label": "logit lens" });
      this.wrap.replaceChildren(this.canvas, this.scroller);
      this.scroller.addEventListener("scroll", () => this.redraw());
      this.scroller.addEventListener("mousemove", (e) => this.hover(e));
      this.scroller.addEventListener("mouseleave", hideTip);
      this.resize = new ResizeObserver(() => this.redraw());
      this.resize.observe(this.scroller);
      this.redraw();
    }

    /** (layer index, position) under the pointer, or null over the labels or outside. */
    cellAt(e) {
      const r = this.scroller.getBoundingClientRect();
      const x = e.clientX - r.left, y = e.clientY - r.top;
      if (x < LABEL_W || y < HEAD_H) return null;
      const i = Math.floor((x - LABEL_W + this.scroller.scrollLeft) / CELL_W);
      const li = Math.floor((y - HEAD_H + this.scroller.scrollTop) / CELL_H);
      return i >= 0 && i < this.T && li >= 0 && li < this.lens.layers.length ? { li, i } : null;
    }

    hover(e) {
      const c = this.cellAt(e);
      if (!c) { hideTip(); return; }
      const head = `layer ${this.lens.layers[c.li]}, position ${c.i}: ${JSON.stringify(this.p.tokens[c.i])}`;
      showTip(e.clientX, e.clientY, [head, ...predictionLines(this.lens, c.li, c.i, this.p.tokens)]);
    }

    value(li, i) {
      const at = li * this.T + i;
      return this.colour === "top" ? Math.exp(this.lens.top_lp.data[at * this.lens.k]) : Math.exp(-this.lens.loss.data[at]);
    }

    redraw() {
      if (!this.canvas) return;
      const s = this.scroller, W = s.clientWidth, H = s.clientHeight, dpr = devicePixelRatio || 1;
      this.canvas.width = Math.round(W * dpr);
      this.canvas.height = Math.round(H * dpr);
      this.canvas.style.width = W + "px";
      this.canvas.style.height = H + "px";
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, W, H);
      ctx.font = "11px ui-monospace, Menlo, Consolas, monospace";
      ctx.textBaseline = "middle";
      const i0 = Math.floor(s.scrollLeft / CELL_W), i1 = Math.min(this.T, Math.ceil((s.scrollLeft + W) / CELL_W) + 1);
      const l0 = Math.floor(s.scrollTop / CELL_H), l1 = Math.min(this.lens.layers.length, Math.ceil((s.scrollTop + H) / CELL_H) + 1);
      const k = this.lens.k, ids = this.lens.top_ids.data, fg = cssVar("--fg") || "#000";
      for (let li = l0; li < l1; li++) {
        const y = HEAD_H + li * CELL_H - s.scrollTop;
        for (let i = i0; i < i1; i++) {
          const x = LABEL_W + i * CELL_W - s.scrollLeft, v = this.value(li, i);
          const ci = Number.isFinite(v) ? colorIndex(v, "linear") : null;
          ctx.fillStyle = ci == null ? "#888" : rgb(ci);
          ctx.fillRect(x, y, CELL_W - 1, CELL_H - 1);
          ctx.fillStyle = ci != null && ci > 150 ? "#000" : "#fff";
          ctx.fillText(tokLabel(this.lens.vocab[ids[(li * this.T + i) * k]] ?? "?", 8), x + 3, y + CELL_H / 2);
        }
      }
      // the fixed header (input tokens) and layer labels, drawn over the scrolled cells
      ctx.fillStyle = cssVar("--bg") || "#fff";
      ctx.fillRect(0, 0, W, HEAD_H);
      ctx.fillRect(0, 0, LABEL_W, H);
      ctx.fillStyle = fg;
      for (let i = i0; i < i1; i++) ctx.fillText(tokLabel(this.p.tokens[i], 8), LABEL_W + i * CELL_W - s.scrollLeft + 3, HEAD_H / 2);
      for (let li = l0; li < l1; li++) ctx.fillText("L" + this.lens.layers[li], 4, HEAD_H + li * CELL_H - s.scrollTop + CELL_H / 2);
      ctx.fillStyle = cssVar("--bg") || "#fff";
      ctx.fillRect(0, 0, LABEL_W, HEAD_H);
      this.scroller.dataset.drawn = this.colour;
    }

    onKey(e) {
      if (["j", "n"].includes(e.key)) { this.step(1); return true; }
      if (["k", "p"].includes(e.key)) { this.step(-1); return true; }
      if (e.key === "s") { this.setColour(this.colour === "top" ? "target" : "top"); return true; }
      if (e.key === "Escape") { go(promptHash(this.model, this.entry.h)); return true; }
      return false;
    }

    unmount() { hideTip(); if (this.resize) this.resize.disconnect(); }
  }

  Object.assign(LENS_UI, { LensView });
})();
