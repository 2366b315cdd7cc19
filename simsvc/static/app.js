// The dashboard: state kept from /ws/events, forms that talk to the HTTP API, and
// renderers that redraw from state. No framework; every update comes from an event.

import { ApiError, api } from "./api.js";
import { noteFailure, renderSignIn, startConnection } from "./connection.js";
import { PALETTE } from "./charts.js";
import { $, h, numberValue, setText, syncKeyed } from "./dom.js";
import { clearErrors, focusFirstInvalid, markInvalid, problemText, showErrors } from "./errors.js";
import { CURRENCIES, count, currency, duration, kpiLabel, setCurrency } from "./format.js";
import { LANGUAGES, applyStatic, language, setLanguage, t } from "./i18n.js";
import { labelScenarioForm, renderModelOptions, renderParamFields, renderRunScenarios, renderScenarios, resetScenarioForm, submitScenario } from "./scenarios.js";
import { experimentHandlers, renderExperiments, setUpExperimentControls, takeSnapshot } from "./experiments.js";
import { renderResultsBody, resetDecisions, setUpResultControls } from "./results.js";
import { ACTIVE, TERMINAL, kpiDirections, newsMark, newsSince, noteNews, scenarioName, state, viewedRunId } from "./state.js";

const ENDED_RUNS_SHOWN = 2;
const RATE_WINDOW_MS = 10000;


// -- starting a run -----------------------------------------------------------------------

function renderPrecisionTargets() {
  const box = $("precision-targets");
  const kept = new Map([...box.querySelectorAll("[data-kpi]")].map((row) => [row.dataset.kpi, [row.querySelector("select").value, row.querySelector("input").value]]));
  box.replaceChildren(
    ...[...kpiDirections().keys()].map((kpi) => {
      const field = `precision.targets.${kpi}`;
      const kind = h(
        "select",
        { id: `target-kind-${kpi}`, "aria-label": t("run.targetKind", { kpi: kpiLabel(kpi) }) },
        h("option", { value: "relative_half_width" }, t("run.kind.relative_half_width")),
        h("option", { value: "half_width" }, t("run.kind.half_width")),
      );
      const value = h("input", { id: `target-${kpi}`, type: "number", min: "0", step: "any", "data-field": field, "data-error": `err-run-${field}`, "aria-describedby": `err-run-${field}` });
      const [oldKind, oldValue] = kept.get(kpi) ?? ["relative_half_width", ""];
      kind.value = oldKind;
      value.value = oldValue;
      return h(
        "div",
        { class: "target", "data-kpi": kpi },
        h("label", { for: `target-${kpi}` }, t("run.target", { kpi: kpiLabel(kpi) })),
        h("div", { class: "target-inputs" }, kind, value),
        h("p", { class: "field-error", id: `err-run-${field}` }),
      );
    }),
  );
}

/** The optional precision block; undefined unless the user filled in any of it. */
function readPrecision(unreadable) {
  const targets = {};
  for (const row of $("precision-targets").querySelectorAll("[data-kpi]")) {
    const input = row.querySelector("input");
    const value = numberValue(input);
    if (Number.isNaN(value)) unreadable.push(input);
    else if (value !== undefined) targets[row.dataset.kpi] = { [row.querySelector("select").value]: value };
  }
  const precision = { targets };
  for (const [id, key] of [["run-min-reps", "min_replications"], ["run-max-reps", "max_replications"]]) {
    const value = numberValue($(id));
    if (Number.isNaN(value)) unreadable.push($(id));
    else if (value !== undefined) precision[key] = value;
  }
  const filled = Object.keys(targets).length > 0 || "min_replications" in precision || "max_replications" in precision;
  return filled ? precision : undefined;
}

function readRunForm() {
  const unreadable = [];
  const body = { scenario_ids: [...$("run-scenarios").querySelectorAll("input:checked")].map((i) => Number(i.value)) };
  for (const [id, key] of [["run-replications", "replications"], ["run-seed", "seed"], ["run-pace", "pace_s"]]) {
    const value = numberValue($(id));
    if (Number.isNaN(value)) unreadable.push($(id));
    else if (value !== undefined) body[key] = value;
  }
  const precision = readPrecision(unreadable);
  if (precision) body.precision = precision;
  for (const input of unreadable) markInvalid(input, t("err.number"));
  if (!body.scenario_ids.length) markInvalid($("run-scenarios").closest("fieldset"), t("run.noneSelected"));
  return unreadable.length || !body.scenario_ids.length ? null : body;
}

