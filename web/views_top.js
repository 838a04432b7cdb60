/* lens_cache viewer, views_top.js: one head's top examples across the model's prompts
 * (#/top/<model>/<layer>/<head>?by=attention|value_weighted|dla), from the data script
 * <slug>/top/L<layer>.js (format in lens_cache/viewer_heads.py). Each example is a snippet of
 * its prompt with the query and key tokens marked; a click opens the head on that prompt with
 * the cell selected. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { entryOf, fill, fmtValue, go, h, hashFor, headHash, modelOf, option, promptName, select,
    setCrumbs, showError, topData } = LENS_UI;

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
      const m = this.model;
      if (!(m.top || []).includes(this.layer) || !(this.head >= 0 && this.head < m.n_heads)) {
        throw new Error(`no top examples for L${layer} H${head} of ${m.name}: export it with head_contributions among --hooks`);
      }
      setCrumbs([{ text: "prompts", href: "#/" }, { text: m.name, href: hashFor("metrics", [m.name]) },
        { text: `L${this.layer} H${this.head} top examples` }]);
      const heads = [];
      for (let hd = 0; hd < m.n_heads; hd++) heads.push(option(hd, "head " + hd, hd === this.head));
      root.append(h("div", { class: "toolbar" }, h("span", { class: "title", text: m.name }),
        select(m.top.map((l) => option(l, "layer " + l, l === this.layer)), (v) => this.goto({ layer: v }), "layer"),
        select(heads, (v) => this.goto({ head: v }), "head"),
        select(Object.entries(RANKINGS).map(([k, t]) => option(k, "by " + t, k === this.by)), (v) => this.goto({ by: v }), "ranking")));
      this.list = h("div", { class: "top-list" }, h("p", { class: "note", text: "loading…" }));
      root.append(this.list);
      topData(m, this.layer).then((obj) => this.show(obj), (err) => showError(this.list, err));
    }

    goto(patch) {
      const next = Object.assign({ layer: this.layer, head: this.head, by: this.by }, patch);
      go(hashFor("top", [this.model.name, next.layer, next.head], new URLSearchParams({ by: next.by })));
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
