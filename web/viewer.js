/* lens_cache viewer: plain JS, no framework, no network, works from file://.
 *
 * Data arrives only through <script> files that call LENS.index / LENS.prompt / LENS.chunk
 * (format in lens_cache/viewer.py). Text from the store is put into the page only with
 * textContent / text nodes or drawn on canvases, never parsed as HTML.
 */
(function () {
  "use strict";

  const LENS = (window.LENS = {});
  const DATA_DIR = document.body.dataset.dir || "viewer_data";
  const CACHE_BYTES = 256 * 1024 * 1024; // decoded layers kept at most (float16, 2 B a value)
  const CACHE_ITEMS = 160;
  const ROW_H = 28;
  const METRIC_TITLES = {
    entropy: "mean row entropy (nats)",
    entropy_norm: "mean row entropy / log(prefix length): 1 = uniform",
    first: "mean attention to the first token",
    prev: "mean attention to the previous token",
    diag: "mean attention to the query's own position",
    induction: "mean attention to the token after an earlier occurrence of the query token",
    max: "mean row maximum",
  };
  const METRIC_SHORT = {
    entropy: "entropy", entropy_norm: "entropy/log", first: "first", prev: "prev",
    diag: "self", induction: "induction", max: "max",
  };

  // viridis (matplotlib's, CC0), 256 RGB entries
  const VIRIDIS_HEX =
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769" +
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a" +
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85" +
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b" +
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d" +
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e" +
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e" +
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d" +
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88" +
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81" +
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74" +
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863" +
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d" +
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32" +
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a" +
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725";

  // ------------------------------------------------------------------ small helpers

  /** Create an element. Children that are strings become text nodes, never markup. */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }
  function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }
  /** Replace a node's children; null children are skipped (Element.append would print "null"). */
  function fill(node, ...children) {
    clear(node);
    for (const c of children) if (c != null) node.append(c);
    return node;
  }
  function fmt(v, digits) {
    return v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits == null ? 3 : digits);
  }
  /** Exact enough to compare with the stored float16 value: 6 significant digits. */
  function fmtValue(v) { return v === 0 ? "0" : v.toPrecision(6); }
  /** A token as a label: whitespace made visible, long tokens shortened. */
  function tokLabel(t, max) {
    let s = String(t).replace(/\n/g, "⏎").replace(/\t/g, "⇥").replace(/ /g, "␣");
    if (max && s.length > max) s = s.slice(0, max - 1) + "…";
    return s;
  }
  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }
  function clamp(x, lo, hi) { return Math.max(lo, Math.min(hi, x)); }
  function option(value, label, selected) {
    return h("option", { value: String(value), selected: selected || null, text: label });
  }
  function select(opts, onchange, title) {
    return h("select", { onchange: (e) => onchange(e.target.value), title }, ...opts);
  }
  function link(text, href, title) { return h("a", { href, title, text }); }

  // ------------------------------------------------------------------ tooltip

  const tip = document.getElementById("tip");
  function showTip(x, y, lines) {
    tip.textContent = lines.join("\n");
    tip.hidden = false;
    const r = tip.getBoundingClientRect();
    const left = x + 14 + r.width > innerWidth ? x - 14 - r.width : x + 14;
    const top = y + 14 + r.height > innerHeight ? y - 14 - r.height : y + 14;
    tip.style.left = Math.max(0, left) + "px";
    tip.style.top = Math.max(0, top) + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ------------------------------------------------------------------ decoding

  /** float16 bits -> float32 value, for every one of the 65536 bit patterns. */
  const F16 = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) {
    const s = i & 0x8000 ? -1 : 1, e = (i >> 10) & 31, f = i & 1023;
    F16[i] = e === 0 ? s * f * 2 ** -24
      : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
  }

  function b64bytes(s) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(s);
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  /** Inflate zlib data with the browser's own DecompressionStream (no request is made). */
  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer();
  }

  const DTYPES = { f2: Uint16Array, f4: Float32Array, u1: Uint8Array };
  async function decodeArray(desc) {
    const buf = await inflate(b64bytes(desc.b64));
    return { shape: desc.shape, data: new DTYPES[desc.dtype](buf) };
  }

  // ------------------------------------------------------------------ loading data scripts

  const cache = new Map(); // key -> {value, bytes}; Map order doubles as LRU order
  let cacheBytes = 0;
  const pending = new Map(); // key -> {promise, resolve, reject, decode}

  function cacheGet(key) {
    const e = cache.get(key);
    if (!e) return null;
    cache.delete(key);
    cache.set(key, e);
    return e.value;
  }
  function cachePut(key, value, bytes) {
    cache.set(key, { value, bytes });
    cacheBytes += bytes;
    while ((cacheBytes > CACHE_BYTES || cache.size > CACHE_ITEMS) && cache.size > 1) {
      const [k, e] = cache.entries().next().value;
      cache.delete(k);
      cacheBytes -= e.bytes;
    }
  }

  /** Insert <script src> once; the script calls LENS.<kind>(key, obj), which resolves it. */
  function loadScript(key, src, decode) {
    const hit = cacheGet(key);
    if (hit) return Promise.resolve(hit);
    if (pending.has(key)) return pending.get(key).promise;
    const entry = { decode };
    entry.promise = new Promise((res, rej) => { entry.resolve = res; entry.reject = rej; });
    const s = document.createElement("script");
    s.src = src;
    s.onerror = () => {
      s.remove();
      pending.delete(key);
      entry.reject(new Error("could not load " + src + "; run write_viewer again"));
    };
    s.onload = () => {
      s.remove(); // the data now lives in the decoded cache only
      if (pending.get(key) === entry) {
        pending.delete(key);
        entry.reject(new Error(src + " did not deliver " + key));
      }
    };
    pending.set(key, entry);
    document.head.append(s);
    return entry.promise;
  }

  function deliver(key, obj) {
    const entry = pending.get(key);
    if (!entry) return;
    pending.delete(key);
    entry.decode(obj).then(([value, bytes]) => {
      cachePut(key, value, bytes);
      entry.resolve(value);
    }, entry.reject);
  }
  LENS.chunk = (key, obj) => deliver("chunk:" + key, obj);
  LENS.prompt = (key, obj) => deliver("prompt:" + key, obj);

  async function decodeChunk(obj) {
    const arr = await decodeArray(obj.data);
    const T = obj.n_tokens;
    const chunk = { nHeads: obj.n_heads, T, tri: (T * (T + 1)) / 2, u16: arr.data };
    return [chunk, arr.data.byteLength];
  }

  async function decodePrompt(obj) {
    const p = Object.assign({}, obj);
    p.thumb = obj.thumb ? await decodeArray(obj.thumb) : null;
    let bytes = p.thumb ? p.thumb.data.byteLength : 0;
    if (obj.resid) {
      const norms = {};
      for (const [hook, desc] of Object.entries(obj.resid.norms)) {
        norms[hook] = await decodeArray(desc);
        bytes += norms[hook].data.byteLength;
      }
      p.resid = { layers: obj.resid.layers, norms };
    }
    return [p, bytes + 64 * obj.tokens.length];
  }

  function promptData(model, hash) {
    const rel = model.slug + "/" + hash;
    return loadScript("prompt:" + rel, DATA_DIR + "/" + rel + "/prompt.js", decodePrompt);
  }
  function layerData(model, hash, layer) {
    const rel = model.slug + "/" + hash;
    return loadScript("chunk:" + rel + "/" + layer, DATA_DIR + "/" + rel + "/L" + layer + ".js",
      decodeChunk);
  }

  // ------------------------------------------------------------------ colours

  const VIRIDIS = new Uint8Array(768);
  for (let i = 0; i < 768; i++) VIRIDIS[i] = parseInt(VIRIDIS_HEX.substr(2 * i, 2), 16);
  function packed(k) { // ImageData is RGBA bytes: little-endian uint32 = A B G R
    return (0xff000000 | (VIRIDIS[3 * k + 2] << 16) | (VIRIDIS[3 * k + 1] << 8) | VIRIDIS[3 * k]) >>> 0;
  }
  /** Colour index 0..255 of an attention value under the current scale (log: 1e-4 .. 1). */
  function colorIndex(v, scale) {
    if (!(v > 0)) return 0;
    const t = scale === "log" ? (Math.log10(v) + 4) / 4 : v;
    return Math.round(clamp(t, 0, 1) * 255);
  }
  const tables = {};
  /** float16 bits -> packed RGBA, so drawing a head is one lookup per cell. */
  function f16Colors(scale) {
    if (!tables[scale]) {
      const t = new Uint32Array(65536);
      for (let i = 0; i < 65536; i++) t[i] = packed(colorIndex(F16[i], scale));
      tables[scale] = t;
    }
    return tables[scale];
  }
  function rgb(k) { return `rgb(${VIRIDIS[3 * k]},${VIRIDIS[3 * k + 1]},${VIRIDIS[3 * k + 2]})`; }

  function legend(label) {
    const c = h("canvas", { width: 256, height: 1 });
    const ctx = c.getContext("2d");
    for (let k = 0; k < 256; k++) { ctx.fillStyle = rgb(k); ctx.fillRect(k, 0, 1, 1); }
    return h("span", { class: "legend" }, h("span", { text: label[0] }), c,
      h("span", { text: label[1] }));
  }
  function scaleLegend() {
    return settings.scale === "log" ? legend(["1e-4", "1 (log)"]) : legend(["0", "1"]);
  }

  // ------------------------------------------------------------------ settings and theme

  const settings = { scale: "linear", theme: "light" };
  function stored(name) { try { return localStorage.getItem("lens_cache." + name); } catch (e) { return null; } }
  function store(name, v) { try { localStorage.setItem("lens_cache." + name, v); } catch (e) { /* private mode */ } }

  const darkQuery = matchMedia("(prefers-color-scheme: dark)");
  function applyTheme(theme) {
    settings.theme = theme;
    document.documentElement.dataset.theme = theme;
    document.getElementById("theme-toggle").textContent = theme === "dark" ? "dark" : "light";
    if (current && current.redraw) current.redraw();
  }
  function toggleTheme() {
    const next = settings.theme === "dark" ? "light" : "dark";
    store("theme", next);
    applyTheme(next);
  }
  function applyScale(scale) {
    settings.scale = scale;
    const b = document.getElementById("scale-toggle");
    b.textContent = scale === "log" ? "log" : "linear";
    b.setAttribute("aria-pressed", scale === "log" ? "true" : "false");
    if (current && current.redraw) current.redraw();
  }
  function toggleScale() {
    const next = settings.scale === "log" ? "linear" : "log";
    store("scale", next);
    applyScale(next);
  }

  // ------------------------------------------------------------------ index and navigation

  let INDEX = null;
  const byName = new Map(); // model name -> model
  const entryOf = new Map(); // "m|hash" -> entry
  const entriesOf = []; // model index -> [entry], index order
  const state = { homeOrder: null, lastPrompt: {} };

  function hashFor(view, args, query) {
    const q = query && String(query) ? "?" + query : "";
    return "#/" + [view, ...args.map((a) => encodeURIComponent(String(a)))].join("/") + q;
  }
  function go(hash) { if (location.hash !== hash) location.hash = hash; }
  function headHash(model, hash, layer, head) { return hashFor("head", [model.name, hash, layer, head]); }
  function promptHash(model, hash) { return hashFor("prompt", [model.name, hash]); }

  function modelOf(name) {
    const m = byName.get(name);
    if (!m) throw new Error("no model named " + JSON.stringify(name) + " in this store");
    return m;
  }
  function entryFor(model, hash) {
    const e = entryOf.get(model.idx + "|" + hash);
    if (!e) throw new Error("model " + model.name + " has no prompt " + JSON.stringify(hash));
    return e;
  }
  function promptName(e) {
    const meta = INDEX.texts[e.h].meta || {};
    return meta.id != null ? String(meta.id) : e.h.slice(0, 8);
  }
  /** The prompt before/after `hash` for `model`, in the home table's order when there is one. */
  function neighbour(model, hash, delta) {
    let order = entriesOf[model.idx];
    if (state.homeOrder) {
      const filtered = state.homeOrder.filter((e) => e.m === model.idx);
      if (filtered.some((e) => e.h === hash)) order = filtered;
    }
    const k = order.findIndex((e) => e.h === hash);
    return order[(k + delta + order.length) % order.length];
  }
  function nearestLayer(layers, layer) {
    return layers.reduce((best, l) => (Math.abs(l - layer) < Math.abs(best - layer) ? l : best), layers[0]);
  }

  function setCrumbs(items) {
    const nav = clear(document.getElementById("crumbs"));
    items.forEach((it, k) => {
      if (k) nav.append(h("span", { class: "sep", text: "/" }));
      nav.append(it.href ? link(it.text, it.href) : h("span", { text: it.text }));
    });
  }

  // ------------------------------------------------------------------ home view

  const HOME_COLS = [
    { key: "model", label: "model", w: "minmax(80px, 1fr)" },
    { key: "id", label: "id", w: "minmax(70px, 1fr)" },
    { key: "kind", label: "kind", w: "minmax(60px, 0.7fr)" },
    { key: "n", label: "tokens", w: "64px", num: true },
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
      this.cols = HOME_COLS.concat(INDEX.metrics.map((m) => ({
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
      return h("div", { class: "toolbar" }, this.search,
        select(models, (v) => { this.model = v; this.apply(); }, "model"),
        select(metaOpts, (v) => { this.meta = v; this.apply(); }, "filter by metadata"),
        this.count);
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
      if (key === "text") return INDEX.texts[e.h].text;
      if (key === "id") return promptName(e);
      if (key === "kind") { const k = (INDEX.texts[e.h].meta || {}).kind; return k == null ? "" : String(k); }
      return e.s[key];
    }

    apply() {
      const needle = this.q.trim().toLowerCase();
      const [mk, ...mv] = this.meta ? this.meta.split("=") : [];
      const metaVal = mv.join("=");
      let rows = INDEX.entries.filter((e) => {
        if (this.model && INDEX.models[e.m].name !== this.model) return false;
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
        scaleLegend()]), this.textBox, this.tokens, this.gridWrap);
      promptData(m, hash).then((p) => this.show(p), (err) => showError(this.gridWrap, err));
    }

    hashForModel(model) { return promptHash(model, this.entry.h); }
    step(delta) { const e = neighbour(this.model, this.entry.h, delta); go(promptHash(this.model, e.h)); }

    show(p) {
      this.p = p;
      clear(this.tokens);
      const shown = p.tokens.slice(0, 2048);
      shown.forEach((t, i) => this.tokens.append(h("span", { class: "tok", title: "position " + i, text: t })));
      if (p.tokens.length > shown.length) this.tokens.append(h("span", { class: "note", text: "…" }));
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

  function showError(node, err) {
    clear(node).append(h("p", { class: "error", text: String(err && err.message ? err.message : err) }));
  }

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

    /** Show head `head` of a decoded layer chunk; keeps zoom when the length is unchanged. */
    set(chunk, head, tokens) {
      const sameLength = this.chunk && this.chunk.T === chunk.T;
      this.chunk = chunk;
      this.head = head;
      this.tokens = tokens;
      this.base = head * chunk.tri;
      if (!sameLength) { this.sel = null; this.cs = 0; this.fitMode = true; }
      this.build();
      this.resize();
    }

    value(i, j) {
      return j <= i ? F16[this.chunk.u16[this.base + (i * (i + 1)) / 2 + j]] : null;
    }

    /** The T x T image: one colour-table lookup per stored value; masked cells stay clear. */
    build() {
      const t0 = performance.now();
      const T = this.chunk.T, u16 = this.chunk.u16, colors = f16Colors(settings.scale);
      if (!this.image) this.image = document.createElement("canvas");
      this.image.width = T;
      this.image.height = T;
      const ctx = this.image.getContext("2d");
      const img = ctx.createImageData(T, T);
      const px = new Uint32Array(img.data.buffer);
      let k = this.base;
      for (let i = 0; i < T; i++) {
        const row = i * T;
        for (let j = 0; j <= i; j++) px[row + j] = colors[u16[k++]];
      }
      ctx.putImageData(img, 0, 0);
      this.buildMs = performance.now() - t0;
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
      const v = this.value(c.i, c.j);
      showTip(e.clientX, e.clientY, [
        `query ${c.i}: ${JSON.stringify(this.tokens[c.i])}`,
        `key   ${c.j}: ${JSON.stringify(this.tokens[c.j])}`,
        v == null ? "value masked (key after query)" : `value ${fmtValue(v)}`,
      ]);
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

    /** The `k` keys row i attends to most, as [j, value]. */
    topKeys(i, k) {
      const out = [];
      for (let j = 0; j <= i; j++) out.push([j, this.value(i, j)]);
      return out.sort((a, b) => b[1] - a[1]).slice(0, k);
    }

    rebuild() { if (this.chunk) { this.build(); this.draw(); } }
    destroy() { this.resizer.disconnect(); hideTip(); }
  }

  // ------------------------------------------------------------------ head view

  /** This head's metrics on this prompt beside uniform attention's, as a small table. */
  function metricTable(p, li, head) {
    const row = (label, get) => h("tr", null, h("th", { text: label }),
      ...INDEX.metrics.map((m) => h("td", { class: "num", text: fmt(get(m)) })));
    return h("table", { class: "mini" },
      h("tr", null, h("th"), ...INDEX.metrics.map((m) => h("th", { title: METRIC_TITLES[m], text: METRIC_SHORT[m] }))),
      row("head", (m) => (p.metrics[m][li] ? p.metrics[m][li][head] : null)),
      row("uniform", (m) => p.baseline[m]));
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
      return { model, entry, layer: l, head: hd };
    }

    mount(route) {
      Object.assign(this, this.parse(route));
      state.lastPrompt[this.model.name] = this.entry.h;
      const root = clear(this.root);
      this.layerSel = h("select", { title: "layer (↑ ↓)", onchange: (e) => this.goto(Number(e.target.value), this.head) });
      this.headSel = h("select", { title: "head (← →)", onchange: (e) => this.goto(this.layer, Number(e.target.value)) });
      for (let hd = 0; hd < this.model.n_heads; hd++) this.headSel.append(option(hd, "head " + hd));
      this.legendBox = h("span", null, scaleLegend());
      const zoomBtn = (text, f, title) => h("button", { type: "button", text, title, onclick: () => this.pane.zoom(f) });
      root.append(promptToolbar(this, this.model, this.entry, [
        this.layerSel, this.headSel,
        zoomBtn("−", 0.8, "zoom out (-)"), zoomBtn("fit", 0, "fit (0)"), zoomBtn("+", 1.25, "zoom in (+)"),
        this.legendBox,
        link("grid", promptHash(this.model, this.entry.h), "all heads of this prompt (Esc)"),
        h("a", { href: "#", text: "compare", title: "side by side with another model or head",
          onclick: (e) => { e.preventDefault(); go(this.compareHash()); } }),
      ]));
      this.info = h("div", { class: "side" });
      this.panes = h("div", { class: "panes" });
      root.append(this.info, this.panes);
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
        if (!p.layers.includes(layer)) { // e.g. after j/k onto a prompt exported with fewer layers
          location.replace(headHash(model, entry.h, nearestLayer(p.layers, layer), head));
          return;
        }
        clear(this.layerSel);
        for (const l of p.layers) this.layerSel.append(option(l, "layer " + l, l === layer));
        const chunk = await layerData(model, entry.h, layer);
        if (this.layer !== layer || this.head !== head) return; // a newer request won
        this.p = p;
        this.pane.set(chunk, head, p.tokens);
        this.pane.el.dataset.shown = layer + "/" + head; // what is drawn now (tests, benchmarks)
        this.showSelection();
      } catch (err) {
        showError(this.info, err);
      }
    }

    showSelection() {
      const p = this.p, li = p.layers.indexOf(this.layer);
      const labels = p.labels && p.labels[li] ? p.labels[li][this.head] : [];
      fill(this.info,
        h("span", { class: "title", text: `L${this.layer} H${this.head}` }),
        labels.length ? h("span", { class: "badge", text: labels.join(", ") }) : null,
        metricTable(p, li, this.head),
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
      clear(this.legendBox).append(scaleLegend());
      this.pane.rebuild();
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
      root.append(panes);
      this.panes = this.sides.map((side, k) => this.column(panes, side, k));
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
      const sources = [option("", `average over ${this.model.n_prompts} prompts`)].concat(
        entriesOf[this.model.idx].map((e) => option(e.h, "prompt " + promptName(e), e.h === this.promptHash)));
      root.append(h("div", { class: "toolbar" }, h("span", { class: "title", text: this.model.name }),
        select(sources, (v) => { this.promptHash = v; this.load(); }, "which prompts")), this.caption,
        h("div", { class: "metrics-wrap" }, h("div", { class: "mtable-wrap" }, this.table), this.heat));
      this.load();
    }

    async load() {
      const m = this.model;
      try {
        if (this.promptHash) {
          const p = await promptData(m, this.promptHash);
          this.rows = metricRows(m, p.layers, (name, li, hd) => p.metrics[name][li][hd],
            (li, hd) => (p.labels && p.labels[li] ? p.labels[li][hd] : []), () => 1);
          this.baseline = p.baseline;
        } else {
          this.rows = metricRows(m, m.layers, (name, li, hd) => m.avg[name][m.layers[li]][hd],
            (li, hd) => m.labels[m.layers[li]][hd], (li, hd) => m.count[m.layers[li]][hd]);
          this.baseline = m.baseline;
        }
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
      const cols = ["layer", "head", ...INDEX.metrics];
      const head = h("tr", null, ...cols.map((c) => h("th", {
        text: METRIC_SHORT[c] || c, title: METRIC_TITLES[c] || c, dataset: c === key ? { key: c, dir: this.dir } : { key: c },
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
          ...INDEX.metrics.map((mname) => h("td", { text: fmt(r.v[mname]) })),
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
      const m = this.model, key = INDEX.metrics.includes(this.sort) ? this.sort : "induction";
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
        const b = c.getBoundingClientRect();
        return at.get(Math.floor((e.clientY - b.top) / cell) + "." + Math.floor((e.clientX - b.left) / cell));
      };
      c.addEventListener("mousemove", (e) => {
        const r = cellAt(e);
        if (r) showTip(e.clientX, e.clientY, [`L${r.layer} H${r.head}`, `${METRIC_SHORT[key]} ${fmt(r.v[key])}`]);
        else hideTip();
      });
      c.addEventListener("mouseleave", hideTip);
      c.addEventListener("click", (e) => { const r = cellAt(e); if (r) this.open(r.layer, r.head); });
      clear(this.heat).append(h("span", { class: "note", text: `${METRIC_SHORT[key]}: rows layers, columns heads` }), c,
        legend([fmt(lo), fmt(hi)]));
    }

    redraw() { this.drawHeat(); }
    onKey(e) { if (e.key === "Escape") { go("#/"); return true; } return false; }
    unmount() { hideTip(); }
  }

  function metricRows(model, layers, get, labels, count) {
    const rows = [];
    layers.forEach((layer, li) => {
      for (let hd = 0; hd < model.n_heads; hd++) {
        const v = {};
        for (const name of INDEX.metrics) v[name] = get(name, li, hd);
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
        const b = c.getBoundingClientRect();
        const t = Math.floor((e.clientX - b.left - lw) / cw), li = Math.floor((e.clientY - b.top - th) / ch);
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

  // ------------------------------------------------------------------ router

  const VIEWS = { home: HomeView, prompt: PromptView, head: HeadView, metrics: MetricsView,
    compare: CompareView, resid: ResidView };
  let current = null;

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const qi = raw.indexOf("?");
    const path = (qi >= 0 ? raw.slice(0, qi) : raw).split("/").filter(Boolean);
    let args;
    try { args = path.map(decodeURIComponent); } catch (e) { args = path; }
    return { view: args[0] || "home", args: args.slice(1), query: new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : "") };
  }

  function route() {
    const r = parseHash();
    const View = VIEWS[r.view];
    hideTip();
    try {
      if (current && View && current instanceof View && current.update && current.update(r)) return;
    } catch (err) { /* fall through to a fresh view, which reports the error */ }
    if (current && current.unmount) current.unmount();
    current = null;
    const app = clear(document.getElementById("app"));
    try {
      if (!View) throw new Error("unknown view " + JSON.stringify(r.view));
      current = new View(app, r);
    } catch (err) {
      setCrumbs([{ text: "prompts", href: "#/" }]);
      showError(app, err);
      app.append(link("back to the prompt list", "#/"));
    }
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT");
    if (typing && e.key !== "Escape" && e.key !== "Enter" && !(t.type === "search" && ["ArrowDown", "ArrowUp"].includes(e.key))) return;
    if (typing && e.key === "Escape") { t.blur(); return; }
    if (current && current.onKey && current.onKey(e)) { e.preventDefault(); return; }
    if (typing) return;
    if (e.key === "t") toggleTheme();
    else if (e.key === "l") toggleScale();
    else if (e.key === "?") toggleHelp();
    else if (e.key === "Escape" || e.key === "h") { document.getElementById("help").hidden = true; if (e.key === "h") go("#/"); }
    else return;
    e.preventDefault();
  }

  const HELP = [
    ["← →", "previous / next head"], ["↑ ↓", "previous / next layer (rows on the home page)"],
    ["j k  n p", "next / previous prompt"], ["Enter", "open"], ["Esc", "up one level"],
    ["+ − 0", "zoom in / out / fit"], ["click", "highlight a token's row and column"],
    ["c", "compare"], ["l", "linear / log colour"], ["t", "light / dark theme"], ["/", "search"], ["h", "home"],
  ];
  function toggleHelp() {
    const box = document.getElementById("help");
    if (!box.firstChild) {
      const dl = h("dl");
      for (const [k, v] of HELP) dl.append(h("dt", { text: k }), h("dd", { text: v }));
      box.append(h("strong", { text: "Keys" }), dl);
    }
    box.hidden = !box.hidden;
  }

  LENS.index = function (index) {
    INDEX = index;
    index.models.forEach((m, k) => { m.idx = k; byName.set(m.name, m); entriesOf.push([]); });
    for (const t of Object.values(index.texts)) t.lower = t.text.toLowerCase();
    for (const e of index.entries) { entryOf.set(e.m + "|" + e.h, e); entriesOf[e.m].push(e); }
    route();
  };

  function boot() {
    const theme = stored("theme") || (darkQuery.matches ? "dark" : "light");
    applyTheme(theme);
    applyScale(stored("scale") || "linear");
    darkQuery.addEventListener("change", (e) => { if (!stored("theme")) applyTheme(e.matches ? "dark" : "light"); });
    document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
    document.getElementById("scale-toggle").addEventListener("click", toggleScale);
    document.getElementById("help-toggle").addEventListener("click", toggleHelp);
    addEventListener("hashchange", () => { if (INDEX) route(); });
    addEventListener("keydown", onKey);
    addEventListener("load", () => {
      if (!INDEX) showError(document.getElementById("app"), DATA_DIR + "/lens_index.js did not load: run write_viewer(save_path) to build it.");
    });
  }
  boot();
})();
