// The dashboard: state kept from /ws/events, forms that talk to the HTTP API, and
// renderers that redraw from state. No framework; every update comes from an event.

import { ApiError, api, setToken, socketUrl, token } from "./api.js";
import { PALETTE } from "./charts.js";
import { $, h, setText, syncKeyed } from "./dom.js";
import { clearErrors, focusFirstInvalid, markInvalid, problemText, showErrors } from "./errors.js";
import { CURRENCIES, count, currency, duration, kpiLabel, richText, setCurrency } from "./format.js";
import { LANGUAGES, applyStatic, has, language, setLanguage, t } from "./i18n.js";
import { experimentHandlers, renderExperiments, setUpExperimentControls, takeSnapshot } from "./experiments.js";
import { renderResultsBody, resetDecisions, setUpResultControls } from "./results.js";
import { ACTIVE, TERMINAL, kpiDirections, scenarioName, state, viewedRunId } from "./state.js";

const ENDED_RUNS_SHOWN = 2;
const FIRST_RETRY_MS = 300;
const BACKOFF_FACTOR = 1.7;
const MAX_BACKOFF_MS = 10000;
const RATE_WINDOW_MS = 10000;

/** A number input's value: undefined when blank, NaN when the browser could not parse it. */
function numberValue(input) {
  if (input.validity.badInput) return Number.NaN;
  return input.value.trim() === "" ? undefined : Number(input.value);
}

// -- scenarios ----------------------------------------------------------------------------

function paramName(k) {
  return has(`param.${k}`) ? t(`param.${k}`) : k;
}

function paramSummary(scenario) {
  const defaults = state.models.get(scenario.model)?.params?.properties ?? {};
  const changed = Object.entries(scenario.params).filter(([k, v]) => defaults[k]?.default !== v);
  if (!changed.length) return t("scenarios.defaults");
  return changed.map(([k, v]) => `${paramName(k)}: ${v}`).join(" · ");
}

function scenarioRow(s) {
  const label = (key) => `${t(key)}: ${s.scenario_name}`;
  return h(
    "tr",
    { "data-scenario-id": s.scenario_id },
    h("td", {}, String(s.scenario_id)),
    h("th", { scope: "row" }, s.scenario_name),
    h("td", {}, s.model),
    h("td", { class: "params", title: JSON.stringify(s.params) }, paramSummary(s)),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "aria-label": label("scenarios.edit"), onclick: () => editScenario(s.scenario_id) }, t("scenarios.edit")),
      h("button", { type: "button", class: "danger", "aria-label": label("scenarios.delete"), onclick: (e) => deleteScenario(s, e.currentTarget) }, t("scenarios.delete")),
      h("p", { class: "row-error", id: `delete-error-${s.scenario_id}`, role: "alert" }),
    ),
  );
}

function renderScenarios() {
  const rows = [...state.scenarios.values()].sort((a, b) => a.scenario_id - b.scenario_id);
  $("scenarios-empty").hidden = rows.length > 0;
  $("scenario-table").querySelector("tbody").replaceChildren(...rows.map(scenarioRow));
}

