// The results panel: the decision against a baseline, the best scenario (only when the
// selection procedure names one), the cheapest that meets a target, the charts and the
// tables. Every statement here comes from the server's statistics, never the page's own.

import { ApiError, api } from "./api.js";
import { barChart, boxPlot, scatterChart } from "./charts.js";
import { $, h, setText, swatch } from "./dom.js";
import { problemText } from "./errors.js";
import { count, formatterFor, intervalText, isMoney, isShare, kpiLabel, statText, tickFormatter } from "./format.js";
import { has, t } from "./i18n.js";
import { TERMINAL, kpiDirections, scenarioName, state } from "./state.js";

const COST = "total_labor_costs";
const ONTIME = "ontime_delivery_rate";
const HEADLINE_FIELDS = { [COST]: ["average_total_costs", "total_costs_ci95"], [ONTIME]: ["average_delivery_rate", "delivery_rate_ci95"] };
const MAX_DISTRIBUTION_ROWS = 20000;

// Answers of the analysis endpoints, keyed by what they depend on (run, state, count).
const cache = new Map();
let ctx = null; // the last arguments of renderResultsBody, for redraws after an answer

export function resetDecisions() {
  cache.clear();
}

/** An answer from the cache, or null while it is fetched (then the panel redraws). */
function cached(key, path) {
  const entry = cache.get(key);
  if (entry) return entry;
  const pending = { loading: true, data: null, error: null };
  cache.set(key, pending);
  api("GET", path)
    .then((data) => Object.assign(pending, { loading: false, data }))
    .catch((error) => Object.assign(pending, { loading: false, error }))
    .finally(() => cache.get(key) === pending && ctx?.redraw());
  return pending;
}

function runKey(run) {
  return `${run.run_id}:${run.status}:${run.done}`;
}

/** A run that can be asked for statistics: ended, several scenarios, each with 2+ replications. */
function decidable(run, results) {
  const enough = results.length === run?.scenario_ids.length && results.every((r) => r.replications >= 2);
  return run && TERMINAL.has(run.status) && run.scenario_ids.length > 1 && enough;
}

// -- statistics per KPI ------------------------------------------------------------------

/** {mean, half} of one KPI in one aggregate entry, or null when absent. */
export function kpiStat(entry, kpi) {
  const summary = entry.metrics?.[kpi];
  if (summary && summary.mean != null) return { mean: summary.mean, half: summary.ci95, doubtful: summary.normal_doubtful === true, skewness: summary.skewness };
  const fields = HEADLINE_FIELDS[kpi];
  if (fields && entry[fields[0]] != null) return { mean: entry[fields[0]], half: entry[fields[1]] };
  return null;
}

function kpiColumns(results, bestIds) {
  const directions = kpiDirections();
  return [...directions.keys()]
    .filter((k) => results.some((r) => kpiStat(r, k)))
    .map((name) => {
      const stats = results.map((r) => kpiStat(r, name));
      const format = formatterFor(name, stats.filter(Boolean).map((s) => s.mean));
      const bestId = bestIds.get(name);
      return { name, direction: directions.get(name), stats, format, best: results.findIndex((r) => r.scenario_id === bestId) };
    });
}

// -- the selection of the best ---------------------------------------------------------------

/** Per KPI: the select answer for the run (or null where there is none to ask for). */
function selections(run, results, kpis) {
  const out = new Map();
  if (!decidable(run, results)) return out;
  for (const kpi of kpis) out.set(kpi, cached(`select:${runKey(run)}:${kpi}`, `/api/simulations/${run.run_id}/select?kpi=${kpi}`));
  return out;
}

function bestIdsOf(selected) {
  const ids = new Map();
  for (const [kpi, answer] of selected) if (answer.data?.subset?.length === 1) ids.set(kpi, answer.data.subset[0]);
  return ids;
}