async function submitRun(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const body = readRunForm();
  if (!body) {
    focusFirstInvalid(form);
    return;
  }
  try {
    const mark = newsMark();
    const answer = await api("POST", "/api/simulations", body);
    adoptRun(answer.run, mark);
    $("run-form-ok").textContent = t("run.started", { id: answer.run_id });
  } catch (err) {
    showErrors(form, $("run-form-error"), err);
    noteFailure(err);
  }
}

/**
 * A run this tab started, extended or resumed: watch it and show its results. A small run
 * can end before the answer arrives; the events that said so are newer than the answer.
 */
function adoptRun(run, mark) {
  if (!newsSince(run.run_id, mark)) updateRun(run);
  state.watched.add(run.run_id);
  state.followed = run.run_id;
  if (state.view !== "all") state.view = "latest";
  renderRuns();
  renderResults();
  reconcileRun(run.run_id);
}

const reconciling = new Map(); // run_id -> whether to ask once more when the answer is in

/**
 * Bring one run to its stored state over HTTP, so that no missed event can leave it stale.
 * An event that arrives meanwhile is at least as new as the answer, which then yields.
 */
async function reconcileRun(runId) {
  if (reconciling.has(runId)) {
    reconciling.set(runId, true);
    return;
  }
  reconciling.set(runId, false);
  const mark = newsMark();
  const version = resultVersions.get(runId);
  try {
    const answer = await api("GET", `/api/simulations/${runId}`);
    if (newsSince(runId, mark) && state.runs.has(runId)) return;
    const { manifest: _manifest, results, waiting_for_workers: waiting, waiting_since: since, ...run } = answer;
    state.runs.set(runId, { ...run, waiting: waiting ? since ?? true : null });
    if (resultVersions.get(runId) === version) storeResults(runId, results);
    if (ACTIVE.has(run.status)) state.watched.add(runId);
    renderRuns();
    renderResults();
  } catch (err) {
    noteFailure(err);
  } finally {
    const again = reconciling.get(runId);
    reconciling.delete(runId);
    if (again) reconcileRun(runId);
  }
}

// -- runs: the sticky run bar and the history -------------------------------------------------

function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, t(`status.${status}`, {}, status));
}

/** Replications per second over the last few seconds, from the progress this tab saw. */
function noteProgress(run) {
  const samples = state.samples.get(run.run_id) ?? [];
  const now = performance.now();
  samples.push({ at: now, done: run.done });
  while (samples.length > 2 && now - samples[0].at > RATE_WINDOW_MS) samples.shift();
  state.samples.set(run.run_id, samples);
  const meta = state.batches.get(run.run_id);
  if (meta) meta.totals.add(run.total);
}

function throughput(runId) {
  const samples = state.samples.get(runId) ?? [];
  if (samples.length < 2) return null;
  const first = samples[0];
  const last = samples.at(-1);
  const seconds = (last.at - first.at) / 1000;
  return seconds > 0.2 ? (last.done - first.done) / seconds : null;
}

/** For a precision run: per target KPI, the widest current half-width against its target. */
function precisionStatus(run) {
  const targets = run.precision?.targets ?? {};
  const results = state.runResults.get(run.run_id) ?? [];
  return Object.entries(targets).map(([kpi, target]) => {
    let worst = null;
    for (const entry of results) {
      const summary = entry.metrics?.[kpi];
      if (!summary || summary.ci95 == null) continue;
      const limits = [target.half_width, target.relative_half_width != null ? target.relative_half_width * Math.abs(summary.mean) : undefined].filter((v) => v != null);
      const required = Math.min(...limits);
      if (!worst || summary.ci95 / required > worst.half / worst.required) worst = { half: summary.ci95, required, mean: summary.mean };
    }
    return { kpi, worst };
  });
}

