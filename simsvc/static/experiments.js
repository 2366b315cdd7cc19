// Experiments over a parameter space: a sweep as a KPI against its factor (with interval
// bands) or as a heat map over two factors; an optimization's progress, its points with
// their feasibility, the Pareto front and the recommendation with its statement.

import { ApiError, api } from "./api.js";
import { PALETTE, heatMap, lineBandChart, scatterChart } from "./charts.js";
import { $, h, setText } from "./dom.js";
import { problemText } from "./errors.js";
import { count, formatterFor, isShare, kpiLabel, statText, tickFormatter } from "./format.js";
import { has, t } from "./i18n.js";
import { ACTIVE, state } from "./state.js";

const MAX_ROWS_SHOWN = 200;
const MAX_HEAT_LEVELS = 30;
const FEASIBLE_COLORS = { true: PALETTE[2], false: PALETTE[3], null: PALETTE[0] };

let detail = { key: null, data: null, error: null, loading: false };
let again = false;

function paramName(k) {
  return has(`param.${k}`) ? t(`param.${k}`) : k;
}

function viewedId() {
  const ids = [...state.experiments.keys()].sort((a, b) => b - a);
  if (state.experimentView === "latest") return ids[0] ?? null;
  return state.experimentView;
}

/** Fetch the viewed experiment when it changed; one request at a time, then redraw. */
async function refresh(id) {
  const summary = state.experiments.get(id);
  const key = `${id}:${summary?.status}:${summary?.replications_used}`;
  if (detail.key === key && (detail.data || detail.error || detail.loading)) return;
  if (detail.loading) {
    again = true;
    return;
  }
  detail = { key, data: detail.key?.startsWith(`${id}:`) ? detail.data : null, error: null, loading: true };
  try {
    detail.data = await api("GET", `/api/experiments/${id}`);
  } catch (err) {
    detail.error = err;
  }
  detail.loading = false;
  if (again) {
    again = false;
    detail.key = null;
  }
  renderExperiments();
}

function renderOptions() {
  const select = $("experiment-view");
  const ids = [...state.experiments.keys()].sort((a, b) => b - a);
  const options = [["latest", t("exp.latest")], ...ids.map((id) => [String(id), expTitle(state.experiments.get(id))])];
  const signature = options.map((o) => o.join("=")).join("|");
  if (select.dataset.signature !== signature) {
    select.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
    select.dataset.signature = signature;
  }
  select.value = String(state.experimentView);
}

function expTitle(e) {
  return t("exp.title", { id: e.experiment_id, kind: t(`exp.kind.${e.kind}`, {}, e.kind), status: t(`status.${e.status}`, {}, e.status) });
}

export function renderExperiments() {
  const section = $("experiments");
  section.hidden = !state.experimentsAvailable || state.experiments.size === 0;
  $("nav-experiments").hidden = section.hidden;
  if (section.hidden) return;
  renderOptions();
  const id = viewedId();
  const summary = state.experiments.get(id);
  section.dataset.experimentId = id ?? "";
  section.dataset.status = summary?.status ?? "";
  renderHead(summary);
  if (id == null) return;
  refresh(id);
  const data = detail.key?.startsWith(`${id}:`) ? detail.data : null;
  setText($("experiment-error"), detail.error ? problemText(detail.error) : "");
  if (!data) return;
  section.dataset.points = String(data.points.length);
  if (data.kind === "optimize") renderOptimize(data);
  else renderSweep(data);
  renderPoints(data);
}

function renderHead(summary) {
  if (!summary) return;
  const stopped = summary.stopped_because ? ` · ${t(`exp.stopped.${summary.stopped_because}`, {}, summary.stopped_because)}` : "";
  setText($("experiment-caption"), `${expTitle(summary)} · ${t("exp.used", { n: count(summary.replications_used ?? 0) })}${stopped}`);
  const cancel = $("experiment-cancel");
  cancel.hidden = !ACTIVE.has(summary.status) || state.offline;
  setText(cancel, t("exp.cancel", { id: summary.experiment_id }));
  const resume = $("experiment-resume");
  resume.hidden = !["interrupted", "failed", "cancelled"].includes(summary.status) || state.offline;
  setText(resume, t("exp.resume", { id: summary.experiment_id }));
}

function kpiNames(data) {
  const first = data.points.find((p) => p.means && Object.keys(p.means).length);
  return first ? Object.keys(first.means) : [];
}

function renderKpiOptions(data, preferred) {
  const select = $("experiment-kpi");
  const names = kpiNames(data);
  const signature = names.join("|") + t("title");
  if (select.dataset.signature !== signature) {
    const keep = select.value;
    select.replaceChildren(...names.map((k) => h("option", { value: k }, kpiLabel(k))));
    select.dataset.signature = signature;
    select.value = names.includes(keep) ? keep : names.includes(preferred) ? preferred : names[0];
  }
  return select.value;
}