function bestLine(run, results, col, answer) {
  const dir = t(col.direction === "max" ? "results.higher" : "results.lower");
  const label = `${kpiLabel(col.name)} (${dir})`;
  if (!run) return h("li", {}, t("best.needsRun", { kpi: label }));
  if (!TERMINAL.has(run.status)) return h("li", {}, t("best.whenEnded", { kpi: label }));
  if (run.scenario_ids.length < 2) return h("li", {}, t("best.single", { kpi: label }));
  if (!answer) return h("li", { "data-kpi": col.name, "data-best": "none" }, t("best.tooFew", { kpi: label }), " ", extendButton(run));
  if (answer.loading) return h("li", { class: "muted" }, t("best.asking", { kpi: label }));
  if (answer.error) {
    const text = answer.error instanceof ApiError && answer.error.status === 409 ? t("best.tooFew", { kpi: label }) : problemText(answer.error);
    return h("li", { "data-kpi": col.name, "data-best": "none" }, text, " ", extendButton(run));
  }
  const subset = answer.data.subset;
  if (subset.length === 1) {
    const i = results.findIndex((r) => r.scenario_id === subset[0]);
    const value = i >= 0 ? statText(col.stats[i], col.format) : "";
    return h("li", { "data-kpi": col.name, "data-best": subset[0] }, h("span", { class: "best-mark", "aria-hidden": "true" }, "★ "), t("results.best", { kpi: label, name: scenarioName(subset[0], run), value }));
  }
  const names = subset.map((id) => scenarioName(id, run)).join(t("list.sep"));
  return h("li", { "data-kpi": col.name, "data-best": "none" }, t("best.undecided", { kpi: label, names, confidence: Math.round(answer.data.confidence * 100) }), " ", extendButton(run));
}

function extendButton(run) {
  const k = Math.max(run.replications, 2);
  return h("button", { type: "button", class: "secondary small", onclick: () => ctx.runAction(run.run_id, "extend", { replications: k }) }, t("best.extend", { n: count(k) }));
}

function renderBest(run, results, columns, selected) {
  $("best-list").replaceChildren(...columns.map((c) => bestLine(run, results, c, selected.get(c.name))));
  const procedure = [...selected.values()].find((a) => a.data)?.data.procedure;
  $("best-procedure").hidden = !procedure;
  setText($("best-procedure"), procedure ? t("best.procedure", { procedure }) : "");
}

// -- the decision against a baseline ---------------------------------------------------------

function renderBaselineOptions(run) {
  const select = $("compare-baseline");
  const ids = [...run.scenario_ids].sort((a, b) => a - b);
  const chosen = Number(select.value);
  select.replaceChildren(...ids.map((id) => h("option", { value: id }, scenarioName(id, run))));
  select.value = String(ids.includes(chosen) ? chosen : ids[0]);
  return Number(select.value);
}

function paramChanges(run, sid, baseline) {
  const mine = run.scenarios?.[String(sid)]?.params ?? {};
  const base = run.scenarios?.[String(baseline)]?.params ?? {};
  return Object.keys(mine)
    .filter((k) => mine[k] !== base[k])
    .map((k) => `${has(`param.${k}`) ? t(`param.${k}`) : k}: ${base[k] ?? "–"} → ${mine[k]}`)
    .join(" · ");
}

function perUnit(run, sid, kpi) {
  if (!isMoney(kpi)) return "";
  const model = run.scenarios?.[String(sid)]?.model;
  return has(`unit.per.${model}`) ? ` ${t(`unit.per.${model}`)}` : ` ${t("unit.per.replication")}`;
}

function verdictText(kpi, verdict) {
  const own = `verdict.${kpi}.${verdict}`;
  return has(own) ? t(own) : t(`compare.${verdict}`, {}, verdict);
}

