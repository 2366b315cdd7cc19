// The dashboard: state kept from /ws/events, forms that talk to the HTTP API, and
// renderers that redraw from state. No framework; every update comes from an event.

import { PALETTE, barChart, scatterChart } from "./charts.js";
import { LANGUAGES, applyStatic, has, language, setLanguage, t } from "./i18n.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "interrupted"]);
const ACTIVE = new Set(["queued", "running"]);
const COST = "total_labor_costs";
const ONTIME = "ontime_delivery_rate";
const HEADLINE_FIELDS = { [COST]: ["average_total_costs", "total_costs_ci95"], [ONTIME]: ["average_delivery_rate", "delivery_rate_ci95"] };
const ENDED_RUNS_SHOWN = 3;
const FIRST_RETRY_MS = 300;
const BACKOFF_FACTOR = 1.7;
const MAX_BACKOFF_MS = 10000;

const state = {
  models: new Map(),
  scenarios: new Map(),
  runs: new Map(),
  runResults: new Map(), // run_id -> aggregate list
  allResults: [],
  view: "latest", // "latest" | "all" | a run id
  editing: null, // scenario id in the form, or null for a new one
  watched: new Set(), // runs this page saw active: they stay in the live list when they end
  unchecked: new Set(), // scenarios the user left out of the next run
  compareAvailable: false,
  compare: { key: null, data: null, error: null },
  seq: 0,
};

const $ = (id) => document.getElementById(id);