function pointStat(p, kpi) {
  const mean = p.means?.[kpi];
  return mean == null ? null : { mean, half: p.ci95?.[kpi] ?? null };
}

// -- a sweep ---------------------------------------------------------------------------

function renderSweep(data) {
  setText($("experiment-legend"), "");
  $("experiment-recommendation").hidden = true;
  $("experiment-progress").hidden = true;
  $("experiment-kpi-row").hidden = false;
  const kpi = renderKpiOptions(data, "total_labor_costs");
  const varied = data.varied ?? [];
  const format = formatterFor(kpi, data.points.map((p) => p.means?.[kpi] ?? 0));
  const chart = $("experiment-chart");
  const caption = $("experiment-figcaption");
  if (varied.length === 1) {
    const [factor] = varied;
    const points = data.points
      .map((p) => ({ x: p.params[factor], ...pointStat(p, kpi) }))
      .filter((p) => p.mean != null)
      .sort((a, b) => a.x - b.x);
    const title = t("exp.sweep1", { kpi: kpiLabel(kpi), factor: paramName(factor) });
    setText(caption, title);
    chart.replaceChildren(lineBandChart({ points, formatX: (v) => count(v), formatY: format, title, xLabel: paramName(factor), yRange: isShare(kpi) ? [0, 1] : null }));
    return;
  }
  if (varied.length === 2) {
    const [fx, fy] = varied;
    const xs = [...new Set(data.points.map((p) => p.params[fx]))].sort((a, b) => a - b);
    const ys = [...new Set(data.points.map((p) => p.params[fy]))].sort((a, b) => a - b);
    if (xs.length <= MAX_HEAT_LEVELS && ys.length <= MAX_HEAT_LEVELS) {
      const byPair = new Map(data.points.map((p) => [`${p.params[fx]}|${p.params[fy]}`, pointStat(p, kpi)]));
      const title = t("exp.heat", { kpi: kpiLabel(kpi), x: paramName(fx), y: paramName(fy) });
      setText(caption, title);
      chart.replaceChildren(heatMap({ xs, ys, cell: (a, b) => byPair.get(`${a}|${b}`), format, title, xLabel: paramName(fx), yLabel: paramName(fy) }));
      return;
    }
  }
  setText(caption, t("exp.tableOnly"));
  chart.replaceChildren();
}

// -- an optimization ---------------------------------------------------------------------

function renderOptimize(data) {
  const request = data.request ?? {};
  const objective = request.objective?.kpi ?? "total_labor_costs";
  const constraint = request.constraints?.[0];
  $("experiment-kpi-row").hidden = true;
  renderProgress(data, request);
  renderRecommendation(data, objective, request.constraints ?? []);
  const other = constraint?.kpi ?? kpiNames(data).find((k) => k !== objective);
  const front = new Set(data.pareto?.[other] ?? []);
  const recommended = data.recommendation?.point_id;
  const items = data.points
    .filter((p) => p.means?.[objective] != null && p.means?.[other] != null)
    .map((p) => ({
      id: p.point_id,
      label: `${p.point_id === recommended ? "★ " : ""}#${p.point_id}`,
      quiet: p.point_id !== recommended,
      x: p.means[objective],
      xHalf: p.ci95?.[objective] ?? null,
      y: p.means[other],
      yHalf: p.ci95?.[other] ?? null,
      color: FEASIBLE_COLORS[String(p.feasible)],
      shape: p.feasible === false ? "cross" : p.feasible === true ? "dot" : "hollow",
      pareto: front.has(p.point_id),
    }));
  const title = t("exp.points", { x: kpiLabel(objective), y: kpiLabel(other) });
  setText($("experiment-figcaption"), title);
  $("experiment-chart").replaceChildren(
    scatterChart({ items, formatX: tickFormatter(objective), formatY: tickFormatter(other), title, xLabel: kpiLabel(objective), yLabel: kpiLabel(other), yRange: isShare(other) ? [0, 1] : null, yRule: constraint?.value ?? null }),
  );
  setText($("experiment-legend"), t("exp.legend"));
}

function renderProgress(data, request) {
  const box = $("experiment-progress");
  box.hidden = false;
  const cap = request.max_replications ?? data.replications_used;
  const bar = box.querySelector("progress");
  bar.hidden = !ACTIVE.has(data.status);
  bar.max = cap || 1;
  bar.value = Math.min(data.replications_used, cap);
  const best = state.experimentBest.get(data.experiment_id);
  const parts = [t("exp.budget", { used: count(data.replications_used), cap: count(cap) })];
  if (best && ACTIVE.has(data.status)) parts.push(t("exp.best", { id: best.point_id, params: paramsText(best.params, data.varied) }));
  setText(box.querySelector(".exp-progress-text"), parts.join(" · "));
}

