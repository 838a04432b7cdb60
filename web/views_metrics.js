/* lens_cache viewer, views_metrics.js: the metrics view (per-head metrics of a model, averaged
 * or for one prompt) and the residual view (residual-stream norms per layer and token).
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { INDEX, METRIC_SHORT, METRIC_TITLES, metricShort, userColumns, canvasPoint, clamp, clear, cssVar, entriesOf, entryFor, entryOf,
    fill, fmt, fmtValue, go, h, hashFor, headHash, hideTip, legend, modelOf, neighbour, option,
    promptCrumbs, promptData, promptHash, promptName, promptToolbar, rgb, select, setCrumbs,
    settings, showError, showTip, state, tokLabel, weighted, weightingButton } = LENS_UI;

  // ------------------------------------------------------------------ metrics view

  class MetricsView {
    constructor(root, route) {
      this.model = modelOf(route.args[0]);
      const q = route.query;
      this.sort = q.get("sort") || "induction";
      this.dir = q.get("dir") || "desc";
      this.promptHash = q.get("prompt") || "";
      setCrumbs([{ text: "prompts", href: "#/" }, { text: this.model.name }, { text: "head metrics" }]);
      this.table = h("table", { class: "mtable" });
      this.heat = h("div", { class: "heat" });
      this.caption = h("p", { class: "note" });
      this.weightBox = h("span");
      const sources = [option("", `average over ${this.model.n_prompts} prompts`)].concat(
        entriesOf[this.model.idx].map((e) => option(e.h, "prompt " + promptName(e), e.h === this.promptHash)));
      root.append(h("div", { class: "toolbar" }, h("span", { class: "title", text: this.model.name }),
        select(sources, (v) => { this.promptHash = v; this.load(); }, "which prompts"), this.weightBox), this.caption,
        h("div", { class: "metrics-wrap" }, h("div", { class: "mtable-wrap" }, this.table), this.heat));
      this.load();
    }

    async load() {
      const m = this.model;
      try {
        // value-weighted metrics and the mean DLA come with head contributions (viewer_heads.py)
        if (this.promptHash) {
          const p = await promptData(m, this.promptHash);
          const src = weighted(p) ? p.heads.metrics : p.metrics;
          const dla = p.heads ? (li, hd) => { const k = p.heads.layers.indexOf(p.layers[li]); return k < 0 ? null : p.heads.dla_mean[k][hd]; } : null;
          const user = p.user ? (name, li, hd) => (p.user.scalars[name] ? p.user.scalars[name][li][hd] : null) : null;
          this.rows = metricRows(m, p.layers, (name, li, hd) => src[name][li][hd],
            (li, hd) => (p.labels && p.labels[li] ? p.labels[li][hd] : []), () => 1, dla, user);
          this.baseline = p.baseline;
          this.hasHeads = !!p.heads;
        } else {
          const src = m.heads && weighted(m) ? m.heads.avg : m.avg;
          const dla = m.heads ? (li, hd) => m.heads.dla[m.layers[li]][hd] : null;
          const avg = m.user ? m.user.avg : {};
          const user = (name, li, hd) => (avg[name] ? avg[name][m.layers[li]][hd] : null);
          this.rows = metricRows(m, m.layers, (name, li, hd) => src[name][m.layers[li]][hd],
            (li, hd) => m.labels[m.layers[li]][hd], (li, hd) => m.count[m.layers[li]][hd], dla, user);
          this.baseline = m.baseline;
          this.hasHeads = !!m.heads;
        }
        this.metricNames = [...INDEX.metrics, ...(this.hasHeads ? ["dla"] : []), ...userColumns()];
        fill(this.weightBox, this.hasHeads ? weightingButton() : null);
        this.caption.textContent = "uniform-attention baseline: " + INDEX.scores.map(
          (s) => `${METRIC_SHORT[s]} ${fmt(this.baseline[s])}`).join(", ") +
          ". A head is labelled when its score covers half the gap from this baseline to 1.";
        this.render();
      } catch (err) {
        showError(this.caption, err);
      }
    }

    render() {
      const sign = this.dir === "desc" ? -1 : 1, key = this.sort;
      const val = (r) => (key === "layer" || key === "head" ? r[key] : r.v[key]);
      this.rows.sort((a, b) => {
        const x = val(a), y = val(b);
        if (x == null) return y == null ? 0 : 1;
        if (y == null) return -1;
        return sign * (x - y) || a.layer - b.layer || a.head - b.head;
      });
      const cols = ["layer", "head", ...this.metricNames];
      const head = h("tr", null, ...cols.map((c) => h("th", {
        text: metricShort(c), title: METRIC_TITLES[c] || (c.startsWith("u:") ? "your metric (lens_cache.metric)" : c), dataset: c === key ? { key: c, dir: this.dir } : { key: c },
        onclick: () => {
          this.dir = this.sort === c ? (this.dir === "desc" ? "asc" : "desc") : "desc";
          this.sort = c;
          history.replaceState(null, "", this.hash());
          this.render();
        },
      })), h("th", { text: "prompts", title: "prompts this average covers" }), h("th", { text: "labels" }));
      const body = h("tbody");
      for (const r of this.rows) {
        body.append(h("tr", { dataset: { layer: r.layer, head: r.head }, onclick: () => this.open(r.layer, r.head) },
          h("td", { text: String(r.layer) }), h("td", { text: String(r.head) }),
          ...this.metricNames.map((mname) => h("td", { text: fmt(r.v[mname], mname === "dla" ? 5 : 3) })),
          h("td", { text: String(r.n) }), h("td", { class: "labels", text: r.labels.join(", ") })));
      }
      clear(this.table).append(h("thead", null, head), body);
      this.drawHeat();
    }

    hash() {
      const q = new URLSearchParams({ sort: this.sort, dir: this.dir });
      if (this.promptHash) q.set("prompt", this.promptHash);
      return hashFor("metrics", [this.model.name], q);
    }

    open(layer, head) {
      const m = this.model;
      let hash = this.promptHash || state.lastPrompt[m.name];
      if (!hash || !entryOf.has(m.idx + "|" + hash)) hash = entriesOf[m.idx][0].h;
      go(headHash(m, hash, layer, head));
    }

    /** Layers x heads, coloured by the sorted metric: induction heads stand out at a glance. */
    drawHeat() {
      const m = this.model, key = this.metricNames.includes(this.sort) ? this.sort : "induction";
      const cell = clamp(Math.floor(240 / m.n_heads), 8, 22);
      const c = h("canvas", { width: m.n_heads * cell, height: m.n_layers * cell });
      const ctx = c.getContext("2d");
      const vals = this.rows.map((r) => r.v[key]).filter((v) => v != null);
      const lo = Math.min(...vals), hi = Math.max(...vals);
      ctx.fillStyle = cssVar("--mask");
      ctx.fillRect(0, 0, c.width, c.height);
      const at = new Map(this.rows.map((r) => [r.layer + "." + r.head, r]));
      for (const r of this.rows) {
        const v = r.v[key];
        if (v == null) continue;
        ctx.fillStyle = rgb(Math.round(((v - lo) / (hi - lo || 1)) * 255));
        ctx.fillRect(r.head * cell, r.layer * cell, cell - 1, cell - 1);
      }
      const cellAt = (e) => {
        const [x, y] = canvasPoint(c, e);
        return at.get(Math.floor(y / cell) + "." + Math.floor(x / cell));
      };
      c.addEventListener("mousemove", (e) => {
        const r = cellAt(e);
        if (r) showTip(e.clientX, e.clientY, [`L${r.layer} H${r.head}`, `${metricShort(key)} ${fmt(r.v[key])}`]);
        else hideTip();
      });
      c.addEventListener("mouseleave", hideTip);
      c.addEventListener("click", (e) => { const r = cellAt(e); if (r) this.open(r.layer, r.head); });
      clear(this.heat).append(h("span", { class: "note", text: `${metricShort(key)}: rows layers, columns heads` }), c,
        legend([fmt(lo), fmt(hi)]));
    }

    redraw() { this.load(); }
    onKey(e) { if (e.key === "Escape") { go("#/"); return true; } return false; }
    unmount() { hideTip(); }
  }

  function metricRows(model, layers, get, labels, count, dla, user) {
    const rows = [];
    layers.forEach((layer, li) => {
      for (let hd = 0; hd < model.n_heads; hd++) {
        const v = {};
        for (const name of INDEX.metrics) v[name] = get(name, li, hd);
        if (dla) v.dla = dla(li, hd);
        for (const key of userColumns()) v[key] = user ? user(key.slice(2), li, hd) : null;
        rows.push({ layer, head: hd, v, labels: labels(li, hd) || [], n: count(li, hd) });
      }
    });
    return rows;
  }

  // ------------------------------------------------------------------ residual view

  class ResidView {
    constructor(root, route) {
      const [name, hash] = route.args;
      this.model = modelOf(name);
      this.entry = entryFor(this.model, hash);
      this.hook = route.query.get("hook") || "resid_post";
      this.perLayer = route.query.get("per_layer") === "1";
      promptCrumbs(this.model, this.entry, "residual norms");
      this.controls = h("span", { class: "toolbar" });
      this.wrap = h("div", { class: "resid-wrap" }, h("p", { class: "note", text: "loading…" }));
      root.append(promptToolbar(this, this.model, this.entry, [this.controls]), this.wrap);
      promptData(this.model, hash).then((p) => this.show(p), (err) => showError(this.wrap, err));
    }

    hashForModel(model) { return hashFor("resid", [model.name, this.entry.h]); }
    step(delta) { go(hashFor("resid", [this.model.name, neighbour(this.model, this.entry.h, delta).h])); }

    show(p) {
      this.p = p;
      if (!p.resid) {
        clear(this.wrap).append(h("p", { class: "note", text: "No residuals stored for this prompt (no residuals.safetensors)." }));
        return;
      }
      const hooks = Object.keys(p.resid.norms);
      if (!hooks.includes(this.hook)) this.hook = hooks[hooks.length - 1];
      const per = h("input", { type: "checkbox", checked: this.perLayer || null,
        onchange: (e) => { this.perLayer = e.target.checked; this.draw(); } });
      clear(this.controls).append(
        select(hooks.map((k) => option(k, "hook_" + k, k === this.hook)), (v) => { this.hook = v; this.draw(); }, "hook"),
        h("label", { title: "colour each layer on its own range" }, per, "per-layer range"),
        h("span", { class: "note", text: "‖x‖₂ per token; colour range excludes position 0" }));
      this.draw();
    }

    draw() {
      const p = this.p, T = p.tokens.length, layers = p.resid.layers, arr = p.resid.norms[this.hook].data;
      const lw = 48, cw = clamp(Math.floor((this.wrap.clientWidth - lw - 12) / T), 3, 24);
      const th = cw >= 9 ? 90 : 4;
      const ch = clamp(Math.floor((this.wrap.clientHeight - th - 12) / layers.length), 12, 40);
      const c = h("canvas", { width: lw + T * cw, height: th + layers.length * ch });
      const ctx = c.getContext("2d");
      ctx.fillStyle = cssVar("--bg");
      ctx.fillRect(0, 0, c.width, c.height);
      const range = (from, to) => {
        let lo = Infinity, hi = -Infinity;
        for (let k = from; k < to; k++) {
          if ((k % T === 0 && T > 1) || !Number.isFinite(arr[k])) continue;
          lo = Math.min(lo, arr[k]); hi = Math.max(hi, arr[k]);
        }
        return [lo, hi];
      };
      const all = range(0, arr.length);
      const tone = (v, lo, hi) => {
        if (settings.scale === "log") { v = Math.log(Math.max(v, 1e-6)); lo = Math.log(Math.max(lo, 1e-6)); hi = Math.log(Math.max(hi, 1e-6)); }
        return rgb(Math.round(clamp((v - lo) / (hi - lo || 1), 0, 1) * 255));
      };
      ctx.font = "11px ui-monospace, Menlo, monospace";
      ctx.textBaseline = "middle";
      layers.forEach((layer, li) => {
        const [lo, hi] = this.perLayer ? range(li * T, (li + 1) * T) : all;
        ctx.fillStyle = cssVar("--muted");
        ctx.textAlign = "right";
        ctx.fillText("L" + layer, lw - 6, th + li * ch + ch / 2);
        for (let t = 0; t < T; t++) {
          const v = arr[li * T + t];
          ctx.fillStyle = Number.isFinite(v) ? tone(v, lo, hi) : cssVar("--mask");
          ctx.fillRect(lw + t * cw, th + li * ch, cw - (cw > 4 ? 1 : 0), ch - 1);
        }
      });
      if (th > 4) {
        ctx.fillStyle = cssVar("--fg");
        ctx.textAlign = "left";
        for (let t = 0; t < T; t++) {
          ctx.save();
          ctx.translate(lw + t * cw + cw / 2, th - 4);
          ctx.rotate(-Math.PI / 2);
          ctx.fillText(tokLabel(p.tokens[t], 12), 0, 0);
          ctx.restore();
        }
      }
      c.addEventListener("mousemove", (e) => {
        const [x, y] = canvasPoint(c, e);
        const t = Math.floor((x - lw) / cw), li = Math.floor((y - th) / ch);
        if (t < 0 || t >= T || li < 0 || li >= layers.length) { hideTip(); return; }
        showTip(e.clientX, e.clientY, [`layer ${layers[li]}, token ${t}: ${JSON.stringify(p.tokens[t])}`,
          `‖hook_${this.hook}‖ = ${fmtValue(arr[li * T + t])}`]);
      });
      c.addEventListener("mouseleave", hideTip);
      clear(this.wrap).append(c);
    }

    redraw() { if (this.p && this.p.resid) this.draw(); }
    onKey(e) {
      if (e.key === "j" || e.key === "n") { this.step(1); return true; }
      if (e.key === "k" || e.key === "p") { this.step(-1); return true; }
      if (e.key === "Escape") { go(promptHash(this.model, this.entry.h)); return true; }
      return false;
    }
    unmount() { hideTip(); }
  }

  Object.assign(LENS_UI, { MetricsView, ResidView });
})();