/** Create an element: attrs are attributes (on* are listeners), children nodes or text. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    // Through the CSSOM: the Content-Security-Policy refuses inline style attributes.
    else if (key === "style") node.style.cssText = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

// -- the HTTP API -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// -- numbers ----------------------------------------------------------------------------

function isShare(kpi) {
  return kpi.endsWith("_rate") || kpi === "utilization";
}

/** A formatter for one KPI, with decimals chosen from the size of its means. */
function formatterFor(kpi, means) {
  if (isShare(kpi)) {
    const nf = new Intl.NumberFormat(language(), { minimumFractionDigits: 1, maximumFractionDigits: 1 });
    return (v) => `${nf.format(v * 100)}%`;
  }
  const top = Math.max(...means.map((m) => Math.abs(m)), 0);
  const digits = top >= 1000 ? 0 : top >= 100 ? 1 : top >= 1 ? 2 : 3;
  const nf = new Intl.NumberFormat(language(), { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return (v) => nf.format(v);
}

function tickFormatter(kpi) {
  if (isShare(kpi)) return (v) => `${Math.round(v * 1000) / 10}%`;
  const nf = new Intl.NumberFormat(language(), { maximumFractionDigits: 2 });
  return (v) => nf.format(v);
}

function kpiLabel(kpi) {
  return has(`kpi.${kpi}`) ? t(`kpi.${kpi}`) : kpi;
}

/** {mean, half} of one KPI in one aggregate entry, or null when absent. */
function kpiStat(entry, kpi) {
  const summary = entry.metrics?.[kpi];
  if (summary && summary.mean != null) return { mean: summary.mean, half: summary.ci95 };
  const fields = HEADLINE_FIELDS[kpi];
  if (fields && entry[fields[0]] != null) return { mean: entry[fields[0]], half: entry[fields[1]] };
  return null;
}

function kpiDirections() {
  const directions = new Map();
  for (const model of state.models.values()) {
    for (const kpi of model.kpis ?? []) if (!directions.has(kpi.name)) directions.set(kpi.name, kpi.direction);
  }
  return directions;
}

function scenarioName(id, run) {
  return state.scenarios.get(id)?.scenario_name ?? run?.scenarios?.[String(id)]?.scenario_name ?? `#${id}`;
}

// -- form errors ------------------------------------------------------------------------

function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field-error, .form-error, .form-ok")) slot.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** The control whose data-field is the longest prefix of an API error's field path. */
function controlFor(form, field) {
  let best = null;
  for (const el of form.querySelectorAll("[data-field]")) {
    const own = el.dataset.field;
    const matches = field === own || field.startsWith(`${own}.`) || field.startsWith(`${own}[`);
    if (matches && (!best || own.length > best.dataset.field.length)) best = el;
  }
  return best;
}

function markInvalid(el, message) {
  el.setAttribute("aria-invalid", "true");
  const slot = $(el.dataset.error);
  if (slot) slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
}

/** Put each of the API's field errors next to its control; the rest above the buttons. */
function showErrors(form, formError, err) {
  const fieldErrors = err instanceof ApiError ? (err.problem?.errors ?? []) : [];
  const unplaced = [];
  for (const e of fieldErrors) {
    const control = controlFor(form, e.field);
    if (control) markInvalid(control, e.message);
    else unplaced.push(`${e.field}: ${e.message}`);
  }
  if (!fieldErrors.length || unplaced.length) {
    formError.textContent = t("form.failed", { detail: unplaced.length ? unplaced.join("; ") : err.message });
  }
  form.querySelector("[aria-invalid] input, input[aria-invalid], select[aria-invalid]")?.focus();
}

/** A number input's value: undefined when blank, NaN when the browser could not parse it. */
function numberValue(input) {
  if (input.validity.badInput) return Number.NaN;
  return input.value.trim() === "" ? undefined : Number(input.value);
}

// -- scenarios ----------------------------------------------------------------------------

function paramSummary(scenario) {
  const defaults = state.models.get(scenario.model)?.params?.properties ?? {};
  const changed = Object.entries(scenario.params).filter(([k, v]) => defaults[k]?.default !== v);
  if (!changed.length) return t("scenarios.defaults");
  return changed.map(([k, v]) => `${has(`param.${k}`) ? t(`param.${k}`) : k}: ${v}`).join(" · ");
}

function renderScenarios() {
  const rows = [...state.scenarios.values()].sort((a, b) => a.scenario_id - b.scenario_id);
  $("scenarios-empty").hidden = rows.length > 0;
  $("scenario-table").querySelector("tbody").replaceChildren(
    ...rows.map((s) =>
      h(
        "tr",
        { "data-scenario-id": s.scenario_id },
        h("td", {}, String(s.scenario_id)),
        h("th", { scope: "row" }, s.scenario_name),
        h("td", {}, s.model),
        h("td", { class: "params", title: JSON.stringify(s.params) }, paramSummary(s)),
        h(
          "td",
          { class: "row-actions" },
          h("button", { type: "button", class: "secondary", "aria-label": `${t("scenarios.edit")}: ${s.scenario_name}`, onclick: () => editScenario(s.scenario_id) }, t("scenarios.edit")),
          h("button", { type: "button", class: "danger", "aria-label": `${t("scenarios.delete")}: ${s.scenario_name}`, onclick: () => deleteScenario(s) }, t("scenarios.delete")),
        ),
      ),
    ),
  );
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

function setControlValue(control, schema, value) {
  if (value === undefined) return;
  if (control.type === "checkbox") control.checked = Boolean(value);
  else if (control.tagName === "SELECT") control.value = JSON.stringify(value);
  else control.value = String(value);
}

function readControl(control, schema) {
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
  $("model-description").textContent = model?.description ?? "";
  $("param-fields").replaceChildren(
    ...Object.entries(props).map(([name, schema]) => {
      const id = `param-${name}`;
      const control = paramControl(name, schema, id);
      setControlValue(control, schema, values?.[name] ?? schema.default);
      const label = has(`param.${name}`) ? t(`param.${name}`) : name;
      return h(
        "div",
        { class: "field" },
        h("label", { for: id, title: schema.description ?? "" }, label),
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
  const form = $("scenario-form");
  clearErrors(form);
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

async function deleteScenario(scenario) {
  if (!window.confirm(t("scenarios.deleteConfirm", { name: scenario.scenario_name }))) return;
  const formError = $("scenario-form-error");
  formError.textContent = "";
  try {
    await api("DELETE", `/api/scenarios/${scenario.scenario_id}`);
  } catch (err) {
    formError.textContent = t("form.failed", { detail: err.message });
  }
}

function readScenarioForm(form) {
  const props = state.models.get($("scenario-model").value)?.params?.properties ?? {};
  const params = {};
  let unreadable = false;
  for (const [name, schema] of Object.entries(props)) {
    const control = $(`param-${name}`);
    const value = readControl(control, schema);
    if (Number.isNaN(value)) {
      markInvalid(control, t("form.notNumber"));
      unreadable = true;
    } else if (value !== undefined) {
      params[name] = value;
    }
  }
  if (unreadable) return null;
  return { scenario_name: $("scenario-name").value, model: $("scenario-model").value, params };
}

async function submitScenario(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const body = readScenarioForm(form);
  if (!body) return;
  const editing = state.editing;
  try {
    const saved = editing == null ? await api("POST", "/api/scenarios", body) : await api("PATCH", `/api/scenarios/${editing}`, body);
    state.scenarios.set(saved.scenario_id, saved);
    renderScenarios();
    renderRunScenarios();
    resetScenarioForm();
    $("scenario-form-ok").textContent = t(editing == null ? "form.created" : "form.updated", { name: saved.scenario_name });
  } catch (err) {
    showErrors(form, $("scenario-form-error"), err);
  }
}

// -- starting a run -----------------------------------------------------------------------

function renderRunScenarios() {
  const box = $("run-scenarios");
  const rows = [...state.scenarios.values()].sort((a, b) => a.scenario_id - b.scenario_id);
  box.replaceChildren(
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
  const body = {
    scenario_ids: [...$("run-scenarios").querySelectorAll("input:checked")].map((i) => Number(i.value)),
  };
  for (const [id, key] of [["run-replications", "replications"], ["run-seed", "seed"], ["run-pace", "pace_s"]]) {
    const value = numberValue($(id));
    if (Number.isNaN(value)) unreadable.push($(id));
    else if (value !== undefined) body[key] = value;
  }
  const precision = readPrecision(unreadable);
  if (precision) body.precision = precision;
  for (const input of unreadable) markInvalid(input, t("form.notNumber"));
  if (!body.scenario_ids.length) {
    markInvalid($("run-scenarios").closest("fieldset"), t("run.noneSelected"));
    return null;
  }
  return unreadable.length ? null : body;
}

async function submitRun(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const body = readRunForm();
  if (!body) return;
  try {
    const answer = await api("POST", "/api/simulations", body);
    if (!state.runs.has(answer.run_id)) state.runs.set(answer.run_id, answer.run);
    state.watched.add(answer.run_id);
    $("run-form-ok").textContent = t("run.started", { id: answer.run_id });
    renderRuns();
  } catch (err) {
    showErrors(form, $("run-form-error"), err);
  }
}

// -- runs: live progress and history --------------------------------------------------------

function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, t(`status.${status}`, {}, status));
}

/** Why a run with precision targets stopped, or nothing for a fixed-size run. */
function stoppedNote(run) {
  if (!run?.stopped_because) return null;
  return h("small", { class: "muted stopped" }, ` ${t(`stopped.${run.stopped_because}`, {}, run.stopped_because)}`);
}

function runScenarioNames(run) {
  return run.scenario_ids.map((id) => scenarioName(id, run)).join(", ");
}

function liveItem(run) {
  const pct = run.total ? Math.floor((run.done * 100) / run.total) : 0;
  const active = ACTIVE.has(run.status);
  const barId = `progress-${run.run_id}`;
  return h(
    "li",
    { "data-run-id": run.run_id, "data-status": run.status },
    h("div", { class: "live-head" }, h("strong", {}, `#${run.run_id}`), " ", statusBadge(run.status), " ", h("span", { class: "muted" }, runScenarioNames(run))),
    h("label", { for: barId, class: "visually-hidden" }, t("live.progress", { id: run.run_id })),
    h("progress", { id: barId, max: run.total || 1, value: run.done }),
    h(
      "div",
      { class: "live-foot" },
      h("span", { class: "count" }, `${run.done} / ${run.total}`),
      h("span", { class: "pct" }, `${pct}%`),
      active ? h("button", { type: "button", class: "danger", onclick: () => cancelRun(run.run_id) }, t("live.cancel", { id: run.run_id })) : null,
    ),
  );
}

/** Replace a keyed list's children only where they changed, so focus survives updates. */
function syncList(container, items, key, render) {
  const existing = new Map([...container.children].map((node) => [node.dataset.key, node]));
  const wanted = items.map((item) => {
    const node = render(item);
    node.dataset.key = key(item);
    const old = existing.get(node.dataset.key);
    if (old && old.outerHTML === node.outerHTML) return old;
    if (old) old.replaceWith(node);
    return node;
  });
  const current = [...container.children];
  if (wanted.length !== current.length || wanted.some((node, i) => node !== current[i])) container.replaceChildren(...wanted);
}

function renderLive() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  const active = runs.filter((r) => ACTIVE.has(r.status));
  const ended = runs.filter((r) => !ACTIVE.has(r.status) && state.watched.has(r.run_id)).slice(0, ENDED_RUNS_SHOWN);
  const shown = [...active, ...ended].sort((a, b) => b.run_id - a.run_id);
  $("live-empty").hidden = shown.length > 0;
  syncList($("live-list"), shown, (r) => `${r.run_id}`, liveItem);
}

async function cancelRun(runId) {
  try {
    const run = await api("POST", `/api/simulations/${runId}/cancel`);
    updateRun(run);
  } catch (err) {
    // 409: it ended on its own meanwhile; the event that says so is on its way.
    if (!(err instanceof ApiError && err.status === 409)) $("run-form-error").textContent = t("form.failed", { detail: err.message });
  }
}

function formatTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(language(), { dateStyle: "short", timeStyle: "medium" }).format(new Date(iso));
}

function historyRow(run) {
  const csv = `/api/simulations/${run.run_id}/results?format=csv`;
  return h(
    "tr",
    { "data-run-id": run.run_id },
    h("th", { scope: "row" }, `#${run.run_id}`),
    h("td", {}, statusBadge(run.status), stoppedNote(run)),
    h("td", {}, h("time", { datetime: run.created_at }, formatTime(run.created_at))),
    h("td", {}, runScenarioNames(run)),
    h("td", { class: "num" }, String(run.replications)),
    h("td", { class: "num" }, `${run.done} / ${run.total}`),
    h(
      "td",
      { class: "row-actions" },
      h("button", { type: "button", class: "secondary", "data-view": run.run_id, onclick: () => showRun(run.run_id) }, t("history.view")),
      h("a", { href: csv, download: `run-${run.run_id}-results.csv`, "aria-label": t("history.csvLabel", { id: run.run_id }) }, t("history.csv")),
    ),
  );
}

function renderHistory() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  $("history-empty").hidden = runs.length > 0;
  syncList($("history-table").querySelector("tbody"), runs, (r) => `${r.run_id}`, historyRow);
}

function showRun(runId) {
  state.view = runId;
  renderResults();
  $("results").scrollIntoView({ block: "start" });
}

function renderRuns() {
  renderLive();
  renderHistory();
  renderViewOptions();
}

/** Take a newer copy of a run, never letting a late progress event move it backwards. */
function updateRun(run) {
  const known = state.runs.get(run.run_id);
  if (known && TERMINAL.has(known.status) && !TERMINAL.has(run.status)) return;
  state.runs.set(run.run_id, run);
}

// -- results ------------------------------------------------------------------------------

/** The run "latest" shows: the newest active one, else the newest completed, else the newest. */
function latestRunId() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  const pick = runs.find((r) => ACTIVE.has(r.status)) ?? runs.find((r) => r.status === "completed") ?? runs[0];
  return pick?.run_id ?? null;
}

function viewedRunId() {
  if (state.view === "all") return null;
  return state.view === "latest" ? latestRunId() : state.view;
}

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
    $("results-caption").textContent = t("form.failed", { detail: err.message });
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
  const caption = t("results.forRun", { id: runId, done: run.done, total: run.total, status: t(`status.${run.status}`, {}, run.status) });
  return run.stopped_because ? `${caption} (${t(`stopped.${run.stopped_because}`, {}, run.stopped_because)})` : caption;
}

function kpisOf(results) {
  const directions = kpiDirections();
  const kpis = [...directions.keys()].filter((k) => results.some((r) => kpiStat(r, k)));
  return kpis.map((name) => ({ name, direction: directions.get(name) }));
}

function bestIndex(values, direction) {
  let best = -1;
  values.forEach((v, i) => {
    if (v == null) return;
    if (best < 0 || (direction === "max" ? v > values[best] : v < values[best])) best = i;
  });
  return best;
}

/** Everything the charts and table need per KPI: stats, formatter and the winner. */
function kpiColumns(results) {
  return kpisOf(results).map(({ name, direction }) => {
    const stats = results.map((r) => kpiStat(r, name));
    const format = formatterFor(name, stats.filter(Boolean).map((s) => s.mean));
    return { name, direction, stats, format, best: bestIndex(stats.map((s) => s?.mean ?? null), direction) };
  });
}

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

function renderScatter(results, columns, colors) {
  const cost = columns.find((c) => c.name === COST);
  const ontime = columns.find((c) => c.name === ONTIME);
  $("scatter-figure").hidden = !(cost && ontime);
  if (!(cost && ontime)) return;
  const items = results
    .map((r, i) => (cost.stats[i] && ontime.stats[i] ? { label: r.scenario_name, x: cost.stats[i].mean, xHalf: cost.stats[i].half, y: ontime.stats[i].mean, yHalf: ontime.stats[i].half, color: colors[i] } : null))
    .filter(Boolean);
  $("scatter").replaceChildren(
    scatterChart({ items, formatX: tickFormatter(COST), formatY: tickFormatter(ONTIME), title: t("results.scatter"), xLabel: kpiLabel(COST), yLabel: kpiLabel(ONTIME), yRange: [0, 1] }),
  );
}

function statText(stat, format) {
  if (!stat) return "–";
  return stat.half == null ? format(stat.mean) : `${format(stat.mean)} ± ${format(stat.half)}`;
}

function renderTable(results, columns, colors) {
  const table = $("results-table");
  table.querySelector("thead").replaceChildren(
    h("tr", {}, h("th", { scope: "col" }, t("results.scenario")), h("th", { scope: "col" }, t("results.n")), ...columns.map((c) => h("th", { scope: "col", "data-kpi": c.name }, kpiLabel(c.name)))),
  );
  table.querySelector("tbody").replaceChildren(
    ...results.map((r, i) =>
      h(
        "tr",
        { "data-scenario-id": r.scenario_id },
        h("th", { scope: "row" }, h("span", { class: "swatch", style: `background:${colors[i]}`, "aria-hidden": "true" }), r.scenario_name),
        h("td", { class: "num" }, String(r.replications)),
        ...columns.map((c) =>
          h("td", { class: i === c.best ? "num best" : "num", "data-kpi": c.name }, statText(c.stats[i], c.format), i === c.best ? h("span", { class: "best-mark", title: t("results.bestMark") }, " ★") : null),
        ),
      ),
    ),
  );
}

function renderBest(results, columns) {
  $("best-list").replaceChildren(
    ...columns
      .filter((c) => c.best >= 0)
      .map((c) => {
        const dir = t(c.direction === "max" ? "results.higher" : "results.lower");
        const value = statText(c.stats[c.best], c.format);
        return h("li", {}, t("results.best", { kpi: `${kpiLabel(c.name)} (${dir})`, name: results[c.best].scenario_name, value }));
      }),
  );
}

function renderResults() {
  renderViewOptions();
  const runId = viewedRunId();
  const results = viewedResults();
  const section = $("results");
  $("results-caption").textContent = resultsCaption(runId);
  $("results-empty").hidden = results.length > 0;
  $("results-body").hidden = results.length === 0;
  if (results.length) {
    const colors = results.map((_, i) => PALETTE[i % PALETTE.length]);
    const columns = kpiColumns(results);
    renderBest(results, columns);
    renderCharts(results, columns, colors);
    renderScatter(results, columns, colors);
    renderTable(results, columns, colors);
  }
  const run = state.runs.get(runId);
  section.dataset.runId = runId ?? "";
  section.dataset.done = run?.done ?? "";
  section.dataset.status = run?.status ?? "";
  // A mark per redraw lets anyone measure event-to-picture latency from the console.
  performance.mark("simsvc:results-rendered", { detail: { runId, done: run?.done ?? null, status: run?.status ?? null } });
  renderCompare();
}

// -- comparison with a baseline --------------------------------------------------------------

function compareTarget() {
  if (!state.compareAvailable) return null;
  const run = state.runs.get(viewedRunId());
  if (!run || !TERMINAL.has(run.status) || run.done === 0 || run.scenario_ids.length < 2) return null;
  return run;
}

function renderBaselineOptions(run) {
  const select = $("compare-baseline");
  const ids = [...run.scenario_ids].sort((a, b) => a - b);
  const chosen = Number(select.value);
  select.replaceChildren(...ids.map((id) => h("option", { value: id }, scenarioName(id, run))));
  select.value = String(ids.includes(chosen) ? chosen : ids[0]);
  return Number(select.value);
}

async function renderCompare() {
  const run = compareTarget();
  const section = $("compare");
  if (!run) {
    section.hidden = true;
    return;
  }
  const baseline = renderBaselineOptions(run);
  const key = `${run.run_id}:${baseline}:${run.status}:${run.done}`;
  if (state.compare.key !== key) {
    state.compare = { key, data: null, error: null };
    try {
      state.compare.data = await api("GET", `/api/simulations/${run.run_id}/compare?baseline=${baseline}`);
    } catch (err) {
      if (state.compare.key !== key) return;
      state.compare.error = err;
    }
    if (state.compare.key !== key) return;
  }
  drawCompare(run, state.compare);
}

function drawCompare(run, { data, error }) {
  const section = $("compare");
  const note = $("compare-note");
  // No such endpoint on this server (404): leave the section out rather than show an error.
  section.hidden = error instanceof ApiError && error.status === 404;
  note.hidden = !error;
  note.textContent = error ? t("compare.unavailable", { detail: error.message }) : "";
  const table = $("compare-table");
  table.hidden = !data;
  if (!data) return;
  const formats = new Map(kpiColumns(state.runResults.get(run.run_id) ?? []).map((c) => [c.name, c.format]));
  const interval = (ci, f) => (ci ? `[${f(ci[0])}, ${f(ci[1])}]` : "–");
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
        h("td", { class: "num" }, `${c.mean_difference > 0 ? "+" : ""}${f(c.mean_difference)}`),
        h("td", { class: "num" }, interval(c.paired_ci95, f)),
        h("td", { class: "num" }, interval(c.welch_ci95, f)),
        h("td", {}, h("span", { class: `verdict verdict-${c.verdict}` }, t(`compare.${c.verdict}`, {}, c.verdict))),
      );
    }),
  );
}

