// Scenarios: the table with Edit and Delete, the form built from the model's params
// schema, and the scenario checkboxes of the run form.

import { ApiError, api } from "./api.js";
import { $, h, numberValue, reportFailure } from "./dom.js";
import { clearErrors, focusFirstInvalid, markInvalid, problemText, showErrors } from "./errors.js";
import { richText } from "./format.js";
import { has, t } from "./i18n.js";
import { state } from "./state.js";

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

export function renderScenarios() {
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

export function renderParamFields(modelName, values) {
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

export function renderModelOptions() {
  const select = $("scenario-model");
  const chosen = select.value;
  select.replaceChildren(...[...state.models.keys()].map((name) => h("option", { value: name }, name)));
  if (state.models.has(chosen)) select.value = chosen;
}

export function resetScenarioForm() {
  state.editing = null;
  clearErrors($("scenario-form"));
  $("scenario-name").value = "";
  renderModelOptions();
  if (state.models.has("warehouse")) $("scenario-model").value = "warehouse";
  renderParamFields($("scenario-model").value, null);
  labelScenarioForm();
}

export function labelScenarioForm() {
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

export async function submitScenario(event) {
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
    reportFailure(err);
  }
}

export function renderRunScenarios() {
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
