/* lens_cache viewer, router.js: theme and colour-scale toggles, router, keys, help,
 * LENS.index and boot. Loaded last. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { CompareView, DATA_DIR, HeadView, HomeView, INDEX, LENS, LensView, MetricsView, PromptView,
    ResidView, TopView, byName, clear, entriesOf, entryOf, go, h, hideTip, link, setCrumbs, settings,
    showError, state, store, stored, toggleWeighting } = LENS_UI;

  // ------------------------------------------------------------------ theme and colour scale

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

  // ------------------------------------------------------------------ router

  const VIEWS = { home: HomeView, prompt: PromptView, head: HeadView, metrics: MetricsView,
    compare: CompareView, resid: ResidView, lens: LensView, top: TopView, topk: LENS_UI.TopkView };
  let current = null;

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const qi = raw.indexOf("?");
    const path = (qi >= 0 ? raw.slice(0, qi) : raw).split("/").filter(Boolean);
    let args;
    try { args = path.map(decodeURIComponent); } catch (e) { args = path; }
    return { view: args[0] || "home", args: args.slice(1), query: new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : "") };
  }

  let routed = null; // the hash the current view shows
  function route() {
    if (current && location.hash === routed) return; // go() already showed it
    routed = location.hash;
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
    else if (e.key === "v") toggleWeighting();
    else if (e.key === "?") toggleHelp();
    else if (e.key === "Escape" || e.key === "h") { document.getElementById("help").hidden = true; if (e.key === "h") go("#/"); }
    else return;
    e.preventDefault();
  }

  const HELP = [
    ["← →", "previous / next head"], ["↑ ↓", "previous / next layer (rows on the home page)"],
    ["j k  n p", "next / previous prompt"], ["Enter", "open"], ["Esc", "up one level"],
    ["+ − 0", "zoom in / out / fit"], ["click", "highlight a token's row and column"],
    ["c", "compare"], ["l", "linear / log colour"], ["s", "logit lens: colour by p(actual) / p(top-1)"], ["v", "attention / value-weighted (head_contributions)"], ["t", "light / dark theme"], ["/", "search"], ["h", "home"],
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
    Object.assign(INDEX, index);
    state.indexed = true;
    index.models.forEach((m, k) => { m.idx = k; byName.set(m.name, m); entriesOf.push([]); });
    for (const t of Object.values(index.texts)) t.lower = t.text.toLowerCase();
    for (const e of index.entries) { entryOf.set(e.m + "|" + e.h, e); entriesOf[e.m].push(e); }
    route();
  };

  function boot() {
    state.route = () => { if (state.indexed) route(); };
    const theme = stored("theme") || (darkQuery.matches ? "dark" : "light");
    applyTheme(theme);
    applyScale(stored("scale") || "linear");
    settings.weighting = stored("weighting") === "value" ? "value" : "attention";
    addEventListener("lens-settings", () => { if (current && current.redraw) current.redraw(); });
    darkQuery.addEventListener("change", (e) => { if (!stored("theme")) applyTheme(e.matches ? "dark" : "light"); });
    document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
    document.getElementById("scale-toggle").addEventListener("click", toggleScale);
    document.getElementById("help-toggle").addEventListener("click", toggleHelp);
    addEventListener("hashchange", () => { if (state.indexed) route(); });
    addEventListener("keydown", onKey);
    addEventListener("load", () => {
      if (!state.indexed && !LENS_UI.hub) showError(document.getElementById("app"), DATA_DIR + "/lens_index.js did not load: run write_viewer(save_path) to build it.");
    });
  }
  boot();
})();