// -- events ---------------------------------------------------------------------------------

const handlers = {
  hello(e) {
    state.models = new Map((e.models ?? []).map((m) => [m.name, m]));
    state.scenarios = new Map(e.scenarios.map((s) => [s.scenario_id, s]));
    state.runs = new Map(e.runs.map((r) => [r.run_id, r]));
    for (const run of e.runs) if (ACTIVE.has(run.status)) state.watched.add(run.run_id);
    storeResults(null, e.results);
    // Anything cached may predate a restart: refetch what is on screen.
    state.runResults.clear();
    state.compare = { key: null, data: null, error: null };
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
    renderRuns();
    renderResults();
  },
  "run.progress"(e) {
    const run = state.runs.get(e.run_id);
    if (run && TERMINAL.has(run.status)) return;
    if (run) state.runs.set(e.run_id, { ...run, status: "running", done: Math.max(run.done, e.done), total: e.total });
    storeResults(e.run_id, e.results);
    renderRuns();
    if (viewedRunId() === e.run_id) renderResults();
  },
  "run.completed"(e) {
    runEnded(e);
  },
  "run.failed"(e) {
    runEnded(e);
  },
  "run.cancelled"(e) {
    runEnded(e);
  },
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
};

function runEnded(e) {
  state.runs.set(e.run_id, e.run);
  storeResults(e.run_id, e.results);
  renderRuns();
  // Redrawn whatever is on screen: an ended run can change which run "latest" means.
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
}

