/* lens_cache viewer, views_top.js: one head across the model's prompts
 * (#/top/<model>/<layer>/<head>?by=attention|value_weighted|dla&score=<score>).
 * First the distribution of the head's per-prompt score (a metric, its value-weighted form or
 * the mean DLA) over every prompt: a histogram, the top prompts and samples from each quantile
 * interval, from <slug>/dist/L<layer>.js (format in lens_cache/viewer/_corpus.py). Then its
 * top cells, from <slug>/top/L<layer>.js (format in lens_cache/viewer/_heads.py): each a
 * snippet of its prompt with the query and key tokens marked; a click opens the head on that
 * prompt with the cell selected. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { METRIC_SHORT, distData, entryOf, fill, fmtValue, go, h, hashFor, headHash, modelOf, option,
    promptName, select, setCrumbs, showError, topData } = LENS_UI;

  const RANKINGS = {
    attention: "attention (key 0 left out)",
    value_weighted: "value-weighted A·‖v W_O‖",
    dla: "direct logit attribution (query only)",
  };

  class TopView {
    constructor(root, route) {
      const [name, layer, head] = route.args;
      this.model = modelOf(name);
      this.layer = Number(layer);
      this.head = Number(head);
      this.by = RANKINGS[route.query.get("by")] ? route.query.get("by") : "attention";
      this.score = route.query.get("score") || "induction";
      const m = this.model, hasTop = (m.top || []).includes(this.layer), hasDist = (m.dist || []).includes(this.layer);
      if (!(hasTop || hasDist) || !(this.head >= 0 && this.head < m.n_heads)) {
        throw new Error(`nothing stored for L${layer} H${head} of ${m.name} across prompts: export it with head_metrics or head_contributions among --hooks`);
      }
      setCrumbs([{ text: "prompts", href: "#/" }, { text: m.name, href: hashFor("metrics", [m.name]) },
        { text: `L${this.layer} H${this.head} across prompts` }]);
      const heads = [], layers = [...new Set([...(m.top || []), ...(m.dist || [])])].sort((a, b) => a - b);
      for (let hd = 0; hd < m.n_heads; hd++) heads.push(option(hd, "head " + hd, hd === this.head));
      root.append(h("div", { class: "toolbar" }, h("span", { class: "title", text: m.name }),
        select(layers.map((l) => option(l, "layer " + l, l === this.layer)), (v) => this.goto({ layer: v }), "layer"),
        select(heads, (v) => this.goto({ head: v }), "head"),
        hasTop ? select(Object.entries(RANKINGS).map(([k, t]) => option(k, "by " + t, k === this.by)), (v) => this.goto({ by: v }), "ranking") : null));
      this.dist = h("div", { class: "dist" }, h("p", { class: "note", text: "loading…" }));
      this.list = h("div", { class: "top-list" }, h("p", { class: "note", text: "loading…" }));
      root.append(this.dist, this.list);
      if (hasDist) distData(m, this.layer).then((obj) => this.showDist(obj), (err) => showError(this.dist, err));
      else fill(this.dist, h("p", { class: "note", text: "No score distribution for this layer." }));
      if (hasTop) topData(m, this.layer).then((obj) => this.show(obj), (err) => showError(this.list, err));
      else fill(this.list, h("p", { class: "note", text: "No top cells for this layer: export with head_contributions among --hooks." }));
    }

    /** The head's score over every prompt: histogram, top prompts, quantile samples. */
    showDist(obj) {
      const names = Object.keys(obj.scores);
      if (!names.includes(this.score)) this.score = names[0];
      const s = obj.scores[this.score][this.head];
      const bar = h("div", { class: "toolbar" }, select(names.map((n) => option(n, "score: " + scoreTitle(n), n === this.score)),
        (v) => this.goto({ score: v }), "score"));
      if (!s) { fill(this.dist, bar, h("p", { class: "note", text: "This score is defined on no prompt for this head." })); return; }
      const defined = s.counts.reduce((a, b) => a + b, 0);
      bar.append(h("span", { class: "note", text: `${defined} of ${obj.n} prompts` }));
      fill(this.dist, bar, histogram(s), h("div", { class: "dist-cols" },
        h("div", null, h("h3", { text: "top prompts" }), this.prompts(s.top, "dist-top")),
        h("div", null, h("h3", { text: "samples by quantile interval" }), ...s.quantiles.map((q, k) =>
          h("div", { class: "dist-q", dataset: { lo: q.lo, hi: q.hi } },
            h("div", { class: "note", text: `interval ${k + 1} of ${s.quantiles.length}: ${fmtValue(q.lo)} to ${fmtValue(q.hi)}` }),
            this.prompts(q.samples, "dist-sample"))))));
    }

    /** Rows of [hash, value]: the prompt's name and score; a click opens the head on it. */
    prompts(pairs, cls) {
      const box = h("div", { class: "dist-list" });
      for (const [hash, value] of pairs) {
        const entry = entryOf.get(this.model.idx + "|" + hash);
        const row = h("div", { class: "dist-row " + cls, dataset: { hash, value } },
          h("span", { class: "num", text: fmtValue(value) }), h("span", { text: entry ? promptName(entry) : hash.slice(0, 8) }));
        if (entry) row.addEventListener("click", () => go(headHash(this.model, hash, this.layer, this.head)));
        box.append(row);
      }
      return box;
    }

    goto(patch) {
      const next = Object.assign({ layer: this.layer, head: this.head, by: this.by, score: this.score }, patch);
      go(hashFor("top", [this.model.name, next.layer, next.head], new URLSearchParams({ by: next.by, score: next.score })));
    }

    show(obj) {
      const rows = (obj.by[this.by] || [])[this.head] || [];
      const table = h("table", { class: "top-table" }, h("tr", null, h("th", { text: "#" }),
        h("th", { text: RANKINGS[this.by] }), h("th", { text: "prompt" }), h("th", { text: "query / key in context" })));
      rows.forEach(([hash, q, k, value, segments], rank) => {
        const known = entryOf.has(this.model.idx + "|" + hash);
        const tr = h("tr", { class: "top-row", dataset: { rank, hash, query: q, key: k } },
          h("td", { class: "num", text: String(rank + 1) }), h("td", { class: "num", text: fmtValue(value) }),
          h("td", { text: known ? promptName(entryOf.get(this.model.idx + "|" + hash)) : hash.slice(0, 8) }),
          h("td", null, snippet(segments, q, k)));
        if (known) tr.addEventListener("click", () => this.open(hash, q, k));
        table.append(tr);
      });
      fill(this.list, rows.length ? table : h("p", { class: "note", text: "No examples for this head." }));
    }

    /** The head view of that prompt, with the example's cell selected (for DLA, its row). */
    open(hash, q, k) {
      const j = k < 0 ? q : k;
      go(headHash(this.model, hash, this.layer, this.head) + "?" + new URLSearchParams({ q, k: j }));
    }

    onKey(e) {
      if (e.key === "Escape") { go(hashFor("metrics", [this.model.name])); return true; }
      const H = this.model.n_heads;
      if (e.key === "ArrowLeft") { this.goto({ head: (this.head + H - 1) % H }); return true; }
      if (e.key === "ArrowRight") { this.goto({ head: (this.head + 1) % H }); return true; }
      return false;
    }
  }

  function scoreTitle(name) {
    if (name === "dla") return "mean DLA";
    const base = name.replace(/^vw_/, "");
    return (METRIC_SHORT[base] || base) + (name.startsWith("vw_") ? " (value-weighted)" : "");
  }

  /** Bars of the histogram over the score's range (its counts per equal bin). */
  function histogram(s) {
    const [lo, hi] = s.bins, n = s.counts.length, top = Math.max(1, ...s.counts), width = (hi - lo) / n;
    const bars = s.counts.map((c, i) => {
      const bar = h("span", { class: "hist-bar", dataset: { count: c },
        title: `${fmtValue(lo + i * width)} to ${fmtValue(lo + (i + 1) * width)}: ${c} prompts` });
      bar.style.height = Math.round(60 * c / top) + "px"; // CSSOM: the page's CSP refuses style attributes
      return bar;
    });
    return h("div", { class: "hist" }, h("span", { class: "note", text: fmtValue(lo) }),
      h("div", { class: "hist-bars" }, ...bars), h("span", { class: "note", text: fmtValue(hi) }));
  }

  /** Runs of tokens (``[[start, [tokens]], ...]``) with "…" between them; the query token is
   * marked `q`, the key token `k` (both when they are the same position). */
  function snippet(segments, q, k) {
    const box = h("span", { class: "snippet" });
    segments.forEach(([start, tokens], n) => {
      if (n || start > 0) box.append(h("span", { class: "gap", text: "…" }));
      tokens.forEach((t, d) => {
        const pos = start + d;
        const cls = ["tok", pos === q ? "q" : null, pos === k ? "k" : null].filter(Boolean).join(" ");
        box.append(h("span", { class: cls, dataset: { pos }, text: t, title: `position ${pos}` }));
      });
    });
    return box;
  }

  Object.assign(LENS_UI, { TopView });
})();
