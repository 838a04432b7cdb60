/* lens_cache viewer: plain JS, no framework, no network, works from file://.
 *
 * Data arrives only through <script> files that call LENS.index / LENS.prompt / LENS.chunk
 * (format in lens_cache/viewer.py). Text from the store is put into the page only with
 * textContent / text nodes or drawn on canvases, never parsed as HTML.
 *
 * The viewer is several classic scripts (ES modules do not load from file:// in Chromium),
 * which index.html loads in this order (lens_cache.viewer.SCRIPTS):
 *   core.js           constants, DOM helpers, tooltip, decoding, the data-script loader and
 *                     its cache, colours, settings, index and navigation helpers
 *   tokens.js         the token strip coloured by loss, with each token's top-k on hover
 *   head_canvas.js    HeadPane: one head's pattern on a canvas
 *   views_home.js     the prompt list
 *   views_prompt.js   one prompt's layer x head grid; the toolbar of every per-prompt view
 *   views_head.js     one head; two heads side by side (compare)
 *   views_metrics.js  per-head metrics; residual-stream norms
 *   views_lens.js     the logit lens: layers x positions, each cell a layer's top-1 token
 *   views_top.js      a head's top examples across the model's prompts (head_contributions)
 *   router.js         router, keys, help, theme and scale toggles, LENS.index, boot
 *
 * Shared scope: every file is one IIFE, so the page gets two globals only. window.LENS is the
 * public contract the data scripts call (LENS.index / LENS.prompt / LENS.chunk / LENS.lens /
 * LENS.top).
 * window.LENS_UI is internal: a file takes what it uses from it in one destructuring line at
 * its top and adds what it defines at its bottom, so each file states its dependencies.
 * Those imports are read once, at load time: shared state is therefore only mutated, never
 * reassigned (INDEX is filled in place by LENS.index; the current view is router.js's own).
 */