function paramsText(params, varied) {
  return (varied ?? Object.keys(params ?? {})).map((k) => `${paramName(k)} ${params?.[k]}`).join(", ");
}

function renderRecommendation(data, objective, constraints) {
  const box = $("experiment-recommendation");
  const rec = data.recommendation;
  box.hidden = !rec;
  if (!rec) return;
  const lines = [objective, ...constraints.map((c) => c.kpi)].filter((k, i, all) => all.indexOf(k) === i && rec.means?.[k] != null);
  box.replaceChildren(
    h("h3", {}, rec.point_id == null ? t("exp.noRecommendation") : t("exp.recommended", { id: rec.point_id, params: paramsText(rec.params, data.varied) })),
    rec.point_id == null ? null : h("ul", {}, ...lines.map((k) => h("li", {}, `${kpiLabel(k)}: ${statText({ mean: rec.means[k], half: rec.ci95?.[k] }, formatterFor(k, [rec.means[k]]))}`))),
    h("p", { class: "statement" }, rec.statement),
  );
}

// -- the points table ---------------------------------------------------------------------

function renderPoints(data) {
  const varied = data.varied ?? [];
  const names = kpiNames(data);
  const formats = new Map(names.map((k) => [k, formatterFor(k, data.points.map((p) => p.means?.[k] ?? 0))]));
  const table = $("experiment-table");
  const optimize = data.kind === "optimize";
  table.querySelector("thead").replaceChildren(
    h("tr", {}, h("th", { scope: "col" }, "#"), ...varied.map((k) => h("th", { scope: "col" }, paramName(k))), h("th", { scope: "col" }, t("results.n")), ...names.map((k) => h("th", { scope: "col" }, kpiLabel(k))), optimize ? h("th", { scope: "col" }, t("exp.feasible")) : null),
  );
  const shown = data.points.slice(0, MAX_ROWS_SHOWN);
  table.querySelector("tbody").replaceChildren(
    ...shown.map((p) =>
      h(
        "tr",
        { "data-point-id": p.point_id, "data-feasible": String(p.feasible) },
        h("th", { scope: "row" }, `${p.point_id === data.recommendation?.point_id ? "★ " : ""}${p.point_id}`),
        ...varied.map((k) => h("td", { class: "num" }, String(p.params[k]))),
        h("td", { class: "num" }, count(p.replications)),
        ...names.map((k) => h("td", { class: "num" }, statText(pointStat(p, k), formats.get(k)))),
        optimize ? h("td", {}, t(`exp.feasible.${p.feasible}`)) : null,
      ),
    ),
  );
  setText($("experiment-more"), data.points.length > shown.length ? t("exp.more", { shown: count(shown.length), n: count(data.points.length) }) : "");
}

async function act(action) {
  const id = viewedId();
  setText($("experiment-error"), "");
  try {
    await api("POST", `/api/experiments/${id}/${action}`);
  } catch (err) {
    // 409: it ended meanwhile; the event that says so is on its way.
    if (!(err instanceof ApiError && err.status === 409)) setText($("experiment-error"), problemText(err));
  }
}

export function setUpExperimentControls() {
  $("experiment-view").addEventListener("change", (e) => {
    const value = e.currentTarget.value;
    state.experimentView = value === "latest" ? value : Number(value);
    renderExperiments();
  });
  $("experiment-kpi").addEventListener("change", renderExperiments);
  $("experiment-cancel").addEventListener("click", () => act("cancel"));
  $("experiment-resume").addEventListener("click", () => act("resume"));
}

/** The events of /ws/events about experiments. */
export const experimentHandlers = {
  "experiment.started"(e) {
    state.experiments.set(e.experiment_id, e.experiment);
    renderExperiments();
  },
  "experiment.progress"(e) {
    const known = state.experiments.get(e.experiment_id);
    if (known) state.experiments.set(e.experiment_id, { ...known, status: "running", replications_used: e.replications_used });
    if (e.best) state.experimentBest.set(e.experiment_id, e.best);
    renderExperiments();
  },
  "experiment.completed": ended,
  "experiment.failed": ended,
  "experiment.cancelled": ended,
};

function ended(e) {
  state.experiments.set(e.experiment_id, e.experiment);
  renderExperiments();
}

export function takeSnapshot(hello) {
  state.experimentsAvailable = Array.isArray(hello.experiments);
  state.experiments = new Map((hello.experiments ?? []).map((x) => [x.experiment_id, x]));
  detail = { key: null, data: null, error: null, loading: false };
}
