// Small hand-written SVG charts: bars with confidence whiskers, and a scatter with
// crosshair intervals. A charting library would be 50-200 KB for the same two pictures.

const SVG_NS = "http://www.w3.org/2000/svg";

// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#7F7F00", "#000000"];

function svg(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + (Math.abs(lo) || 1);
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v < hi + step * 0.999; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

function scale(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  return (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);
}

// CJK characters take about twice the width of Latin ones at the same font size.
function fitLabel(text, widthPx, fontPx = 11) {
  let used = 0;
  let out = "";
  for (const ch of text) {
    used += ch.charCodeAt(0) > 0x2e80 ? fontPx : fontPx * 0.58;
    if (used > widthPx) return `${out}…`;
    out += ch;
  }
  return out;
}

function yAxis(root, ticks, y, left, right, format) {
  for (const tick of ticks) {
    const ty = y(tick);
    root.append(svg("line", { x1: left, x2: right, y1: ty, y2: ty, class: "grid" }));
    root.append(
      svg("text", { x: left - 6, y: ty, class: "tick", "text-anchor": "end", "dominant-baseline": "middle" }, format(tick)),
    );
  }
}

function whisker(root, x1, y1, x2, y2, cap, vertical) {
  root.append(svg("line", { x1, y1, x2, y2, class: "whisker" }));
  for (const [cx, cy] of [[x1, y1], [x2, y2]]) {
    const attrs = vertical
      ? { x1: cx - cap, x2: cx + cap, y1: cy, y2: cy }
      : { x1: cx, x2: cx, y1: cy - cap, y2: cy + cap };
    root.append(svg("line", { ...attrs, class: "whisker" }));
  }
}

/**
 * Bars of scenario means from zero, with 95% interval whiskers.
 * items: [{label, mean, half, color, best}], half may be null (fewer than 2 replications).
 */
export function barChart({ items, format, title, range = null, width = 440, height = 250 }) {
  const margin = { top: 22, right: 12, bottom: 40, left: 70 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" });
  root.append(svg("title", {}, title));
  // Intervals are clipped to the KPI's natural range (0..100% for shares), and at zero
  // when every mean is positive: a normal-theory interval can reach below a count's zero.
  const floor = range ? range[0] : items.every((i) => i.mean >= 0) ? 0 : -Infinity;
  const ceiling = range ? range[1] : Infinity;
  const clip = (v) => Math.min(Math.max(v, floor), ceiling);
  const highs = items.map((i) => clip(i.mean + (i.half ?? 0)));
  const lows = items.map((i) => clip(i.mean - (i.half ?? 0)));
  const ticks = niceTicks(Math.min(0, ...lows), Math.max(0, ...highs));
  const y = scale([ticks[0], ticks.at(-1)], [height - margin.bottom, margin.top]);
  yAxis(root, ticks, y, margin.left, width - margin.right, format);
  const band = (width - margin.left - margin.right) / Math.max(items.length, 1);
  const barWidth = Math.min(64, band * 0.6);
  items.forEach((item, index) => {
    const cx = margin.left + band * (index + 0.5);
    const top = y(Math.max(item.mean, 0));
    const bottom = y(Math.min(item.mean, 0));
    const group = svg("g", { class: item.best ? "bar best" : "bar" });
    const summary = item.half == null ? format(item.mean) : `${format(item.mean)} ± ${format(item.half)}`;
    group.append(svg("title", {}, `${item.label}: ${summary}`));
    group.append(
      svg("rect", { x: cx - barWidth / 2, y: top, width: barWidth, height: Math.max(bottom - top, 1), fill: item.color }),
    );
    if (item.half != null) {
      whisker(group, cx, y(clip(item.mean - item.half)), cx, y(clip(item.mean + item.half)), barWidth / 4, true);
    }
    const labelY = y(clip(item.mean + (item.half ?? 0))) - 6;
    group.append(svg("text", { x: cx, y: labelY, class: "value", "text-anchor": "middle" }, format(item.mean)));
    const name = `${item.best ? "★ " : ""}${item.label}`;
    group.append(
      svg("text", { x: cx, y: height - margin.bottom + 16, class: "label", "text-anchor": "middle" }, fitLabel(name, band - 4)),
    );
    root.append(group);
  });
  root.append(
    svg("line", { x1: margin.left, x2: width - margin.right, y1: y(0), y2: y(0), class: "axis" }),
  );
  return root;
}

/**
 * One point per scenario at (x mean, y mean) with both intervals as a crosshair.
 * items: [{label, x, xHalf, y, yHalf, color}]
 */
/** A point: a filled dot, a hollow one (undecided) or a cross (ruled out). */
function marker(item, cx, cy) {
  if (item.shape === "cross") {
    return svg("path", { d: `M${cx - 5} ${cy - 5}L${cx + 5} ${cy + 5}M${cx - 5} ${cy + 5}L${cx + 5} ${cy - 5}`, class: "cross", stroke: item.color });
  }
  if (item.shape === "hollow") return svg("circle", { cx, cy, r: 5, class: "hollow", stroke: item.color });
  return svg("circle", { cx, cy, r: 6, fill: item.color });
}

export function scatterChart({ items, formatX, formatY, title, xLabel, yLabel, yRange = null, yRule = null, width = 560, height = 320 }) {
  const margin = { top: 16, right: 20, bottom: 48, left: 70 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart scatter" });
  root.append(svg("title", {}, title));
  // Padded around the data, but never past a natural bound such as 0..100%.
  const span = (values, halves, [floor, ceiling] = [-Infinity, Infinity]) => {
    const lo = Math.min(...values.map((v, i) => v - (halves[i] ?? 0)));
    const hi = Math.max(...values.map((v, i) => v + (halves[i] ?? 0)));
    const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.05 || 1;
    return niceTicks(Math.max(lo - pad, floor), Math.min(hi + pad, ceiling), 5);
  };
  const xTicks = span(items.map((i) => i.x), items.map((i) => i.xHalf));
  const yTicks = span(items.map((i) => i.y), items.map((i) => i.yHalf), yRange ?? undefined);
  const x = scale([xTicks[0], xTicks.at(-1)], [margin.left, width - margin.right]);
  const y = scale([yTicks[0], yTicks.at(-1)], [height - margin.bottom, margin.top]);
  yAxis(root, yTicks, y, margin.left, width - margin.right, formatY);
  for (const tick of xTicks) {
    const tx = x(tick);
    root.append(svg("line", { x1: tx, x2: tx, y1: margin.top, y2: height - margin.bottom, class: "grid" }));
    root.append(svg("text", { x: tx, y: height - margin.bottom + 16, class: "tick", "text-anchor": "middle" }, formatX(tick)));
  }
  root.append(svg("text", { x: (margin.left + width - margin.right) / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, `${xLabel} →`));
  root.append(
    svg("text", { x: 14, y: (margin.top + height - margin.bottom) / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${(margin.top + height - margin.bottom) / 2})` }, `${yLabel} →`),
  );
  if (yRule != null && yRule >= yTicks[0] && yRule <= yTicks.at(-1)) {
    root.append(svg("line", { x1: margin.left, x2: width - margin.right, y1: y(yRule), y2: y(yRule), class: "rule" }));
  }
  const front = items.filter((i) => i.pareto).sort((a, b) => a.x - b.x);
  if (front.length > 1) {
    root.append(svg("polyline", { points: front.map((i) => `${x(i.x)},${y(i.y)}`).join(" "), class: "pareto-line" }));
  }
  for (const item of items) {
    const cx = x(item.x);
    const cy = y(item.y);
    const group = svg("g", { class: item.pareto ? "point pareto" : "point", "data-id": item.id ?? "" });
    group.append(svg("title", {}, `${item.label}: ${formatX(item.x)}, ${formatY(item.y)}${item.pareto ? " (Pareto)" : ""}`));
    if (item.xHalf != null) whisker(group, x(item.x - item.xHalf), cy, x(item.x + item.xHalf), cy, 4, false);
    if (item.yHalf != null) whisker(group, cx, y(item.y - item.yHalf), cx, y(item.y + item.yHalf), 4, true);
    if (item.pareto) group.append(svg("circle", { cx, cy, r: 11, class: "pareto-ring" }));
    group.append(marker(item, cx, cy));
    const right = cx < width - 140;
    if (!item.quiet) {
      group.append(
        svg("text", { x: cx + (right ? 10 : -10), y: cy - 8, class: "label", "text-anchor": right ? "start" : "end" }, item.label),
      );
    }
    root.append(group);
  }
  return root;
}

function quantile(sorted, p) {
  const at = (sorted.length - 1) * p;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/** Quartiles, Tukey whiskers (1.5 IQR), the mean and the points beyond the whiskers. */
export function fiveNumbers(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const q1 = quantile(sorted, 0.25);
  const q3 = quantile(sorted, 0.75);
  const reach = 1.5 * (q3 - q1);
  const inside = sorted.filter((v) => v >= q1 - reach && v <= q3 + reach);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { q1, median: quantile(sorted, 0.5), q3, low: inside[0], high: inside.at(-1), mean, outliers: sorted.filter((v) => v < inside[0] || v > inside.at(-1)) };
}

const MAX_OUTLIERS_DRAWN = 200;

/**
 * One box per scenario: quartiles, median line, Tukey whiskers, a diamond at the mean and
 * the replications beyond the whiskers as dots. groups: [{label, color, values}].
 */
export function boxPlot({ groups, format, title, width = 560, height = 280 }) {
  const margin = { top: 16, right: 12, bottom: 40, left: 70 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart box" });
  root.append(svg("title", {}, title));
  const stats = groups.map((g) => (g.values.length ? fiveNumbers(g.values) : null));
  const all = groups.flatMap((g) => g.values);
  if (!all.length) return root;
  const ticks = niceTicks(Math.min(...all), Math.max(...all));
  const y = scale([ticks[0], ticks.at(-1)], [height - margin.bottom, margin.top]);
  yAxis(root, ticks, y, margin.left, width - margin.right, format);
  const band = (width - margin.left - margin.right) / Math.max(groups.length, 1);
  const boxWidth = Math.min(60, band * 0.5);
  groups.forEach((group, index) => {
    const s = stats[index];
    if (!s) return;
    const cx = margin.left + band * (index + 0.5);
    const g = svg("g", { class: "box-group" });
    const summary = `${group.label}: n ${group.values.length}, median ${format(s.median)}, IQR ${format(s.q1)}–${format(s.q3)}, mean ${format(s.mean)}`;
    g.append(svg("title", {}, summary));
    whisker(g, cx, y(s.low), cx, y(s.q1), boxWidth / 4, true);
    whisker(g, cx, y(s.q3), cx, y(s.high), boxWidth / 4, true);
    g.append(svg("rect", { x: cx - boxWidth / 2, y: y(s.q3), width: boxWidth, height: Math.max(y(s.q1) - y(s.q3), 1), fill: group.color, class: "box-body" }));
    g.append(svg("line", { x1: cx - boxWidth / 2, x2: cx + boxWidth / 2, y1: y(s.median), y2: y(s.median), class: "median" }));
    const my = y(s.mean);
    g.append(svg("path", { d: `M${cx} ${my - 5}L${cx + 5} ${my}L${cx} ${my + 5}L${cx - 5} ${my}Z`, class: "mean-mark" }));
    for (const v of s.outliers.slice(0, MAX_OUTLIERS_DRAWN)) g.append(svg("circle", { cx, cy: y(v), r: 2.5, class: "outlier" }));
    g.append(svg("text", { x: cx, y: height - margin.bottom + 16, class: "label", "text-anchor": "middle" }, fitLabel(group.label, band - 4)));
    root.append(g);
  });
  return root;
}

/**
 * A KPI against one numeric factor: the means joined by a line, inside a band of their
 * 95% intervals. points: [{x, mean, half}] sorted by x.
 */
export function lineBandChart({ points, formatX, formatY, title, xLabel, yRange = null, width = 560, height = 300 }) {
  const margin = { top: 16, right: 20, bottom: 48, left: 70 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart line" });
  root.append(svg("title", {}, title));
  if (!points.length) return root;
  const lows = points.map((p) => p.mean - (p.half ?? 0));
  const highs = points.map((p) => p.mean + (p.half ?? 0));
  const clampLo = yRange ? yRange[0] : -Infinity;
  const clampHi = yRange ? yRange[1] : Infinity;
  const yTicks = niceTicks(Math.max(Math.min(...lows), clampLo), Math.min(Math.max(...highs), clampHi));
  const xTicks = niceTicks(Math.min(...points.map((p) => p.x)), Math.max(...points.map((p) => p.x)));
  const x = scale([xTicks[0], xTicks.at(-1)], [margin.left, width - margin.right]);
  const y = scale([yTicks[0], yTicks.at(-1)], [height - margin.bottom, margin.top]);
  yAxis(root, yTicks, y, margin.left, width - margin.right, formatY);
  for (const tick of xTicks) {
    root.append(svg("text", { x: x(tick), y: height - margin.bottom + 16, class: "tick", "text-anchor": "middle" }, formatX(tick)));
  }
  root.append(svg("text", { x: (margin.left + width - margin.right) / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, xLabel));
  const clip = (v) => Math.min(Math.max(v, clampLo), clampHi);
  const upper = points.map((p) => `${x(p.x)},${y(clip(p.mean + (p.half ?? 0)))}`);
  const lower = points.map((p) => `${x(p.x)},${y(clip(p.mean - (p.half ?? 0)))}`).reverse();
  root.append(svg("polygon", { points: [...upper, ...lower].join(" "), class: "band" }));
  root.append(svg("polyline", { points: points.map((p) => `${x(p.x)},${y(p.mean)}`).join(" "), class: "mean-line" }));
  for (const p of points) {
    const dot = svg("circle", { cx: x(p.x), cy: y(p.mean), r: 3.5, class: "mean-dot" });
    dot.append(svg("title", {}, `${formatX(p.x)}: ${formatY(p.mean)}${p.half == null ? "" : ` ± ${formatY(p.half)}`}`));
    root.append(dot);
  }
  return root;
}

/** A KPI over two factors: a cell per pair of levels, darker for a higher mean, with its value. */
export function heatMap({ xs, ys, cell, format, title, xLabel, yLabel, width = 560 }) {
  const margin = { top: 12, right: 12, bottom: 44, left: 80 };
  const size = Math.max(18, Math.min(56, (width - margin.left - margin.right) / Math.max(xs.length, 1)));
  const height = margin.top + margin.bottom + size * ys.length;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart heat" });
  root.append(svg("title", {}, title));
  const values = xs.flatMap((a) => ys.map((b) => cell(a, b)?.mean)).filter((v) => v != null);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  ys.forEach((b, row) => {
    const top = margin.top + size * (ys.length - 1 - row);
    root.append(svg("text", { x: margin.left - 6, y: top + size / 2, class: "tick", "text-anchor": "end", "dominant-baseline": "middle" }, String(b)));
    xs.forEach((a, col) => {
      const found = cell(a, b);
      const left = margin.left + size * col;
      const share = found && hi > lo ? (found.mean - lo) / (hi - lo) : 0.5;
      const g = svg("g", { class: "heat-cell" });
      g.append(svg("title", {}, found ? `${xLabel} ${a}, ${yLabel} ${b}: ${format(found.mean)}` : `${a}, ${b}: –`));
      // From a pale to a deep blue; the text switches to white where the cell is dark.
      const light = Math.round(95 - share * 60);
      g.append(svg("rect", { x: left, y: top, width: size - 1, height: size - 1, fill: found ? `hsl(205 70% ${light}%)` : "#eee" }));
      if (found && size >= 34) {
        g.append(svg("text", { x: left + size / 2, y: top + size / 2, class: light < 60 ? "cell-text dark" : "cell-text", "text-anchor": "middle", "dominant-baseline": "middle" }, format(found.mean)));
      }
      root.append(g);
    });
  });
  xs.forEach((a, col) => {
    root.append(svg("text", { x: margin.left + size * (col + 0.5), y: margin.top + size * ys.length + 14, class: "tick", "text-anchor": "middle" }, String(a)));
  });
  root.append(svg("text", { x: margin.left + (size * xs.length) / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, xLabel));
  root.append(svg("text", { x: 12, y: margin.top + (size * ys.length) / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 12 ${margin.top + (size * ys.length) / 2})` }, yLabel));
  return root;
}
