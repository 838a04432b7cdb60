/* lens_cache viewer, head_canvas.js: one head's attention pattern on a canvas (HeadPane),
 * used by the head and compare views. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { F16, clamp, colorIndex, cssVar, f16Colors, fmtValue, h, hideTip, packed, settings,
    showTip, tokLabel } = LENS_UI;

  // ------------------------------------------------------------------ one head, on a canvas

  /**
   * One head's pattern: a canvas the size of the viewport under a transparent scroller whose
   * spacer is T * cell px. Only the visible part is drawn, from a T x T image built once with
   * ImageData, so zoom and scroll cost one drawImage.
   */
  class HeadPane {
    constructor(parent, opts) {
      this.opts = opts || {};
      this.cs = 0;
      this.sel = null; // {i, j}: highlighted query row i and key column j
      this.hover = null;
      this.el = h("div", { class: "pane" });
      if (this.opts.compact) { this.el.style.setProperty("--lw", "90px"); this.el.style.setProperty("--lh", "90px"); }
      this.corner = h("div", { class: "corner" });
      this.top = h("canvas", { class: "labels", "aria-label": "key tokens" });
      this.left = h("canvas", { class: "labels", "aria-label": "query tokens" });
      this.canvas = h("canvas", { class: "matrix" });
      this.spacerBox = h("div", { class: "spacer-box" });
      this.scroller = h("div", { class: "scroller", tabindex: "-1" }, this.spacerBox);
      this.viewport = h("div", { class: "viewport" }, this.canvas, this.scroller);
      // label canvases sit in boxes so that their pixel size never feeds back into the layout
      this.topBox = h("div", { class: "lab" }, this.top);
      this.leftBox = h("div", { class: "lab" }, this.left);
      this.el.append(this.corner, this.topBox, this.leftBox, this.viewport);
      parent.append(this.el);
      this.bind();
    }

    bind() {
      let queued = false;
      this.scroller.addEventListener("scroll", () => {
        if (this.opts.onScroll) this.opts.onScroll(this);
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; this.draw(); });
      });
      this.scroller.addEventListener("mousemove", (e) => this.onHover(e));
      this.scroller.addEventListener("mouseleave", () => { this.hover = null; hideTip(); this.draw(); });
      this.scroller.addEventListener("click", (e) => {
        const c = this.cellAt(e);
        if (c) this.select(c.i, c.j);
      });
      this.scroller.addEventListener("wheel", (e) => {
        if (!e.ctrlKey && !e.metaKey) return;
        e.preventDefault();
        this.zoom(e.deltaY < 0 ? 1.25 : 0.8, e);
      }, { passive: false });
      this.left.addEventListener("click", (e) => this.labelClick(e, "y"));
      this.top.addEventListener("click", (e) => this.labelClick(e, "x"));
      this.resizer = new ResizeObserver(() => this.resize());
      this.resizer.observe(this.viewport);
    }

    /** Show head `head` of a decoded layer chunk; keeps zoom when the length is unchanged.
     * `weights` (the head's `[T]` value norms ‖v_j W_O‖, or null) shows the value-weighted
     * pattern A[i, j] · weights[j] instead of the attention. */
    set(chunk, head, tokens, weights) {
      const sameLength = this.chunk && this.chunk.T === chunk.T;
      this.chunk = chunk;
      this.head = head;
      this.tokens = tokens;
      this.weights = weights || null;
      this.base = head * chunk.tri;
      if (!sameLength) { this.sel = null; this.cs = 0; this.fitMode = true; }
      this.build();
      this.resize();
    }

    /** The stored attention A[i, j] (float16), null above the diagonal. */
    attention(i, j) {
      if (j > i) return null;
      const k = this.base + (i * (i + 1)) / 2 + j; // f32: a hosted chunk's exact values
      return this.chunk.f32 ? this.chunk.f32[k] : F16[this.chunk.u16[k]];
    }

    /** What is drawn at (i, j): the attention, or A[i, j] · ‖v_j W_O‖ when weighted. */
    value(i, j) {
      const a = this.attention(i, j);
      return a == null || !this.weights ? a : a * this.weights[j];
    }

    /** The T x T image: one colour-table lookup per stored value; masked cells stay clear.
     * Value-weighted, each cell is coloured by its share of the head's largest cell. */
    build() {
      const t0 = performance.now();
      const T = this.chunk.T, u16 = this.chunk.u16, colors = f16Colors(settings.scale);
      if (!this.image) this.image = document.createElement("canvas");
      this.image.width = T;
      this.image.height = T;
      const ctx = this.image.getContext("2d");
      const img = ctx.createImageData(T, T);
      const px = new Uint32Array(img.data.buffer);
      const w = this.weights;
      this.max = w ? this.largest() : 1;
      let k = this.base;
      for (let i = 0; i < T; i++) {
        const row = i * T;
        if (w) for (let j = 0; j <= i; j++) px[row + j] = packed(colorIndex(F16[u16[k++]] * w[j] / this.max, settings.scale));
        else for (let j = 0; j <= i; j++) px[row + j] = colors[u16[k++]];
      }
      ctx.putImageData(img, 0, 0);
      this.buildMs = performance.now() - t0;
    }

    /** The largest value-weighted cell of the head (the colour scale's top). */
    largest() {
      const T = this.chunk.T, u16 = this.chunk.u16, w = this.weights;
      let k = this.base, m = 0;
      for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) m = Math.max(m, F16[u16[k++]] * w[j]);
      return m || 1;
    }

    fitSize() {
      const w = this.scroller.clientWidth, hgt = this.scroller.clientHeight;
      return Math.min(32, Math.max(0.05, Math.min(w, hgt) / this.chunk.T));
    }

    resize() {
      if (!this.chunk || !this.scroller.clientWidth) return; // not laid out yet: wait for the observer
      if (!this.cs || this.fitMode) this.cs = this.fitSize();
      this.applySize();
      this.draw();
    }

    applySize() {
      const px = this.chunk.T * this.cs;
      this.spacerBox.style.width = px + "px";
      this.spacerBox.style.height = px + "px";
      this.scroller.dataset.cell = String(this.cs);
      this.scroller.dataset.n = String(this.chunk.T);
    }

    zoom(factor, e) {
      if (!this.chunk) return;
      const s = this.scroller;
      const r = s.getBoundingClientRect();
      const ax = e && e.clientX != null ? e.clientX - r.left : s.clientWidth / 2;
      const ay = e && e.clientY != null ? e.clientY - r.top : s.clientHeight / 2;
      const cx = (s.scrollLeft + ax) / this.cs, cy = (s.scrollTop + ay) / this.cs;
      this.fitMode = factor === 0;
      this.cs = factor === 0 ? this.fitSize() : clamp(this.cs * factor, this.fitSize() * 0.5, 48);
      this.applySize();
      s.scrollLeft = cx * this.cs - ax;
      s.scrollTop = cy * this.cs - ay;
      this.draw();
    }

    sizeCanvas(canvas, w, hgt) {
      const dpr = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(hgt * dpr);
        canvas.style.width = w + "px";
        canvas.style.height = hgt + "px";
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      return ctx;
    }

    /** Visible cell range along one axis: [first, last). */
    span(scroll, size) {
      const T = this.chunk.T;
      return [clamp(Math.floor(scroll / this.cs), 0, T), clamp(Math.ceil((scroll + size) / this.cs), 0, T)];
    }

    draw() {
      if (!this.chunk || !this.cs) return;
      const t0 = performance.now();
      const s = this.scroller, w = s.clientWidth, hgt = s.clientHeight, cs = this.cs;
      const ctx = this.sizeCanvas(this.canvas, w, hgt);
      const sl = s.scrollLeft, st = s.scrollTop, T = this.chunk.T;
      ctx.fillStyle = cssVar("--bg");
      ctx.fillRect(0, 0, w, hgt);
      ctx.fillStyle = cssVar("--mask");
      ctx.fillRect(-sl, -st, T * cs, T * cs);
      const [c0, c1] = this.span(sl, w), [r0, r1] = this.span(st, hgt);
      if (c1 > c0 && r1 > r0) {
        ctx.imageSmoothingEnabled = cs < 1; // average when shrinking, crisp cells when zoomed in
        ctx.drawImage(this.image, c0, r0, c1 - c0, r1 - r0, c0 * cs - sl, r0 * cs - st, (c1 - c0) * cs, (r1 - r0) * cs);
      }
      this.drawMarks(ctx, sl, st);
      this.drawLabels();
      this.drawMs = performance.now() - t0;
      this.el.dataset.drawMs = (this.buildMs + this.drawMs).toFixed(1);
      this.corner.textContent = `${T}×${T}\n${cs >= 1 ? cs.toFixed(0) : cs.toFixed(2)} px/cell`;
    }

    drawMarks(ctx, sl, st) {
      const cs = this.cs, T = this.chunk.T, lw = Math.max(1, Math.min(2, cs / 4));
      ctx.lineWidth = lw;
      if (this.sel) {
        ctx.strokeStyle = cssVar("--hl");
        ctx.strokeRect(-sl, this.sel.i * cs - st, T * cs, Math.max(cs, 1));
        ctx.strokeRect(this.sel.j * cs - sl, -st, Math.max(cs, 1), T * cs);
      }
      if (this.hover && cs >= 3) {
        ctx.strokeStyle = cssVar("--fg");
        ctx.strokeRect(this.hover.j * cs - sl, this.hover.i * cs - st, cs, cs);
      }
    }

    drawLabels() {
      const s = this.scroller, cs = this.cs, T = this.chunk.T;
      const lw = this.leftBox.clientWidth, lh = this.topBox.clientHeight;
      const fontPx = clamp(Math.floor(cs * 0.8), 9, 13);
      const step = Math.max(1, Math.ceil((fontPx + 2) / cs));
      const maxChars = Math.max(4, Math.floor(Math.min(lw, lh) / (fontPx * 0.62)) - 1);
      const fg = cssVar("--fg"), muted = cssVar("--muted"), hl = cssVar("--hl");
      const font = `${fontPx}px ui-monospace, Menlo, Consolas, monospace`;
      const axis = (canvas, w, hgt, scroll, size, vertical, selected) => {
        const ctx = this.sizeCanvas(canvas, w, hgt);
        ctx.clearRect(0, 0, w, hgt);
        ctx.font = font;
        ctx.textBaseline = "middle";
        let [a, b] = this.span(scroll, size);
        a -= a % step;
        for (let i = a; i < b; i += step) {
          const pos = i * cs - scroll + cs / 2;
          ctx.fillStyle = i === selected ? hl : step > 1 ? muted : fg;
          const text = tokLabel(this.tokens[i], maxChars);
          if (vertical) {
            ctx.save();
            ctx.translate(pos, hgt - 4);
            ctx.rotate(-Math.PI / 2);
            ctx.textAlign = "left";
            ctx.fillText(text, 0, 0);
            ctx.restore();
          } else {
            ctx.textAlign = "right";
            ctx.fillText(text, w - 4, pos);
          }
        }
      };
      axis(this.left, lw, s.clientHeight, s.scrollTop, s.clientHeight, false, this.sel && this.sel.i);
      axis(this.top, s.clientWidth, lh, s.scrollLeft, s.clientWidth, true, this.sel && this.sel.j);
    }

    cellAt(e) {
      if (!this.chunk) return null;
      const s = this.scroller, r = s.getBoundingClientRect();
      const x = e.clientX - r.left - s.clientLeft + s.scrollLeft;
      const y = e.clientY - r.top - s.clientTop + s.scrollTop;
      const i = Math.floor(y / this.cs), j = Math.floor(x / this.cs);
      return i >= 0 && j >= 0 && i < this.chunk.T && j < this.chunk.T ? { i, j } : null;
    }

    onHover(e) {
      const c = this.cellAt(e);
      this.hover = c;
      if (!c) { hideTip(); this.draw(); return; }
      const a = this.attention(c.i, c.j);
      const lines = [
        `query ${c.i}: ${JSON.stringify(this.tokens[c.i])}`,
        `key   ${c.j}: ${JSON.stringify(this.tokens[c.j])}`,
        a == null ? "value masked (key after query)" : `value ${fmtValue(a)}`,
      ];
      if (this.weights) {
        lines.push(`‖v W_O‖ ${fmtValue(this.weights[c.j])}`);
        if (a != null) lines.push(`value-weighted ${fmtValue(a * this.weights[c.j])}`);
      }
      showTip(e.clientX, e.clientY, lines);
      this.draw();
    }

    labelClick(e, axis) {
      const s = this.scroller, r = e.target.getBoundingClientRect();
      const pos = axis === "y" ? e.clientY - r.top + s.scrollTop : e.clientX - r.left + s.scrollLeft;
      const i = Math.floor(pos / this.cs);
      if (i >= 0 && i < this.chunk.T) this.select(i, i);
    }

    /** Highlight query row i and key column j (a token label selects its row and column). */
    select(i, j) {
      this.sel = this.sel && this.sel.i === i && this.sel.j === j ? null : { i, j };
      this.draw();
      if (this.opts.onSelect) this.opts.onSelect(this.sel, this);
    }

    /** Select cell (i, j) and scroll it into the middle of the view. */
    reveal(i, j) {
      if (!this.chunk || i < 0 || j < 0 || i >= this.chunk.T || j >= this.chunk.T) return;
      this.sel = { i, j };
      const s = this.scroller;
      s.scrollLeft = (j + 0.5) * this.cs - s.clientWidth / 2;
      s.scrollTop = (i + 0.5) * this.cs - s.clientHeight / 2;
      this.draw();
    }

    /** The `k` keys row i attends to most, as [j, value]. */
    topKeys(i, k) {
      const out = [];
      for (let j = 0; j <= i; j++) out.push([j, this.value(i, j)]);
      return out.sort((a, b) => b[1] - a[1]).slice(0, k);
    }

    rebuild() { if (this.chunk) { this.build(); this.draw(); } }
    destroy() { this.resizer.disconnect(); hideTip(); }
  }

  Object.assign(LENS_UI, { HeadPane });
})();