function paramControl(name, schema, id) {
  const common = { id, name, "data-field": `params.${name}`, "data-error": `err-scenario-params.${name}`, "aria-describedby": `hint-${name} err-scenario-params.${name}` };
  if (Array.isArray(schema.enum)) {
    return h("select", common, ...schema.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
  }
  if (schema.type === "boolean") return h("input", { ...common, type: "checkbox" });
  if (schema.type === "integer" || schema.type === "number") {
    return h("input", { ...common, type: "number", step: schema.type === "integer" ? "1" : "any", min: schema.minimum, max: schema.maximum, inputmode: schema.type === "integer" ? "numeric" : "decimal" });
  }
  return h("input", { ...common, type: "text" });
}

function setControlValue(control, value) {
  if (value === undefined) return;
  if (control.type === "checkbox") control.checked = Boolean(value);
  else if (control.tagName === "SELECT") control.value = JSON.stringify(value);
  else control.value = String(value);
}

function readControl(control) {
  if (control.type === "checkbox") return control.checked;
  if (control.tagName === "SELECT") return JSON.parse(control.value);
  if (control.type === "number") return numberValue(control);
  return control.value === "" ? undefined : control.value;
}

function paramHint(schema) {
  const parts = [];
  if (schema.default !== undefined) parts.push(t("form.paramHint", { value: schema.default }));
  const lo = schema.minimum ?? schema.exclusiveMinimum;
  // Bounds that only guard against absurd input (1e12 yen an hour) say nothing useful.
  const rawHi = schema.maximum ?? schema.exclusiveMaximum;
  const hi = rawHi !== undefined && rawHi < 1e6 ? rawHi : undefined;
  if (lo !== undefined || hi !== undefined) {
    const left = lo === undefined ? "" : `${lo}${schema.exclusiveMinimum !== undefined ? " <" : " ≤"} `;
    const right = hi === undefined ? "" : ` ${schema.exclusiveMaximum !== undefined ? "<" : "≤"} ${hi}`;
    parts.push(`${left}x${right}`);
  }
  return parts.join(" · ");
}

function renderParamFields(modelName, values) {
  const model = state.models.get(modelName);
  const props = model?.params?.properties ?? {};
  $("model-description").replaceChildren(richText(model?.description ?? ""));
  $("param-fields").replaceChildren(
    ...Object.entries(props).map(([name, schema]) => {
      const id = `param-${name}`;
      const control = paramControl(name, schema, id);
      setControlValue(control, values?.[name] ?? schema.default);
      return h(
        "div",
        { class: "field" },
        h("label", { for: id, title: schema.description ?? "" }, paramName(name)),
        control,
        h("small", { id: `hint-${name}`, class: "hint" }, paramHint(schema)),
        h("p", { class: "field-error", id: `err-scenario-params.${name}` }),
      );
    }),
  );
}

function renderModelOptions() {
  const select = $("scenario-model");
  const chosen = select.value;
  select.replaceChildren(...[...state.models.keys()].map((name) => h("option", { value: name }, name)));
  if (state.models.has(chosen)) select.value = chosen;
}

function resetScenarioForm() {
  state.editing = null;
  clearErrors($("scenario-form"));
  $("scenario-name").value = "";
  renderModelOptions();
  if (state.models.has("warehouse")) $("scenario-model").value = "warehouse";
  renderParamFields($("scenario-model").value, null);
  labelScenarioForm();
}

function labelScenarioForm() {
  const editing = state.editing != null;
  $("scenario-form-title").textContent = editing ? t("form.editing", { id: state.editing }) : t("form.create");
  $("scenario-submit").textContent = editing ? t("form.update") : t("form.save");
  $("scenario-cancel-edit").hidden = !editing;
}

function editScenario(id) {
  const scenario = state.scenarios.get(id);
  if (!scenario) return;
  resetScenarioForm();
  state.editing = id;
  $("scenario-name").value = scenario.scenario_name;
  $("scenario-model").value = scenario.model;
  renderParamFields(scenario.model, scenario.params);
  labelScenarioForm();
  $("scenario-editor").scrollIntoView({ block: "start" });
  $("scenario-name").focus();
}

async function deleteScenario(scenario, button) {
  if (!window.confirm(t("scenarios.deleteConfirm", { name: scenario.scenario_name }))) return;
  const slot = $(`delete-error-${scenario.scenario_id}`);
  slot.textContent = "";
  try {
    await api("DELETE", `/api/scenarios/${scenario.scenario_id}`);
  } catch (err) {
    // Said beside the button that caused it, and the button keeps the focus.
    slot.textContent = err instanceof ApiError && err.status === 409 ? t("scenarios.deleteConflict") : problemText(err);
    button.setAttribute("aria-describedby", slot.id);
    button.focus();
  }
}

function readScenarioForm() {
  const props = state.models.get($("scenario-model").value)?.params?.properties ?? {};
  const params = {};
  let unreadable = false;
  for (const [name, schema] of Object.entries(props)) {
    const control = $(`param-${name}`);
    const value = readControl(control, schema);
    if (Number.isNaN(value)) {
      markInvalid(control, t("err.number"));
      unreadable = true;
    } else if (value !== undefined) {
      params[name] = value;
    }
  }
  if (!$("scenario-name").value.trim()) {
    markInvalid($("scenario-name"), t("err.empty"));
    unreadable = true;
  }
  if (unreadable) return null;
  return { scenario_name: $("scenario-name").value, model: $("scenario-model").value, params };
}

async function submitScenario(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const body = readScenarioForm();
  if (!body) {
    focusFirstInvalid(form);
    return;
  }
  const editing = state.editing;
  try {
    const saved = editing == null ? await api("POST", "/api/scenarios", body) : await api("PATCH", `/api/scenarios/${editing}`, body);
    state.scenarios.set(saved.scenario_id, saved);
    renderScenarios();
    renderRunScenarios();
    resetScenarioForm();
    $("scenario-form-ok").textContent = t(editing == null ? "form.created" : "form.updated", { name: saved.scenario_name });
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) markInvalid($("scenario-name"), t("err.duplicateName"));
    else showErrors(form, $("scenario-form-error"), err);
    noteFailure(err);
  }
}