function createLiveItem(run) {
  const id = run.run_id;
  const cancel = h("button", { type: "button", class: "danger cancel", onclick: () => cancelRun(id) }, t("live.cancel", { id }));
  const resume = h("button", { type: "button", class: "secondary resume", onclick: () => resumeRun(id) }, t("live.resume", { id }));
  return h(
    "li",
    { "data-run-id": id },
    h("div", { class: "live-head", tabindex: "-1" }, h("strong", {}, `#${id}`), " ", h("span", { class: "badge" }), " ", h("span", { class: "muted names" })),
    h("label", { for: `progress-${id}`, class: "visually-hidden" }, t("live.progress", { id })),
    h("progress", { id: `progress-${id}` }),
    h("div", { class: "live-foot" }, h("span", { class: "count" }), h("span", { class: "pct" }), h("span", { class: "rate muted" }), h("span", { class: "eta muted" }), h("span", { class: "precision muted" }), h("span", { class: "waiting" }), cancel, resume),
  );
}

function updateLiveItem(node, run) {
  const active = ACTIVE.has(run.status);
  node.dataset.status = run.status;
  const badge = node.querySelector(".badge");
  if (badge.dataset.status !== run.status) {
    badge.dataset.status = run.status;
    badge.replaceChildren(statusBadge(run.status));
  }
  setText(node.querySelector(".names"), run.scenario_ids.map((sid) => scenarioName(sid, run)).join(", "));
  const bar = node.querySelector("progress");
  const precise = Boolean(run.precision) && active;
  const cap = (run.precision?.max_replications ?? run.replications) * run.scenario_ids.length;
  bar.max = precise ? cap || 1 : run.total || 1;
  bar.value = run.done;
  setText(node.querySelector(".count"), t("live.count", { done: count(run.done), total: count(precise ? cap : run.total) }));
  setText(node.querySelector(".pct"), run.total ? `${Math.floor((run.done * 100) / (precise ? cap : run.total))}%` : "0%");
  const rate = active ? throughput(run.run_id) : null;
  setText(node.querySelector(".rate"), rate ? t("live.rate", { rate: count(Math.round(rate)) }) : "");
  setText(node.querySelector(".eta"), rate && !precise ? t("live.eta", { eta: duration((run.total - run.done) / rate) }) : "");
  setText(node.querySelector(".precision"), precise ? precisionText(run) : "");
  setText(node.querySelector(".waiting"), active && run.waiting ? waitingText(run.waiting) : "");
  syncButton(node, ".cancel", active && !state.offline);
  syncButton(node, ".resume", run.status === "interrupted" && !state.offline);
}

/** A run on a cluster with no worker: said, with the time it started waiting. */
function waitingText(since) {
  if (since === true) return t("live.waiting");
  return t("live.waitingSince", { since: new Intl.DateTimeFormat(language(), { timeStyle: "medium" }).format(new Date(since)) });
}

function precisionText(run) {
  const meta = state.batches.get(run.run_id);
  const parts = [];
  if (meta?.fromStart) parts.push(t("live.batch", { n: meta.totals.size }));
  parts.push(t("live.perScenario", { n: count(run.replications), max: count(run.precision.max_replications ?? 5000) }));
  for (const { kpi, worst } of precisionStatus(run)) {
    if (!worst) continue;
    parts.push(t("live.halfWidth", { kpi: kpiLabel(kpi), now: worst.half.toPrecision(3), target: worst.required.toPrecision(3) }));
  }
  return parts.join(" · ");
}

/** Show or hide a button in place; if it had the focus, hand the focus to the item. */
function syncButton(node, selector, shown) {
  const button = node.querySelector(selector);
  if (button.hidden === !shown) return;
  const hadFocus = document.activeElement === button;
  button.hidden = !shown;
  if (hadFocus && !shown) node.querySelector(".live-head").focus();
}

function renderLive() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  const active = runs.filter((r) => ACTIVE.has(r.status));
  const ended = runs.filter((r) => !ACTIVE.has(r.status) && state.watched.has(r.run_id)).slice(0, ENDED_RUNS_SHOWN);
  const shown = [...active, ...ended].sort((a, b) => b.run_id - a.run_id);
  $("live-empty").hidden = shown.length > 0;
  $("live").classList.toggle("running", active.length > 0);
  syncKeyed($("live-list"), shown, (r) => r.run_id, createLiveItem, updateLiveItem);
}