// -- the socket ------------------------------------------------------------------------------

let socket = null;
let attempt = 0;

function setConnection(name) {
  const el = $("connection");
  el.dataset.state = name;
  el.dataset.i18n = `conn.${name}`;
  el.textContent = t(`conn.${name}`);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/events`);
  socket = ws;
  state.seq = 0;
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
      attempt = 0;
      setConnection("live");
    }
    handlers[event.type]?.(event);
  });
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    setConnection("reconnecting");
    // Exponential backoff with jitter, so that many tabs do not hammer a restarting server.
    const delay = Math.min(MAX_BACKOFF_MS, FIRST_RETRY_MS * BACKOFF_FACTOR ** attempt) * (0.75 + Math.random() / 2);
    attempt += 1;
    setTimeout(connect, delay);
  });
}

// -- start ----------------------------------------------------------------------------------

async function detectComparison() {
  try {
    const spec = await api("GET", "/openapi.json");
    state.compareAvailable = Object.keys(spec.paths ?? {}).some((p) => p.endsWith("/compare"));
  } catch {
    state.compareAvailable = false;
  }
  renderCompare();
}

function setUpControls() {
  const lang = $("language");
  lang.replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, lang: code }, name)));
  lang.value = language();
  lang.addEventListener("change", () => {
    setLanguage(lang.value);
    renderParamFieldsKeepingValues();
    renderPrecisionTargets();
    renderAll();
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
  $("compare-baseline").addEventListener("change", renderCompare);
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
applyStatic();
connect();
detectComparison();