// -- starting a run -----------------------------------------------------------------------

function renderRunScenarios() {
  const rows = [...state.scenarios.values()].sort((a, b) => a.scenario_id - b.scenario_id);
  $("run-scenarios").replaceChildren(
    ...rows.map((s) => {
      const id = `run-scenario-${s.scenario_id}`;
      const input = h("input", { type: "checkbox", id, value: s.scenario_id, checked: !state.unchecked.has(s.scenario_id) });
      input.addEventListener("change", () => {
        if (input.checked) state.unchecked.delete(s.scenario_id);
        else state.unchecked.add(s.scenario_id);
      });
      return h("div", { class: "choice" }, input, h("label", { for: id }, s.scenario_name));
    }),
  );
}

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
    const answer = await api("POST", "/api/simulations", body);
    adoptRun(answer.run);
    $("run-form-ok").textContent = t("run.started", { id: answer.run_id });
  } catch (err) {
    showErrors(form, $("run-form-error"), err);
    noteFailure(err);
  }
}

/** A run this tab started, extended or resumed: watch it and show its results. */
function adoptRun(run) {
  updateRun(run);
  state.watched.add(run.run_id);
  state.followed = run.run_id;
  if (state.view !== "all") state.view = "latest";
  renderRuns();
  renderResults();
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
    h("div", { class: "live-foot" }, h("span", { class: "count" }), h("span", { class: "pct" }), h("span", { class: "rate muted" }), h("span", { class: "eta muted" }), h("span", { class: "precision muted" }), cancel, resume),
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
  syncButton(node, ".cancel", active && !state.offline);
  syncButton(node, ".resume", run.status === "interrupted" && !state.offline);
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
    updateRun(await api("POST", `/api/simulations/${runId}/cancel`));
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
    adoptRun(await api("POST", `/api/simulations/${runId}/${action}`, body));
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
    if (run && TERMINAL.has(run.status)) return;
    if (run) {
      const replications = e.total / Math.max(run.scenario_ids.length, 1);
      const updated = { ...run, status: "running", done: Math.max(run.done, e.done), total: e.total, replications: run.precision ? replications : run.replications };
      state.runs.set(e.run_id, updated);
      noteProgress(updated);
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

// -- the socket, the offline state and the sign-in --------------------------------------------

let socket = null;
let attempt = 0;
let retryTimer = null;

function setConnection(name) {
  const el = $("connection");
  el.dataset.state = name;
  el.dataset.i18n = `conn.${name}`;
  el.textContent = t(`conn.${name}`);
}

/** Grey out what may be stale, and say so with the time of the last news. */
function setOffline(offline) {
  state.offline = offline;
  if (offline && !state.offlineSince) state.offlineSince = new Date();
  if (!offline) state.offlineSince = null;
  document.body.classList.toggle("offline", offline);
  for (const id of ["results", "live", "history"]) $(id).toggleAttribute("aria-busy", offline);
  const banner = $("offline");
  banner.hidden = !offline;
  if (offline) {
    const since = new Intl.DateTimeFormat(language(), { timeStyle: "medium" }).format(state.offlineSince);
    setText($("offline-text"), t("offline.text", { since }));
  }
  renderRuns();
  renderExperiments();
}

/** A failed call may be the first sign that the server is gone or wants a token. */
function noteFailure(err) {
  if (!(err instanceof ApiError)) return;
  if (err.unreachable && !state.offline) setOffline(true);
  if (err.status === 401) showSignIn(token() ? "signin.rejected" : "signin.needed");
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  const ws = new WebSocket(socketUrl("/ws/events"));
  socket = ws;
  state.seq = 0;
  let greeted = false;
  ws.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    // A gap in seq means this tab missed something: start over from a fresh snapshot.
    if (event.seq !== state.seq + 1) {
      ws.close(4000, "sequence gap");
      return;
    }
    state.seq = event.seq;
    performance.mark("simsvc:event", { detail: { type: event.type, runId: event.run_id ?? null, done: event.done ?? null } });
    if (event.type === "hello") {
      greeted = true;
      attempt = 0;
      setConnection("live");
      setOffline(false);
      signedIn();
    }
    handlers[event.type]?.(event);
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    if (greeted) setOffline(true);
    diagnose(greeted);
  });
}