(function () {
  "use strict";

  const UI = (window.LENS_UI = {});
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
    dup: "mean attention to earlier occurrences of the query token (rows whose token repeats)",
    induction: "mean attention to the token after an earlier occurrence of the query token",
    max: "mean row maximum",
    dla: "mean direct logit attribution toward the actual next token, over positions",
  };
  const METRIC_SHORT = {
    entropy: "entropy", entropy_norm: "entropy/log", first: "first", prev: "prev",
    diag: "self", dup: "dup", induction: "induction", max: "max", dla: "DLA",
  };
  /** A metric column's heading: the built-in short names, else a user metric's own name
   * (its column key is "u:" + name, so it never collides with a built-in). */
  function metricShort(key) { return METRIC_SHORT[key] || String(key).replace(/^u:/, ""); }
  /** The scalar user metrics (lens_cache.metric) stored in this viewer, as column keys. */
  function userColumns() {
    return (INDEX.user_metrics || []).filter((u) => u.kind === "scalar").map((u) => "u:" + u.name);
  }

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
  function showError(node, err) {
    clear(node).append(h("p", { class: "error", text: String(err && err.message ? err.message : err) }));
  }

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
  /** The pointer's position in a canvas's own pixels. CSS may draw a canvas at another size
   * than its pixel grid (a flex column stretches it), so scale by the drawn content box. */
  function canvasPoint(c, e) {
    const b = c.getBoundingClientRect();
    return [(e.clientX - b.left - c.clientLeft) * (c.width / (c.clientWidth || c.width)),
      (e.clientY - b.top - c.clientTop) * (c.height / (c.clientHeight || c.height))];
  }

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

  const DTYPES = { f2: Uint16Array, f4: Float32Array, u1: Uint8Array, i4: Int32Array };
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
    // A notebook display (lens_cache.notebook) carries its data scripts as data: URLs.
    const inline = window.LENS_INLINE;
    if (inline && !inline[src]) {
      return Promise.reject(new Error("this inline display holds only the layers it opened " +
        "with; lens_cache.show(..., layer=...) shows another (" + src + ")"));
    }
    const entry = { decode };
    entry.promise = new Promise((res, rej) => { entry.resolve = res; entry.reject = rej; });
    const s = document.createElement("script");
    s.src = inline ? inline[src] : src;
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
  LENS.lens = (key, obj) => deliver("lens:" + key, obj);
  LENS.top = (key, obj) => deliver("top:" + key, obj);
  LENS.dist = (key, obj) => deliver("dist:" + key, obj);
  LENS.topk = (key, obj) => deliver("topk:" + key, obj); // the compact pattern (views_topk.js)
  LENS.topkband = (key, obj) => deliver("topkband:" + key, obj);

  const PRED_ARRAYS = ["loss", "entropy", "rank", "top_ids", "top_lp"];
  /** A predictions object (see lens_cache/viewer/_predictions.py) with its arrays decoded. */
  async function decodePred(obj) {
    const out = Object.assign({}, obj);
    let bytes = 0;
    for (const name of PRED_ARRAYS) {
      if (!obj[name]) continue;
      out[name] = await decodeArray(obj[name]);
      bytes += out[name].data.byteLength;
    }
    return [out, bytes];
  }

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
    if (obj.pred) {
      const [pred, predBytes] = await decodePred(obj.pred);
      p.pred = pred;
      bytes += predBytes;
    }
    if (obj.heads) {
      const [heads, headBytes] = await decodeHeads(obj.heads);
      p.heads = heads;
      bytes += headBytes;
    }
    if (obj.user) { // metrics registered with lens_cache.metric (lens_cache/viewer/_user.py)
      const matrices = {};
      for (const [name, desc] of Object.entries(obj.user.matrices)) {
        matrices[name] = await decodeArray(desc);
        bytes += matrices[name].data.byteLength;
      }
      p.user = Object.assign({}, obj.user, { matrices });
    }
    return [p, bytes + 64 * obj.tokens.length];
  }

  /** Head contributions (lens_cache/viewer_heads.py) with value_norms, dla and thumb decoded. */
  async function decodeHeads(obj) {
    const out = Object.assign({}, obj);
    let bytes = 0;
    for (const name of ["value_norms", "dla", "thumb"]) {
      if (!obj[name]) continue;
      out[name] = await decodeArray(obj[name]);
      bytes += out[name].data.byteLength;
    }
    return [out, bytes];
  }

  /** One head's `[T]` row of a decoded `heads` field ("value_norms" or "dla"), or null when
   * the layer has no head contributions. */
  function headRow(p, field, layer, head) {
    const li = p.heads ? p.heads.layers.indexOf(layer) : -1;
    if (li < 0) return null;
    const T = p.tokens.length, H = p.heads[field].shape[1];
    return p.heads[field].data.subarray((li * H + head) * T, (li * H + head + 1) * T);
  }

  /** Whether patterns are shown value-weighted now: the setting, for a prompt that has norms. */
  function weighted(p) { return settings.weighting === "value" && !!(p && p.heads); }

  // The hosted viewer (hub_source.js) sets UI.hub: then the data comes from the Hub by range.
  function promptData(model, hash) {
    if (UI.hub) return UI.hub.promptData(model, hash, decodePrompt);
    const rel = model.slug + "/" + hash;
    return loadScript("prompt:" + rel, DATA_DIR + "/" + rel + "/prompt.js", decodePrompt);
  }
  function lensData(model, hash) {
    if (UI.hub) return UI.hub.lensData(model, hash, decodePred);
    const rel = model.slug + "/" + hash;
    return loadScript("lens:" + rel, DATA_DIR + "/" + rel + "/lens.js", decodePred);
  }
  function topData(model, layer) {
    if (UI.hub) return UI.hub.topData(model, layer);
    const rel = model.slug + "/" + layer;
    return loadScript("top:" + rel, DATA_DIR + "/" + model.slug + "/top/L" + layer + ".js",
      async (obj) => [obj, 256 * 1024]);
  }
  function distData(model, layer) {
    return loadScript("dist:" + model.slug + "/" + layer, DATA_DIR + "/" + model.slug + "/dist/L" + layer + ".js",
      async (obj) => [obj, 256 * 1024]);
  }
  function layerData(model, hash, layer) {
    if (UI.hub) return UI.hub.layerData(model, hash, layer);
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
  /** A signed value on a diverging scale: red positive, blue negative, clear at 0, saturated
   * at |v| = maxAbs; null for NaN. */
  function signedColor(v, maxAbs) {
    if (!Number.isFinite(v)) return null;
    const a = (0.06 + 0.84 * clamp(Math.abs(v) / (maxAbs || 1), 0, 1)).toFixed(3);
    return v < 0 ? `rgba(38, 110, 220, ${a})` : `rgba(220, 50, 47, ${a})`;
  }
  function maxAbs(values) {
    let m = 0;
    for (const v of values) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    return m;
  }

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

  // ------------------------------------------------------------------ settings

  // the current settings; router.js changes them and applies them to the page
  const settings = { scale: "linear", theme: "light", weighting: "attention" };
  function stored(name) { try { return localStorage.getItem("lens_cache." + name); } catch (e) { return null; } }
  function store(name, v) { try { localStorage.setItem("lens_cache." + name, v); } catch (e) { /* private mode */ } }
  /** Attention or value-weighted attention (key `v`); the router redraws the current view on
   * the event. */
  function toggleWeighting() {
    settings.weighting = settings.weighting === "value" ? "attention" : "value";
    store("weighting", settings.weighting);
    dispatchEvent(new Event("lens-settings"));
  }
  /** The toolbar button of the views that show the weighting. */
  function weightingButton() {
    const on = settings.weighting === "value";
    return h("button", { type: "button", class: "weighting", "aria-pressed": on ? "true" : "false",
      title: "attention / value-weighted attention A·‖v W_O‖ (v)", text: on ? "value-weighted" : "attention",
      onclick: toggleWeighting });
  }

  // ------------------------------------------------------------------ index and navigation

  // Filled in place by LENS.index (router.js): every file holds this one object, so it is never
  // reassigned; state.indexed says whether the index has arrived.
  const INDEX = {};
  const byName = new Map(); // model name -> model
  const entryOf = new Map(); // "m|hash" -> entry
  const entriesOf = []; // model index -> [entry], index order
  const state = { homeOrder: null, lastPrompt: {}, indexed: false };

  function hashFor(view, args, query) {
    const q = query && String(query) ? "?" + query : "";
    return "#/" + [view, ...args.map((a) => encodeURIComponent(String(a)))].join("/") + q;
  }
  /* Navigate and show the new route now, not when "hashchange" arrives: a key pressed in between
   * would otherwise act on the view of the old hash (router.js skips the late event). */
  function go(hash) {
    if (location.hash === hash) return;
    location.hash = hash;
    if (state.route) state.route();
  }
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

  /** What a prompt page says where it has no patterns to draw. */
  function noPatternsNote(p) {
    if (p.patterns !== false) return "No attention patterns stored for this prompt (exported without the pattern hook).";
    return "No attention patterns stored for this prompt: it was exported with head_metrics, whose per-head " +
      "metrics the metrics view lists. To draw its patterns, export its text again with --hooks pattern " +
      "into another store (--save).";
  }

  Object.assign(UI, {
    noPatternsNote,
    LENS, DATA_DIR, ROW_H, METRIC_TITLES, METRIC_SHORT, metricShort, userColumns,
    h, clear, fill, fmt, fmtValue, tokLabel, cssVar, clamp, option, select, link, showError,
    showTip, hideTip, canvasPoint,
    F16, promptData, layerData, lensData, topData, distData, headRow, weighted, loadScript, decodeArray,
    packed, colorIndex, f16Colors, rgb, signedColor, maxAbs, legend, scaleLegend,
    settings, stored, store, toggleWeighting, weightingButton,
    INDEX, byName, entryOf, entriesOf, state,
    hashFor, go, headHash, promptHash, modelOf, entryFor, promptName, neighbour, nearestLayer,
    setCrumbs,
  });
})();