function decisionCard(run, sid, baseline, rows, formats) {
  const lines = rows.map((c) => {
    const f = formats.get(c.kpi) ?? formatterFor(c.kpi, [c.mean_difference]);
    const diff = isShare(c.kpi) ? f.diff(c.mean_difference).replace(t("unit.pp"), t("unit.ppLong")) : f.diff(c.mean_difference);
    return h(
      "li",
      { "data-kpi": c.kpi, "data-verdict": c.verdict },
      h("span", { class: "kpi" }, `${kpiLabel(c.kpi)}: `),
      h("strong", { class: "diff" }, `${diff}${perUnit(run, sid, c.kpi)}`),
      " ",
      h("span", { class: "ci" }, intervalText(c.paired_ci95, f)),
      " ",
      h("span", { class: `verdict verdict-${c.verdict}` }, verdictText(c.kpi, c.verdict)),
    );
  });
  const changes = paramChanges(run, sid, baseline);
  return h(
    "li",
    { class: "card", "data-scenario-id": sid },
    h("h4", {}, scenarioName(sid, run), h("small", { class: "muted" }, ` ${t("decision.vs", { name: scenarioName(baseline, run) })}`)),
    changes ? h("p", { class: "muted changes" }, changes) : null,
    h("ul", {}, ...lines),
  );
}

function renderDecision(run, results) {
  const section = $("compare");
  if (!run || run.scenario_ids.length < 2) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  const baseline = renderBaselineOptions(run);
  const note = $("compare-note");
  if (!decidable(run, results)) {
    // The section keeps the height it had while a run goes on, so the page does not jump.
    if ($("decision-cards").children.length) section.style.minHeight = `${section.offsetHeight}px`;
    note.textContent = t(TERMINAL.has(run.status) ? "decision.tooFew" : "decision.whenEnded");
    $("decision-cards").replaceChildren();
    $("compare-table").hidden = true;
    return;
  }
  const answer = cached(`compare:${runKey(run)}:${baseline}`, `/api/simulations/${run.run_id}/compare?baseline=${baseline}`);
  if (answer.data) section.style.minHeight = "";
  note.textContent = answer.loading ? t("decision.asking") : answer.error ? t("compare.unavailable", { detail: problemText(answer.error) }) : t("decision.note", { n: count(answer.data.comparisons[0]?.n ?? 0) });
  if (!answer.data) return;
  const formats = new Map(kpiColumns(results, new Map()).map((c) => [c.name, c.format]));
  const bySid = new Map();
  for (const c of answer.data.comparisons) bySid.set(c.scenario_id, [...(bySid.get(c.scenario_id) ?? []), c]);
  $("decision-cards").replaceChildren(...[...bySid].map(([sid, rows]) => decisionCard(run, sid, baseline, rows, formats)));
  drawCompareTable(run, answer.data, formats);
}

function drawCompareTable(run, data, formats) {
  const table = $("compare-table");
  table.hidden = false;
  table.querySelector("thead").replaceChildren(
    h("tr", {}, ...["results.scenario", "compare.kpi", "compare.diff", "compare.paired", "compare.welch", "compare.verdict"].map((k) => h("th", { scope: "col" }, t(k)))),
  );
  table.querySelector("tbody").replaceChildren(
    ...data.comparisons.map((c) => {
      const f = formats.get(c.kpi) ?? formatterFor(c.kpi, [c.mean_difference]);
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, scenarioName(c.scenario_id, run)),
        h("td", {}, kpiLabel(c.kpi)),
        h("td", { class: "num" }, f.diff(c.mean_difference)),
        h("td", { class: "num" }, intervalText(c.paired_ci95, f)),
        h("td", { class: "num" }, intervalText(c.welch_ci95, f)),
        h("td", {}, h("span", { class: `verdict verdict-${c.verdict}` }, t(`compare.${c.verdict}`, {}, c.verdict))),
      );
    }),
  );
}

// -- the cheapest that meets a target ------------------------------------------------------

function renderConstraintOptions(columns) {
  const objective = $("constraint-objective");
  const kpi = $("constraint-kpi");
  const signature = columns.map((c) => c.name).join("|") + t("title");
  if (objective.dataset.signature === signature) return;
  objective.dataset.signature = signature;
  const keep = [objective.value, kpi.value];
  objective.replaceChildren(...columns.map((c) => h("option", { value: c.name }, kpiLabel(c.name))));
  kpi.replaceChildren(...columns.map((c) => h("option", { value: c.name }, kpiLabel(c.name))));
  const names = columns.map((c) => c.name);
  objective.value = names.includes(keep[0]) ? keep[0] : names.includes(COST) ? COST : names[0];
  kpi.value = names.includes(keep[1]) ? keep[1] : names.includes(ONTIME) ? ONTIME : names.at(-1);
}