/** Why the socket closed: the server is gone (retry with backoff), or it wants a token. */
async function diagnose(wasGreeted) {
  let up = false;
  if (!wasGreeted) {
    try {
      await api("GET", "/api/health");
      up = true;
    } catch {
      up = false;
    }
  }
  if (up) {
    // The server answers but refused the live connection: a token is missing or wrong.
    setConnection("signin");
    showSignIn(token() ? "signin.rejected" : "signin.needed");
    return;
  }
  setConnection("reconnecting");
  setOffline(true);
  // Exponential backoff with jitter, so that many tabs do not hammer a restarting server.
  const delay = Math.min(MAX_BACKOFF_MS, FIRST_RETRY_MS * BACKOFF_FACTOR ** attempt) * (0.75 + Math.random() / 2);
  attempt += 1;
  retryTimer = setTimeout(connect, delay);
}

function retryNow() {
  attempt = 0;
  setText($("offline-text"), t("offline.retrying"));
  connect();
}

function showSignIn(reason) {
  const form = $("signin");
  form.hidden = false;
  setText($("signin-reason"), t(reason));
  form.dataset.reason = reason;
  if (!form.contains(document.activeElement)) $("signin-token").focus();
}

function signedIn() {
  const form = $("signin");
  if (!form.hidden && document.activeElement === $("signin-token")) $("results-title").focus();
  form.hidden = true;
  renderSignIn();
}

function renderSignIn() {
  $("signout").hidden = !token();
  const reason = $("signin").dataset.reason;
  if (reason) setText($("signin-reason"), t(reason));
}

function submitSignIn(event) {
  event.preventDefault();
  const value = $("signin-token").value.trim();
  if (!value) {
    markInvalid($("signin-token"), t("err.empty"));
    return;
  }
  clearErrors($("signin"));
  setToken(value);
  $("signin-token").value = "";
  setText($("signin-reason"), t("signin.checking"));
  connect();
}

function signOut() {
  setToken(null);
  renderSignIn();
  socket?.close(1000, "signed out");
  connect();
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
  $("retry-now").addEventListener("click", retryNow);
  $("signin").addEventListener("submit", submitSignIn);
  $("signout").addEventListener("click", signOut);
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
connect();