async function cancelRun(runId) {
  try {
    const mark = newsMark();
    const run = await api("POST", `/api/simulations/${runId}/cancel`);
    if (!newsSince(runId, mark)) updateRun(run);
    state.followed = runId;
    renderRuns();
  } catch (err) {
    // 409: it ended on its own meanwhile; the event that says so is on its way.
    if (!(err instanceof ApiError && err.status === 409)) $("live-error").textContent = problemText(err);
    noteFailure(err);
  }
}

async function resumeRun(runId) {
  await runAction(runId, "resume", undefined);
}

/** Extend or resume a run, then follow it; errors are said in the run bar. */
async function runAction(runId, action, body) {
  $("live-error").textContent = "";
  try {
    const mark = newsMark();
    adoptRun(await api("POST", `/api/simulations/${runId}/${action}`, body), mark);
    state.view = runId;
    renderResults();
    return true;
  } catch (err) {
    $("live-error").textContent = problemText(err);
    noteFailure(err);
    return false;
  }
}

function formatTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(language(), { dateStyle: "short", timeStyle: "medium" }).format(new Date(iso));
}

function createHistoryRow(run) {
  const id = run.run_id;
  const csv = `/api/simulations/${id}/results?format=csv`;
  return h(
    "tr",
    { "data-run-id": id },
    h("th", { scope: "row" }, `#${id}`),
    h("td", { class: "status-cell" }),
    h("td", {}, h("time", { datetime: run.created_at }, formatTime(run.created_at))),
    h("td", { class: "names" }),
    h("td", { class: "num reps" }),
    h("td", { class: "num done" }),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "data-view": id, "aria-label": t("history.viewLabel", { id }), onclick: () => showRun(id) }, t("history.view")),
      h("button", { type: "button", class: "secondary resume", "aria-label": t("live.resume", { id }), onclick: () => resumeRun(id) }, t("history.resume")),
      h("a", { href: csv, download: `run-${id}-results.csv`, "aria-label": t("history.csvLabel", { id }) }, t("history.csv")),
    ),
  );
}

function updateHistoryRow(row, run) {
  const cell = row.querySelector(".status-cell");
  const signature = `${run.status}|${run.stopped_because ?? ""}`;
  if (cell.dataset.signature !== signature) {
    cell.dataset.signature = signature;
    const stopped = run.stopped_because ? h("small", { class: "muted stopped" }, ` ${t(`stopped.${run.stopped_because}`, {}, run.stopped_because)}`) : null;
    cell.replaceChildren(statusBadge(run.status), stopped ?? "");
  }
  setText(row.querySelector(".names"), run.scenario_ids.map((sid) => scenarioName(sid, run)).join(", "));
  setText(row.querySelector(".reps"), count(run.replications));
  setText(row.querySelector(".done"), `${count(run.done)} / ${count(run.total)}`);
  const resumable = ["interrupted", "failed", "cancelled"].includes(run.status) && run.done < run.total;
  row.querySelector(".resume").hidden = !resumable || state.offline;
}

function renderHistory() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  $("history-empty").hidden = runs.length > 0;
  syncKeyed($("history-table").querySelector("tbody"), runs, (r) => r.run_id, createHistoryRow, updateHistoryRow);
}

function showRun(runId) {
  state.view = runId;
  renderResults();
  $("results").scrollIntoView({ block: "start" });
  $("results-title").focus();
}

function renderRuns() {
  renderLive();
  renderHistory();
  renderViewOptions();
}

/** Take a newer copy of a run, never letting a late progress event move it backwards. */
function updateRun(run) {
  const known = state.runs.get(run.run_id);
  if (known && TERMINAL.has(known.status) && !TERMINAL.has(run.status) && run.done <= known.done && run.status !== "queued") return;
  state.runs.set(run.run_id, run);
}

// -- results ------------------------------------------------------------------------------