/** Whether a scenario meets `stat op limit`: "yes" with 95% confidence, "no", or "unclear". */
function meets(stat, op, limit) {
  const lo = stat.mean - (stat.half ?? 0);
  const hi = stat.mean + (stat.half ?? 0);
  const [surely, surelyNot] = op === ">=" ? [lo >= limit, hi < limit] : [hi <= limit, lo > limit];
  return surely ? "yes" : surelyNot ? "no" : "unclear";
}

function renderConstraint(results, columns) {
  renderConstraintOptions(columns);
  const objective = columns.find((c) => c.name === $("constraint-objective").value);
  const target = columns.find((c) => c.name === $("constraint-kpi").value);
  const raw = Number($("constraint-value").value);
  $("constraint-unit").textContent = target && isShare(target.name) ? "%" : "";
  if (!objective || !target || $("constraint-value").value === "" || !Number.isFinite(raw)) {
    setText($("constraint-answer"), t("constraint.fill"));
    return;
  }
  const limit = isShare(target.name) ? raw / 100 : raw;
  const op = $("constraint-op").value;
  const rows = results.map((r, i) => ({ r, o: objective.stats[i], c: target.stats[i] })).filter((x) => x.o && x.c);
  const status = rows.map((x) => ({ ...x, ok: meets(x.c, op, limit) }));
  const sign = objective.direction === "max" ? -1 : 1;
  const pick = status.filter((x) => x.ok === "yes").sort((a, b) => sign * (a.o.mean - b.o.mean))[0];
  const unclear = status.filter((x) => x.ok === "unclear").map((x) => x.r.scenario_name);
  const rule = `${kpiLabel(target.name)} ${op === ">=" ? "≥" : "≤"} ${isShare(target.name) ? `${raw}%` : target.format(limit)}`;
  const best = t(objective.direction === "max" ? "constraint.highest" : "constraint.lowest", { kpi: kpiLabel(objective.name) });
  const parts = [pick ? t("constraint.answer", { best, rule, name: pick.r.scenario_name, value: statText(pick.o, objective.format), check: statText(pick.c, target.format) }) : t("constraint.none", { rule })];
  if (unclear.length) parts.push(t("constraint.unclear", { names: unclear.join(t("list.sep")) }));
  setText($("constraint-answer"), parts.join(" "));
  $("constraint-answer").dataset.pick = pick?.r.scenario_id ?? "";
}

// -- charts and the table --------------------------------------------------------------------

function renderCharts(results, columns, colors) {
  const dirLabel = (d) => t(d === "max" ? "results.higher" : "results.lower");
  $("charts").replaceChildren(
    ...columns.map((col) => {
      const caption = t("results.chartCaption", { kpi: kpiLabel(col.name), dir: dirLabel(col.direction) });
      const items = results
        .map((r, i) => (col.stats[i] ? { label: r.scenario_name, mean: col.stats[i].mean, half: col.stats[i].half, color: colors[i], best: i === col.best } : null))
        .filter(Boolean);
      const range = isShare(col.name) ? [0, 1] : null;
      return h("figure", { class: "chart-card", "data-kpi": col.name }, h("figcaption", {}, caption), barChart({ items, format: col.format, title: caption, range }));
    }),
  );
}

/** Scenarios no other beats on both cost and on-time (by the means). */
export function paretoIds(points) {
  return points
    .filter((p) => !points.some((q) => q !== p && q.x <= p.x && q.y >= p.y && (q.x < p.x || q.y > p.y)))
    .map((p) => p.id);
}

