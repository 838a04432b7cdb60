/* lens_cache viewer, tokens.js: the token strip coloured by the model's loss on each token,
 * and the hover text of a prediction (top-k with probabilities, the actual token's rank), shared
 * by the prompt, head and logit-lens views. Shared scope and load order: see core.js. */
(function () {
  "use strict";

  const { clamp, clear, h, hideTip, showTip, tokLabel } = LENS_UI;

  const LOSS_MAX = 8; // nats at which the strip's colour saturates (uniform over 3,000 tokens)

  /** Background of a token predicted with `loss` (its own loss as the next token): clear at 0,
   * red at LOSS_MAX and above; null where the loss is unknown. */
  function lossColor(loss) {
    if (!(loss >= 0)) return null;
    return `rgba(220, 50, 47, ${(0.06 + 0.74 * clamp(loss / LOSS_MAX, 0, 1)).toFixed(3)})`;
  }

  function fmtProb(p) { return p >= 0.001 ? p.toPrecision(4) : p.toExponential(3); }

  /** Hover lines for the prediction made at position i from `fields` (a decoded `pred`, or one
   * layer of a decoded lens: `row` is the layer's index there). The loss and rank are of the
   * actual next token, tokens[i + 1]. */
  function predictionLines(fields, row, i, tokens) {
    const T = tokens.length, k = fields.k, at = row * T + i;
    const next = i + 1 < T ? tokens[i + 1] : null;
    const lines = [];
    if (next == null) lines.push("last position: no next token to score");
    else {
      const loss = fields.loss.data[at];
      lines.push(`actual next ${JSON.stringify(next)}: p ${fmtProb(Math.exp(-loss))}  loss ${loss.toFixed(4)}`);
      if (fields.rank) lines.push(`rank ${fields.rank.data[at] + 1} (1 = the top prediction)`);
    }
    if (fields.entropy) lines.push(`entropy ${fields.entropy.data[at].toFixed(4)} nats`);
    lines.push(`top ${k}:`);
    for (let j = 0; j < k; j++) {
      const id = fields.top_ids.data[at * k + j], lp = fields.top_lp.data[at * k + j];
      const tok = fields.vocab[id] != null ? fields.vocab[id] : "#" + id;
      lines.push(`${String(j + 1).padStart(3)}. ${tokLabel(tok, 24).padEnd(24)} ${fmtProb(Math.exp(lp))}`);
    }
    return lines;
  }

  /** A token's hover: what the model predicted for this slot from the tokens before it. */
  function tokenLines(pred, i, tokens) {
    const head = `position ${i}: ${JSON.stringify(tokens[i])}`;
    if (i === 0) return [head, "the first token: nothing before it predicts it"];
    return [head, `predicted at position ${i - 1}:`, ...predictionLines(pred, 0, i - 1, tokens)];
  }

  /** Fill `box` with the prompt's tokens; with predictions, each token's background shows the
   * loss of predicting it, and hovering a token shows what the model predicted in its place. */
  function fillTokens(box, p, limit) {
    clear(box);
    const shown = p.tokens.slice(0, limit || 2048), pred = p.pred;
    shown.forEach((t, i) => {
      const span = h("span", { class: "tok", dataset: { pos: i }, text: t });
      if (pred) {
        const bg = i > 0 ? lossColor(pred.loss.data[i - 1]) : null;
        if (bg) span.style.background = bg;
      } else span.title = "position " + i;
      box.append(span);
    });
    if (p.tokens.length > shown.length) box.append(h("span", { class: "note", text: "…" }));
    box.classList.toggle("scored", !!pred);
    box.onmousemove = pred ? (e) => {
      const span = e.target.closest(".tok");
      if (!span) { hideTip(); return; }
      showTip(e.clientX, e.clientY, tokenLines(pred, Number(span.dataset.pos), p.tokens));
    } : null;
    box.onmouseleave = pred ? hideTip : null;
  }

  /** Background of a loss difference (nats): blue where the second model does better (lower
   * loss), red where it does worse, saturating at 4 nats. */
  function diffColor(d) {
    if (!Number.isFinite(d)) return null;
    const a = (0.06 + 0.74 * clamp(Math.abs(d) / 4, 0, 1)).toFixed(3);
    return d < 0 ? `rgba(38, 110, 220, ${a})` : `rgba(220, 50, 47, ${a})`;
  }

  /** Two models' per-token loss on one prompt and their difference (second minus first), as a
   * token strip; null unless both stored predictions. Tokens must match to be compared. */
  function lossComparison(pa, pb, names) {
    if (!pa.pred || !pb.pred) return null;
    const same = pa.tokens.length === pb.tokens.length && pa.tokens.every((t, i) => t === pb.tokens[i]);
    const mean = (p) => (p.pred.mean_loss == null ? "–" : p.pred.mean_loss.toFixed(4));
    const title = h("div", { class: "note", text: `per-token loss, ${names[1]} minus ${names[0]} ` +
      `(blue: ${names[1]} lower); mean loss ${names[0]} ${mean(pa)}, ${names[1]} ${mean(pb)}` });
    if (!same) return h("div", null, title, h("p", { class: "note", text: "the two models tokenize this prompt differently: their per-token losses do not line up" }));
    const box = h("div", { class: "tokens loss-diff" });
    pa.tokens.slice(0, 2048).forEach((t, i) => {
      const span = h("span", { class: "tok", dataset: { pos: i }, text: t });
      const bg = i > 0 ? diffColor(pb.pred.loss.data[i - 1] - pa.pred.loss.data[i - 1]) : null;
      if (bg) span.style.background = bg;
      box.append(span);
    });
    box.onmousemove = (e) => {
      const span = e.target.closest(".tok");
      if (!span) { hideTip(); return; }
      const i = Number(span.dataset.pos);
      if (i === 0) { showTip(e.clientX, e.clientY, [`position 0: ${JSON.stringify(pa.tokens[0])}`, "the first token: not predicted"]); return; }
      const la = pa.pred.loss.data[i - 1], lb = pb.pred.loss.data[i - 1];
      showTip(e.clientX, e.clientY, [`position ${i}: ${JSON.stringify(pa.tokens[i])}`,
        `loss ${names[0]}: ${la.toFixed(4)}`, `loss ${names[1]}: ${lb.toFixed(4)}`,
        `difference: ${(lb - la).toFixed(4)}`]);
    };
    box.onmouseleave = hideTip;
    return h("div", null, title, box);
  }

  Object.assign(LENS_UI, { lossColor, fmtProb, predictionLines, tokenLines, fillTokens, lossComparison });
})();
