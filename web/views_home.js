/* lens_cache viewer, views_home.js: the home view, a virtual-scrolling table of prompts.
 * Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { INDEX, METRIC_SHORT, METRIC_TITLES, ROW_H, clamp, fmt, go, h, hashFor, link, option,
    promptHash, promptName, select, setCrumbs, state } = LENS_UI;

  // ------------------------------------------------------------------ home view

  const HOME_COLS = [
    { key: "model", label: "model", w: "minmax(80px, 1fr)" },
    { key: "id", label: "id", w: "minmax(70px, 1fr)" },
    { key: "kind", label: "kind", w: "minmax(60px, 0.7fr)" },
    { key: "n", label: "tokens", w: "64px", num: true },
    { key: "loss", label: "loss", w: "64px", num: true, metric: true,
      title: "sort by mean next-token loss (nats; with logits exported)" },
    { key: "text", label: "prompt", w: "minmax(160px, 5fr)" },
  ];

  class HomeView {
    constructor(root, route) {
      const q = route.query;
      this.q = q.get("q") || "";
      this.model = q.get("model") || "";
      this.meta = q.get("meta") || "";
      this.sort = q.get("sort") || "";
      this.dir = q.get("dir") || "asc";
      this.sel = 0;
      this.minLoss = q.get("minloss") || "";
      this.hasLoss = INDEX.entries.some((e) => e.ml != null);
      this.cols = HOME_COLS.filter((c) => c.key !== "loss" || this.hasLoss).concat(INDEX.metrics.map((m) => ({
        key: m, label: METRIC_SHORT[m], w: "88px", num: true, metric: true,
        title: (INDEX.scores.includes(m) ? "max over heads of: " : "mean over heads of: ") + METRIC_TITLES[m],
      })));
      this.template = this.cols.map((c) => c.w).join(" ");
      setCrumbs([{ text: "prompts" }]);
      root.append(this.toolbar(), this.modelCards(), this.table());
      this.apply();
    }

    toolbar() {
      this.search = h("input", {
        type: "search", placeholder: "search prompt text  ( / )", value: this.q, size: 36,
        "aria-label": "search prompts", oninput: (e) => { this.q = e.target.value; this.apply(); },
      });
      const models = [option("", "all models")].concat(
        INDEX.models.map((m) => option(m.name, m.name, m.name === this.model)));
      const metaOpts = [option("", "any metadata")].concat(
        metaChoices().map((kv) => option(kv, kv, kv === this.meta)));
      this.count = h("span", { class: "note" });
      const minLoss = this.hasLoss ? h("input", {
        type: "number", step: "0.1", min: "0", placeholder: "min loss", value: this.minLoss,
        class: "min-loss", title: "only prompts whose mean loss is at least this (nats)",
        oninput: (e) => { this.minLoss = e.target.value; this.apply(); },
      }) : null;
      return h("div", { class: "toolbar" }, this.search,
        select(models, (v) => { this.model = v; this.apply(); }, "model"),
        select(metaOpts, (v) => { this.meta = v; this.apply(); }, "filter by metadata"),
        minLoss, this.count);
    }

    modelCards() {
      return h("div", { class: "models" }, ...INDEX.models.map((m) => h("div", { class: "model-card" },
        h("strong", { text: m.name }),
        h("span", { class: "note", text: `  ${m.n_layers} layers × ${m.n_heads} heads, ${m.n_prompts} prompts  ` }),
        link("head metrics", hashFor("metrics", [m.name], "sort=induction&dir=desc"),
          "per-head metrics averaged over this model's prompts"))));
    }

    table() {
      this.head = h("div", { class: "vhead", role: "row" });
      this.head.style.gridTemplateColumns = this.template;
      for (const c of this.cols) {
        const cell = h("span", {
          class: c.num ? "num" : null, role: "columnheader", title: c.title || "sort by " + c.label,
          text: c.label, dataset: { key: c.key },
          onclick: () => {
            this.dir = this.sort === c.key ? (this.dir === "asc" ? "desc" : "asc") : (c.metric ? "desc" : "asc");
            this.sort = c.key;
            this.apply();
          },
        });
        this.head.append(cell);
      }
      this.spacerBox = h("div");
      this.body = h("div", { class: "vbody", role: "rowgroup", tabindex: "0" }, this.spacerBox);
      this.body.addEventListener("scroll", () => this.renderRows());
      this.body.addEventListener("click", (e) => {
        const row = e.target.closest(".vrow");
        if (row) this.open(Number(row.dataset.idx));
      });
      this.pool = [];
      this.resize = new ResizeObserver(() => this.renderRows());
      this.resize.observe(this.body);
      return h("div", { class: "vtable", role: "table", "aria-label": "prompts" }, this.head, this.body);
    }

    value(e, key) {
      if (key === "model") return INDEX.models[e.m].name;
      if (key === "n") return e.n;
      if (key === "loss") return e.ml == null ? null : e.ml;
      if (key === "text") return INDEX.texts[e.h].text;
      if (key === "id") return promptName(e);
      if (key === "kind") { const k = (INDEX.texts[e.h].meta || {}).kind; return k == null ? "" : String(k); }
      return e.s[key];
    }

    apply() {
      const needle = this.q.trim().toLowerCase();
      const [mk, ...mv] = this.meta ? this.meta.split("=") : [];
      const metaVal = mv.join("=");
      const minLoss = this.minLoss === "" ? null : Number(this.minLoss);
      let rows = INDEX.entries.filter((e) => {
        if (this.model && INDEX.models[e.m].name !== this.model) return false;
        if (minLoss != null && !(e.ml >= minLoss)) return false;
        const t = INDEX.texts[e.h];
        if (mk && String((t.meta || {})[mk]) !== metaVal) return false;
        return !needle || t.lower.includes(needle) || promptName(e).toLowerCase().includes(needle);
      });
      if (this.sort) {
        const sign = this.dir === "desc" ? -1 : 1, key = this.sort;
        rows = rows.map((e) => [this.value(e, key), e]).sort((a, b) => {
          if (a[0] == null) return b[0] == null ? 0 : 1; // missing values last either way
          if (b[0] == null) return -1;
          return sign * (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
        }).map((x) => x[1]);
      }
      this.rows = rows;
      state.homeOrder = rows;
      this.sel = clamp(this.sel, 0, Math.max(0, rows.length - 1));
      this.count.textContent = `${rows.length} of ${INDEX.entries.length} prompts`;
      for (const cell of this.head.children) {
        if (cell.dataset.key === this.sort) cell.dataset.dir = this.dir; else delete cell.dataset.dir;
      }
      this.spacerBox.style.height = rows.length * ROW_H + "px";
      this.renderRows();
      const params = new URLSearchParams();
      for (const k of ["q", "model", "meta", "sort"]) if (this[k]) params.set(k, this[k]);
      if (this.minLoss) params.set("minloss", this.minLoss);
      if (this.sort) params.set("dir", this.dir);
      history.replaceState(null, "", hashFor("", [], params));
    }

    rowNode() {
      const row = h("div", { class: "vrow", role: "row" });
      row.style.gridTemplateColumns = this.template;
      for (const c of this.cols) row.append(h("span", { class: c.num ? "num" : null, role: "cell" }));
      this.body.append(row);
      return row;
    }

    /** Only the rows in view exist: a few dozen nodes whatever the number of prompts. */
    renderRows() {
      const first = Math.floor(this.body.scrollTop / ROW_H);
      const n = Math.ceil(this.body.clientHeight / ROW_H) + 2;
      while (this.pool.length < n) this.pool.push(this.rowNode());
      this.pool.forEach((row, k) => {
        const idx = first + k;
        if (k >= n || idx >= this.rows.length) { row.hidden = true; return; }
        row.hidden = false;
        row.dataset.idx = idx;
        row.style.top = idx * ROW_H + "px";
        row.classList.toggle("selected", idx === this.sel);
        const e = this.rows[idx];
        this.cols.forEach((c, ci) => {
          const v = this.value(e, c.key);
          row.children[ci].textContent = c.metric ? fmt(v) : c.key === "text" ? preview(v) : String(v);
        });
        row.title = preview(this.value(e, "text"));
      });
    }

    open(idx) {
      const e = this.rows[idx];
      if (e) go(promptHash(INDEX.models[e.m], e.h));
    }

    moveSel(delta) {
      if (!this.rows.length) return;
      this.sel = clamp(this.sel + delta, 0, this.rows.length - 1);
      const top = this.sel * ROW_H, b = this.body;
      if (top < b.scrollTop) b.scrollTop = top;
      else if (top + ROW_H > b.scrollTop + b.clientHeight) b.scrollTop = top + ROW_H - b.clientHeight;
      this.renderRows();
    }

    onKey(e) {
      if (e.key === "/") { this.search.focus(); return true; }
      if (["j", "n", "ArrowDown"].includes(e.key)) { this.moveSel(1); return true; }
      if (["k", "p", "ArrowUp"].includes(e.key)) { this.moveSel(-1); return true; }
      if (e.key === "PageDown") { this.moveSel(10); return true; }
      if (e.key === "PageUp") { this.moveSel(-10); return true; }
      if (e.key === "Enter") { this.open(this.sel); return true; }
      return false;
    }

    unmount() { this.resize.disconnect(); }
  }

  function preview(text) { return String(text).slice(0, 400).replace(/\s+/g, " "); }

  function metaChoices() {
    const values = new Map(); // key -> Set of values
    for (const t of Object.values(INDEX.texts)) {
      for (const [k, v] of Object.entries(t.meta || {})) {
        if (v == null || typeof v === "object") continue;
        if (!values.has(k)) values.set(k, new Set());
        values.get(k).add(String(v));
      }
    }
    const out = [];
    for (const [k, vs] of values) if (vs.size <= 40) for (const v of [...vs].sort()) out.push(k + "=" + v);
    return out;
  }

  Object.assign(LENS_UI, { HomeView });
})();