function renderScatter(results, columns, colors) {
  const cost = columns.find((c) => c.name === COST);
  const ontime = columns.find((c) => c.name === ONTIME);
  $("scatter-figure").hidden = !(cost && ontime);
  if (!(cost && ontime)) return;
  const items = results
    .map((r, i) => (cost.stats[i] && ontime.stats[i] ? { id: r.scenario_id, label: r.scenario_name, x: cost.stats[i].mean, xHalf: cost.stats[i].half, y: ontime.stats[i].mean, yHalf: ontime.stats[i].half, color: colors[i] } : null))
    .filter(Boolean);
  const efficient = new Set(paretoIds(items));
  for (const item of items) item.pareto = efficient.has(item.id);
  $("scatter").replaceChildren(
    scatterChart({ items, formatX: tickFormatter(COST), formatY: tickFormatter(ONTIME), title: t("results.scatter"), xLabel: kpiLabel(COST), yLabel: kpiLabel(ONTIME), yRange: [0, 1] }),
  );
  const names = items.filter((i) => i.pareto).map((i) => i.label);
  setText($("pareto-note"), t("results.pareto", { names: names.join(t("list.sep")) }));
}

function statCell(c, i) {
  const stat = c.stats[i];
  const best = i === c.best ? h("span", { class: "best-mark", title: t("results.bestMark") }, " ★") : null;
  const doubt = stat?.doubtful ? h("abbr", { class: "doubt", title: t("results.doubtful") }, " †") : null;
  return h("td", { class: i === c.best ? "num best" : "num", "data-kpi": c.name }, statText(stat, c.format), doubt, best);
}

function renderTable(results, columns, colors) {
  const table = $("results-table");
  const pooled = results.some((r) => Array.isArray(r.run_ids));
  const runs = (ids) => (ids ?? []).map((id) => `#${id}`).join(", ");
  table.querySelector("thead").replaceChildren(
    h("tr", {}, h("th", { scope: "col" }, t("results.scenario")), h("th", { scope: "col" }, t("results.n")), pooled ? h("th", { scope: "col" }, t("results.pools")) : null, ...columns.map((c) => h("th", { scope: "col", "data-kpi": c.name }, kpiLabel(c.name)))),
  );
  table.querySelector("tbody").replaceChildren(
    ...results.map((r, i) =>
      h(
        "tr",
        { "data-scenario-id": r.scenario_id },
        h("th", { scope: "row" }, swatch(colors[i]), r.scenario_name),
        h("td", { class: "num" }, count(r.replications)),
        pooled ? h("td", { class: "pools" }, runs(r.run_ids), r.excluded_run_ids?.length ? h("small", { class: "muted excluded" }, ` ${t("results.excluded", { runs: runs(r.excluded_run_ids) })}`) : null) : null,
        ...columns.map((c) => statCell(c, i)),
      ),
    ),
  );
  const doubtful = columns.some((c) => c.stats.some((s) => s?.doubtful));
  $("results-doubt").hidden = !doubtful;
  setText($("results-doubt"), doubtful ? `† ${t("results.doubtful")}` : "");
}

// -- distributions, the manifest and the run's own controls ---------------------------------

function renderDistribution(run, results, columns) {
  const box = $("distribution");
  box.hidden = !run || !TERMINAL.has(run.status) || run.done === 0;
  if (box.hidden || !box.open) return;
  const select = $("distribution-kpi");
  const names = columns.map((c) => c.name);
  if (select.dataset.signature !== names.join("|") + t("title")) {
    const keep = select.value;
    select.replaceChildren(...columns.map((c) => h("option", { value: c.name }, kpiLabel(c.name))));
    select.dataset.signature = names.join("|") + t("title");
    select.value = names.includes(keep) ? keep : names[0];
  }
  const chart = $("distribution-chart");
  if (run.done > MAX_DISTRIBUTION_ROWS) {
    chart.replaceChildren(h("p", { class: "muted" }, t("distribution.tooMany", { n: count(MAX_DISTRIBUTION_ROWS) })));
    return;
  }
  const answer = cached(`rows:${runKey(run)}`, `/api/simulations/${run.run_id}/results`);
  if (!answer.data) {
    chart.replaceChildren(h("p", { class: "muted" }, answer.error ? problemText(answer.error) : t("decision.asking")));
    return;
  }
  const kpi = select.value;
  const col = columns.find((c) => c.name === kpi);
  const groups = results.map((r, i) => ({
    label: r.scenario_name,
    color: ctx.colors[i],
    values: answer.data.filter((row) => row.scenario_id === r.scenario_id).map((row) => row[kpi] ?? row.metrics?.[kpi]).filter((v) => typeof v === "number"),
  }));
  const title = t("distribution.caption", { kpi: kpiLabel(kpi) });
  chart.replaceChildren(boxPlot({ groups, format: col?.format ?? ((v) => String(v)), title }));
}