function renderViewOptions() {
  const select = $("results-view");
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  const options = [
    ["latest", t("results.latest")],
    ["all", t("results.all")],
    ...runs.map((r) => [String(r.run_id), t("results.run", { id: r.run_id, status: t(`status.${r.status}`, {}, r.status) })]),
  ];
  const signature = options.map((o) => o.join("=")).join("|");
  if (select.dataset.signature !== signature) {
    select.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
    select.dataset.signature = signature;
  }
  select.value = String(state.view);
}

const pendingFetches = new Set();
const resultVersions = new Map(); // bumped by every event that brings a result set

function storeResults(runId, results) {
  const key = runId ?? "all";
  resultVersions.set(key, (resultVersions.get(key) ?? 0) + 1);
  if (runId == null) state.allResults = results;
  else state.runResults.set(runId, results);
}

/** Fetch a result set the events have not brought yet, then redraw. */
async function fetchResults(runId) {
  const key = runId ?? "all";
  if (pendingFetches.has(key)) return;
  pendingFetches.add(key);
  const version = resultVersions.get(key);
  try {
    const results = await api("GET", runId == null ? "/api/results" : `/api/results?run_id=${runId}`);
    // An event that arrived meanwhile is newer than this answer.
    if (resultVersions.get(key) !== version) return;
    storeResults(runId, results);
    renderResults();
  } catch (err) {
    $("results-caption").textContent = problemText(err);
    noteFailure(err);
  } finally {
    pendingFetches.delete(key);
  }
}

function viewedResults() {
  if (state.view === "all") return state.allResults;
  const runId = viewedRunId();
  if (runId == null) return [];
  const results = state.runResults.get(runId);
  if (results === undefined) fetchResults(runId);
  return results ?? [];
}

function resultsCaption(runId) {
  if (runId == null) return state.view === "all" ? t("results.forAll") : "";
  const run = state.runs.get(runId);
  if (!run) return "";
  const caption = t("results.forRun", { id: runId, done: count(run.done), total: count(run.total), status: t(`status.${run.status}`, {}, run.status) });
  return run.stopped_because ? `${caption} (${t(`stopped.${run.stopped_because}`, {}, run.stopped_because)})` : caption;
}

function renderResults() {
  renderViewOptions();
  const runId = viewedRunId();
  const results = viewedResults();
  const section = $("results");
  $("results-caption").textContent = resultsCaption(runId);
  $("results-empty").hidden = results.length > 0;
  $("results-body").hidden = results.length === 0;
  const run = state.runs.get(runId);
  if (results.length) renderResultsBody({ run: runId == null ? null : run, results, colors: results.map((_, i) => PALETTE[i % PALETTE.length]), redraw: renderResults, runAction });
  section.dataset.runId = runId ?? "";
  section.dataset.done = run?.done ?? "";
  section.dataset.status = run?.status ?? "";
  // A mark per redraw lets anyone measure event-to-picture latency from the console.
  performance.mark("simsvc:results-rendered", { detail: { runId, done: run?.done ?? null, status: run?.status ?? null } });
}

// -- events ---------------------------------------------------------------------------------

