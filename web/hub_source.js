/* lens_cache hosted viewer: the views' data read straight from a dataset pushed to a
 * Hugging Face Hub-compatible server, by HTTP range requests (lens_cache/hub/_viewer_index.py
 * says what the push writes for it; lens_cache/hub/_space.py writes this page).
 *
 * Which dataset: ?hub=ORG/NAME (&endpoint=URL&revision=REV) in the page's address, else the
 * page's hub_config.js (a Space's, pinned to the commit it was pushed with). Without either,
 * this file does nothing and the page is the local viewer.
 *
 * It reads viewer/index.json once, then for each view only what is on screen: a prompt's page
 * data (one range of viewer/prompts-NNNNN.json), and for each head on screen the header of its
 * shard (once) and the pattern's byte range. Everything fetched is untrusted: a shard's header
 * is checked entry by entry (known dtype, shape matching its bytes, inside the file, no two
 * overlapping) before any value of that shard is shown, and it must agree with the index; a
 * shard that fails is named in the page and nothing from it is drawn. No token is ever sent or
 * asked for: a private dataset is refused with the command that opens it locally.
 */
(function () {
  "use strict";

  const UI = window.LENS_UI;
  const { F16, h, fill } = UI;
  const params = new URLSearchParams(location.search);
  const cfg = window.LENS_HUB_CONFIG || {};
  const repo = params.get("hub") || cfg.repo;
  if (!repo) return; // the local viewer
  const endpoint = (params.get("endpoint") || cfg.endpoint || "https://huggingface.co").replace(/\/+$/, "");
  // the config's commit is that of its own dataset: another ?hub= reads its main branch
  const sameAsConfig = !params.get("hub") || params.get("hub") === cfg.repo;
  const revision = params.get("revision") || (sameAsConfig && cfg.revision) || "main";
  const INDEX_VERSION = 1; // the newest viewer/index.json this page reads
  const MAX_HEADER = 100 * 1024 * 1024; // a shard header past this is refused unread
  // A pattern shard's header: its metadata, then per prompt about 90 bytes (hash, offsets,
  // dtype, shape); the first read asks for a little more than that.
  const HEADER_BASE = 256, HEADER_PER_TENSOR = 112;
  const DTYPES = { F32: 4, F16: 2, BF16: 2 };
  const STATS = { bytes: 0, requests: 0 };
  const notes = document.getElementById("hub-notes");
  let index = null;

  // ------------------------------------------------------------------ fetching

  function url(path) {
    const parts = path.split("/").map(encodeURIComponent).join("/");
    return `${endpoint}/datasets/${repo.split("/").map(encodeURIComponent).join("/")}/resolve/${encodeURIComponent(revision)}/${parts}`;
  }
  function counted(n) {
    STATS.bytes += n;
    STATS.requests += 1;
    const box = document.getElementById("hub-fetched");
    if (!box) return;
    box.textContent = `fetched ${STATS.bytes.toLocaleString("en-US")} B in ${STATS.requests} requests`;
    box.dataset.bytes = String(STATS.bytes);
    box.dataset.requests = String(STATS.requests);
  }
  class HubHttpError extends Error {
    constructor(status, path) { super(`${path}: HTTP ${status} from ${endpoint}`); this.status = status; }
  }

  /** Bytes [start, end) of a repo file (end null: to its end) and the file's size. */
  async function range(path, start, end) {
    const headers = end == null ? { Range: `bytes=${start}-` } : { Range: `bytes=${start}-${end - 1}` };
    const resp = await fetch(url(path), { headers, credentials: "omit" });
    if (resp.status !== 206 && resp.status !== 200) throw new HubHttpError(resp.status, path);
    const buf = await resp.arrayBuffer();
    counted(buf.byteLength);
    if (resp.status === 200) { // a server that ignores ranges sends the whole file
      return { buf: buf.slice(start, end == null ? undefined : end), size: buf.byteLength };
    }
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(resp.headers.get("Content-Range") || "");
    if (!m || Number(m[1]) !== start || buf.byteLength !== Number(m[2]) - start + 1) {
      throw new Error(`${path}: the server answered another range than asked (${resp.headers.get("Content-Range")})`);
    }
    return { buf, size: Number(m[3]) };
  }

  async function fetchJson(path) {
    const resp = await fetch(url(path), { credentials: "omit" });
    if (!resp.ok) throw new HubHttpError(resp.status, path);
    const buf = await resp.arrayBuffer();
    counted(buf.byteLength);
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(buf));
  }

  // ------------------------------------------------------------------ shard headers

  const headers = new Map(); // path -> Promise<{start, entries, size}>
  const badShards = new Map(); // path -> reason

  function shardError(path, reason) {
    badShards.set(path, reason);
    showNotes();
    return new Error(`shard ${path}: ${reason}; nothing from it is shown`);
  }

  /** A shard's checked header: every entry inside the file, its shape matching its bytes, a
   * known dtype, no two overlapping. Rejects (naming the shard) when any of it is not so. */
  function shardHeader(path, guess) {
    if (!headers.has(path)) headers.set(path, readHeader(path, guess));
    return headers.get(path);
  }
  /** `guess`: about how long the header is (from the index), so one request usually reads it. */
  async function readHeader(path, guess) {
    const first = await range(path, 0, 8 + guess);
    if (first.buf.byteLength < 8) throw shardError(path, "malformed header: the file is shorter than 8 bytes");
    const dv = new DataView(first.buf);
    const n = dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32;
    if (n < 2 || n > MAX_HEADER || 8 + n > first.size) {
      throw shardError(path, `malformed header: its length ${n} does not fit a file of ${first.size} bytes`);
    }
    let parsed;
    try {
      const bytes = 8 + n <= first.buf.byteLength ? first.buf.slice(8, 8 + n) : (await range(path, 8, 8 + n)).buf;
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (err) {
      if (err instanceof HubHttpError) throw err;
      throw shardError(path, "malformed header: not JSON");
    }
    const reason = checkEntries(parsed, first.size - 8 - n);
    if (reason) throw shardError(path, reason);
    return { start: 8 + n, entries: parsed, size: first.size };
  }
  function checkEntries(parsed, dataBytes) {
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return "malformed header: not a JSON object";
    const spans = [];
    for (const [key, e] of Object.entries(parsed)) {
      if (key === "__metadata__") continue;
      if (!e || typeof e !== "object" || !(e.dtype in DTYPES) || !Array.isArray(e.shape)
        || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2
        || ![...e.shape, ...e.data_offsets].every((x) => Number.isSafeInteger(x) && x >= 0)) {
        return `malformed header: entry ${JSON.stringify(key)} is not a tensor of a known dtype`;
      }
      const [a, b] = e.data_offsets;
      if (b < a || b > dataBytes) return `entry ${JSON.stringify(key)} lies past the end of the file`;
      if (e.shape.reduce((x, y) => x * y, 1) * DTYPES[e.dtype] !== b - a) {
        return `entry ${JSON.stringify(key)}'s shape does not match its bytes`;
      }
      spans.push([a, b, key]);
    }
    spans.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i][0] < spans[i - 1][1]) return `entries ${JSON.stringify(spans[i - 1][2])} and ${JSON.stringify(spans[i][2])} overlap`;
    }
    return null;
  }

  // ------------------------------------------------------------------ decoding

  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  /** float32 -> float16 bits, rounded to nearest even: the colours of the local viewer's table. */
  function toHalf(v) {
    f32[0] = v;
    const x = u32[0], sign = (x >>> 16) & 0x8000, m = x & 0x7fffff;
    let e = (x >>> 23) & 0xff;
    if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
    e = e - 127 + 15;
    if (e >= 31) return sign | 0x7c00;
    const full = e <= 0 ? m | 0x800000 : m, shift = e <= 0 ? 14 - e : 13;
    if (shift > 24) return sign;
    let half = (e <= 0 ? 0 : e << 10) | (full >>> shift);
    const rem = full & ((1 << shift) - 1), mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  /** A tensor's little-endian bytes as float32 values (bfloat16 and float16 exactly). */
  function decodeValues(buf, dtype) {
    if (dtype === "F32") return new Float32Array(buf);
    const bits = new Uint16Array(buf), out = new Float32Array(bits.length);
    if (dtype === "F16") for (let i = 0; i < bits.length; i++) out[i] = F16[bits[i]];
    else for (let i = 0; i < bits.length; i++) { u32[0] = bits[i] << 16; out[i] = f32[0]; }
    return out;
  }

  // ------------------------------------------------------------------ the views' data

  function shardPath(model, layer, head, run) {
    const two = (x) => String(x).padStart(2, "0");
    return `tensors/${model}/patterns/layer_${two(layer)}/head_${two(head)}-${String(run).padStart(5, "0")}.safetensors`;
  }
  function patternsOf(model) { return ((index.runs || {})[model.name] || {}).patterns || { heads: {}, runs: [] }; }
  function pushedHeads(model, layer) { return patternsOf(model).heads[String(layer)] || []; }

  const tensors = new Map(); // "model|hash|layer|head" -> Promise<Float32Array [T*T]>
  function pattern(model, hash, layer, head) {
    const key = [model.name, hash, layer, head].join("|");
    if (!tensors.has(key)) {
      const p = readPattern(model, hash, layer, head);
      p.catch(() => tensors.delete(key)); // a failed read is retried by the next view
      tensors.set(key, p);
    }
    return tensors.get(key);
  }
  async function readPattern(model, hash, layer, head) {
    const run = patternsOf(model).runs.find((r) => r.hashes.includes(hash));
    if (!run) throw new Error(`the index lists no pattern of this prompt (${hash})`);
    const path = shardPath(model.name, layer, head, run.index);
    const hdr = await shardHeader(path, HEADER_BASE + HEADER_PER_TENSOR * run.hashes.length);
    const e = hdr.entries[hash], [a, b] = run.offsets[run.hashes.indexOf(hash)];
    if (!e || e.data_offsets[0] !== a || e.data_offsets[1] !== b) {
      throw shardError(path, `its header and the dataset's index disagree about ${hash}`);
    }
    if (e.shape.length !== 2 || e.shape[0] !== e.shape[1]) {
      throw shardError(path, `entry ${JSON.stringify(hash)} is not a [T, T] pattern`);
    }
    const { buf } = await range(path, hdr.start + a, hdr.start + b);
    return { values: decodeValues(buf, e.dtype), T: e.shape[0] };
  }

  /** One layer as the local viewer's chunk ({nHeads, T, tri, u16}), with `f32` holding the
   * pushed values exactly (the hover reads those); heads not pushed are NaN. */
  async function layerData(model, hash, layer) {
    const heads = pushedHeads(model, layer);
    const got = await Promise.all(heads.map((hd) => pattern(model, hash, layer, hd)));
    const T = got.length ? got[0].T : 0, tri = (T * (T + 1)) / 2, H = model.n_heads;
    const chunk = { nHeads: H, T, tri, u16: new Uint16Array(H * tri).fill(0x7e00), f32: new Float32Array(H * tri).fill(NaN) };
    heads.forEach((hd, k) => {
      const v = got[k].values;
      if (got[k].T !== T || v.length !== T * T) throw new Error(`head ${layer}.${hd}: the pattern's shape differs from its layer's`);
      let at = hd * tri;
      for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++, at++) { chunk.f32[at] = v[i * T + j]; chunk.u16[at] = toHalf(v[i * T + j]); }
    });
    return chunk;
  }

  const payloads = new Map(); // "payloads|model|hash" or "lens|model|hash" -> Promise
  function promptData(model, hash, decode) { return pageData("payloads", model, hash, decode); }
  function lensData(model, hash, decode) {
    if (!index.kinds.includes("logit_lens")) return notPushed("the logit lens", "logit_lens");
    return pageData("lens", model, hash, decode);
  }
  function topData(model, layer) {
    if (!index.kinds.includes("head_contributions")) return notPushed("top examples", "head_contributions");
    return pageData("top", model, String(layer), async (obj) => [obj]);
  }
  /** One JSON line of viewer/prompts-NNNNN.json, by the range the index gives, decoded. */
  function pageData(field, model, hash, decode) {
    const key = field + "|" + model.name + "|" + hash;
    if (!payloads.has(key)) {
      const where = (index[field] || {})[model.name + "|" + hash];
      const p = !where ? Promise.reject(new Error(`the index has no ${field} data for ${hash}`))
        : range(where[0], where[1], where[2]).then((r) => {
          const obj = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(r.buf));
          return decode(obj).then(([value]) => value);
        });
      p.catch(() => payloads.delete(key));
      payloads.set(key, p);
    }
    return payloads.get(key);
  }

  function notPushed(what, kind) {
    return Promise.reject(new Error(`${what} was not pushed: ${pushCommand([kind])} adds it`));
  }

  // ------------------------------------------------------------------ notes and boot

  const KINDS = ["predictions", "logit_lens", "head_contributions", "resid_post"];
  function pushCommand(kinds, heads) {
    const all = [...new Set([...(index ? index.kinds : []), ...kinds])];
    return `lens-cache hub push --repo ${repo}` + (all.length ? ` --kinds ${all.join(",")}` : "") +
      (heads ? ` --heads ${heads}` : "");
  }
  function note(text, cls) { return h("p", { class: "note " + (cls || ""), text }); }
  function headNote() {
    const m = /^#\/head\/([^/]+)\/([^/]+)\/(\d+)\/(\d+)/.exec(location.hash);
    let model = null;
    try { model = m && UI.modelOf(decodeURIComponent(m[1])); } catch (err) { return null; } // the view says so
    if (!model) return null;
    const layer = Number(m[3]), head = Number(m[4]);
    if (pushedHeads(model, layer).includes(head)) return null;
    const all = Object.entries(patternsOf(model).heads).flatMap(([l, hs]) => hs.map((x) => `${l}.${x}`));
    return note(`head ${layer}.${head} was not pushed; ${pushCommand([], [...all, `${layer}.${head}`].join(","))} adds it`, "hub-not-pushed");
  }
  function showNotes() {
    if (!notes || !index) return;
    const missing = KINDS.filter((k) => !index.kinds.includes(k));
    const lines = [];
    if (missing.length) lines.push(note(`not pushed: ${missing.join(", ")}; ${pushCommand(missing)} adds them`, "hub-kinds"));
    lines.push(headNote());
    for (const [path, reason] of badShards) lines.push(note(`shard ${path}: ${reason}; nothing from it is shown`, "error hub-bad-shard"));
    fill(notes, ...lines);
  }

  function refuse(text) {
    const app = document.getElementById("app");
    fill(app, h("p", { class: "error", id: "hub-refused", text }));
  }
  async function boot() {
    let got;
    try {
      got = await fetchJson("viewer/index.json");
    } catch (err) {
      if (!(err instanceof HubHttpError)) return refuse(`viewer/index.json of ${repo} is not readable: ${err.message}`);
      if (err.status === 404 && await exists("lens_cache.json")) {
        return refuse(`${repo} was pushed by an older lens_cache, without the hosted viewer's index: ` +
          `upgrade (pip install -U lens_cache) and push it again with the same selection ` +
          `(${pushCommand([])} ...; only the index goes up), ` +
          `or pull it: lens-cache hub pull --repo ${repo}`);
      }
      return refuse(`${repo} could not be read from ${endpoint} (HTTP ${err.status}): it is private, or not there. ` +
        `This page never asks for a token; open it locally instead: lens-cache hub pull --repo ${repo}, then lens-cache view`);
    }
    if (!got || got.format !== "lens_cache-viewer" || typeof got.version !== "number" || !got.viewer) {
      return refuse(`viewer/index.json of ${repo} is not a lens_cache viewer index`);
    }
    if (got.version > INDEX_VERSION) {
      return refuse(`${repo}'s viewer index is version ${got.version}; this page reads up to ${INDEX_VERSION}: ` +
        "update the page (pip install -U lens_cache, then lens-cache hub space or lens-cache view --hub)");
    }
    index = got;
    index.kinds = Array.isArray(index.kinds) ? index.kinds : [];
    // router.js defines LENS.index; the index may arrive before the last script has run
    if (document.readyState === "loading") await new Promise((r) => addEventListener("DOMContentLoaded", r));
    window.LENS.index(index.viewer);
    showNotes();
  }
  async function exists(path) {
    try { await fetchJson(path); return true; } catch (err) { return false; }
  }

  UI.hub = {
    repo, endpoint, revision, stats: STATS,
    promptData, layerData, lensData,
    topData,
  };
  addEventListener("hashchange", showNotes);
  boot();
})();