function renderManifest(run) {
  const box = $("manifest");
  box.hidden = !run;
  if (!run || !box.open) return;
  const answer = cached(`run:${runKey(run)}`, `/api/simulations/${run.run_id}`);
  const body = $("manifest-body");
  if (!answer.data) {
    body.replaceChildren(h("p", { class: "muted" }, answer.error ? problemText(answer.error) : t("decision.asking")));
    return;
  }
  const m = answer.data.manifest ?? {};
  const rows = [
    ["manifest.seed", String(m.seed)],
    ["manifest.scheme", m.seed_scheme],
    ["manifest.models", (m.models ?? []).map((x) => `${x.name} ${x.version}`).join(", ")],
    ["manifest.environment", Object.entries(m.environment ?? {}).map(([k, v]) => `${k} ${v}`).join(", ")],
    ["manifest.recompute", m.recompute],
  ];
  const blob = new Blob([JSON.stringify(m, null, 2)], { type: "application/json" });
  body.replaceChildren(
    h("dl", {}, ...rows.filter(([, v]) => v).flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, h("code", {}, v))])),
    h("a", { href: URL.createObjectURL(blob), download: `run-${run.run_id}-manifest.json` }, t("manifest.download", { id: run.run_id })),
  );
}

function renderRunTools(run) {
  const tools = $("run-tools");
  tools.hidden = !run || !TERMINAL.has(run.status) || state.offline;
  if (tools.hidden) return;
  setText($("extend-label"), t("tools.extendLabel", { id: run.run_id }));
  $("extend-form").dataset.runId = run.run_id;
}

/** Redraw everything under the results heading for one result set. */
export function renderResultsBody(args) {
  ctx = args;
  const { run, results, colors } = args;
  const directions = kpiDirections();
  const present = [...directions.keys()].filter((k) => results.some((r) => kpiStat(r, k)));
  const selected = selections(run, results, present);
  const columns = kpiColumns(results, bestIdsOf(selected));
  renderDecision(run, results);
  renderBest(run, results, columns, selected);
  renderConstraint(results, columns);
  renderCharts(results, columns, colors);
  renderScatter(results, columns, colors);
  renderTable(results, columns, colors);
  renderDistribution(run, results, columns);
  renderManifest(run);
  renderRunTools(run);
}

export function setUpResultControls() {
  for (const id of ["constraint-objective", "constraint-kpi", "constraint-op", "constraint-value", "compare-baseline", "distribution-kpi"]) {
    $(id).addEventListener("change", () => ctx?.redraw());
  }
  $("constraint-value").addEventListener("input", () => ctx?.redraw());
  for (const id of ["distribution", "manifest"]) $(id).addEventListener("toggle", () => ctx?.redraw());
  $("extend-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("extend-by");
    const k = Number(input.value);
    if (!Number.isInteger(k) || k < 1) {
      input.setAttribute("aria-invalid", "true");
      setText($("err-extend-by"), t("err.min", { n: 1 }));
      return;
    }
    input.removeAttribute("aria-invalid");
    setText($("err-extend-by"), "");
    await ctx.runAction(Number(event.currentTarget.dataset.runId), "extend", { replications: k });
  });
}