const handlers = {
  hello(e) {
    state.models = new Map((e.models ?? []).map((m) => [m.name, m]));
    state.scenarios = new Map(e.scenarios.map((s) => [s.scenario_id, s]));
    state.runs = new Map(e.runs.map((r) => [r.run_id, r]));
    for (const run of e.runs) if (ACTIVE.has(run.status)) state.watched.add(run.run_id);
    storeResults(null, e.results);
    takeSnapshot(e);
    // Anything cached may predate a restart: refetch what is on screen.
    state.runResults.clear();
    resetDecisions();
    // Built once; a reconnect must not wipe what the user is typing.
    if (!$("scenario-model").options.length) resetScenarioForm();
    else renderModelOptions();
    renderPrecisionTargets();
    renderAll();
    // The snapshot holds the newest runs only: the run this tab follows may be older.
    if (state.followed != null) reconcileRun(state.followed);
  },
  "run.started"(e) {
    updateRun(e.run);
    if (!state.runResults.has(e.run_id)) storeResults(e.run_id, []);
    state.watched.add(e.run_id);
    state.batches.set(e.run_id, { totals: new Set(), fromStart: e.run.done === 0 });
    noteProgress(e.run);
    renderRuns();
    renderResults();
  },
  "run.progress"(e) {
    const run = state.runs.get(e.run_id);
    // Progress of a run known to have ended is stale, unless it stored more than the end
    // did: the run was resumed or extended, and the page may not have heard it restart.
    if (run && TERMINAL.has(run.status) && e.done <= run.done) return;
    if (run) {
      const replications = e.total / Math.max(run.scenario_ids.length, 1);
      const waiting = e.waiting_for_workers ? e.waiting_since ?? true : null;
      const updated = { ...run, status: "running", done: Math.max(run.done, e.done), total: e.total, replications: run.precision ? replications : run.replications, waiting };
      state.runs.set(e.run_id, updated);
      noteProgress(updated);
    } else {
      // Its start went unseen: ask for the run, so that its bar and status appear.
      reconcileRun(e.run_id);
    }
    storeResults(e.run_id, e.results);
    renderRuns();
    if (viewedRunId() === e.run_id) renderResults();
  },
  "run.completed": runEnded,
  "run.failed": runEnded,
  "run.cancelled": runEnded,
  "results.updated"(e) {
    if (Array.isArray(e.results)) storeResults(null, e.results);
    else fetchResults(null);
    if (state.view === "all") renderResults();
  },
  "scenario.changed"(e) {
    if (e.action === "deleted") state.scenarios.delete(e.scenario_id);
    else state.scenarios.set(e.scenario_id, e.scenario);
    renderScenarios();
    renderRunScenarios();
  },
  ...experimentHandlers,
};

function runEnded(e) {
  state.runs.set(e.run_id, e.run);
  storeResults(e.run_id, e.results);
  renderRuns();
  if (state.view === "all") fetchResults(null);
  else renderResults();
}

function renderAll() {
  applyStatic();
  labelScenarioForm();
  renderScenarios();
  renderRunScenarios();
  renderRuns();
  renderResults();
  renderExperiments();
  renderSignIn();
}

// -- start ----------------------------------------------------------------------------------

function setUpControls() {
  const lang = $("language");
  lang.replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, lang: code }, name)));
  lang.value = language();
  lang.addEventListener("change", () => {
    setLanguage(lang.value);
    renderParamFieldsKeepingValues();
    renderPrecisionTargets();
    renderCurrencyOptions();
    renderAll();
  });
  renderCurrencyOptions();
  $("currency").addEventListener("change", (e) => {
    setCurrency(e.currentTarget.value);
    renderResults();
  });
  $("scenario-form").addEventListener("submit", submitScenario);
  $("scenario-model").addEventListener("change", () => renderParamFields($("scenario-model").value, null));
  $("scenario-cancel-edit").addEventListener("click", resetScenarioForm);
  $("run-form").addEventListener("submit", submitRun);
  $("results-view").addEventListener("change", (e) => {
    const value = e.currentTarget.value;
    state.view = value === "latest" || value === "all" ? value : Number(value);
    if (state.view === "all") fetchResults(null);
    renderResults();
  });
}

function renderCurrencyOptions() {
  const select = $("currency");
  select.replaceChildren(...CURRENCIES.map((code) => h("option", { value: code }, code ? code : t("currency.none"))));
  select.value = currency();
}

function renderParamFieldsKeepingValues() {
  const values = {};
  for (const input of $("param-fields").querySelectorAll("[data-field]")) {
    const name = input.dataset.field.slice("params.".length);
    if (input.type === "checkbox") values[name] = input.checked;
    else if (input.tagName === "SELECT") values[name] = JSON.parse(input.value);
    else if (input.value !== "") values[name] = input.value;
  }
  renderParamFields($("scenario-model").value, values);
}

setUpControls();
setUpResultControls();
setUpExperimentControls();
applyStatic();
startConnection(
  (event) => {
    noteNews(event.type === "hello" ? (event.runs ?? []).map((r) => r.run_id) : event.run_id != null ? [event.run_id] : []);
    handlers[event.type]?.(event);
  },
  () => {
    renderRuns();
    renderExperiments();
  },
);
