// Form errors: the API's field errors, reworded for people and translated, each placed
// next to its control, all of them at once.

import { $ } from "./dom.js";
import { ApiError } from "./api.js";
import { t } from "./i18n.js";

// The validator's wording (JSON Schema) mapped to our own; unknown wording is shown as is.
const PATTERNS = [
  [/is less than or equal to the minimum of (\S+)/, (m) => t("err.above", { n: m[1] })],
  [/is less than the minimum of (\S+)/, (m) => t("err.min", { n: m[1] })],
  [/is greater than or equal to the maximum of (\S+)/, (m) => t("err.below", { n: m[1] })],
  [/is greater than the maximum of (\S+)/, (m) => t("err.max", { n: m[1] })],
  [/is shorter than the minimum of|does not match '\\+S'|should be non-empty/, () => t("err.empty")],
  [/is longer than the maximum of (\d+)|is too long/, (m) => t("err.long", { n: m[1] ?? "" })],
  [/is not of type 'integer'/, () => t("err.integer")],
  [/is not of type 'number'/, () => t("err.number")],
  [/is a required property/, () => t("err.required")],
  [/Additional properties are not allowed/, () => t("err.unknown")],
  [/is not one of/, () => t("err.choice")],
];

export function friendly(message) {
  for (const [pattern, say] of PATTERNS) {
    const match = pattern.exec(message);
    if (match) return say(match);
  }
  return message;
}

/** The sentence for an error that is not about one field. */
export function problemText(err) {
  if (err instanceof ApiError && err.unreachable) return t("err.unreachable");
  if (err instanceof ApiError && err.status === 401) return t("err.unauthorized");
  return t("form.failed", { detail: err.message });
}

export function clearErrors(form) {
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

export function markInvalid(el, message) {
  el.setAttribute("aria-invalid", "true");
  const slot = $(el.dataset.error);
  if (!slot || slot.textContent.includes(message)) return;
  slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
}

/** Put each of the API's field errors next to its control; the rest above the buttons. */
export function showErrors(form, formError, err) {
  const fieldErrors = err instanceof ApiError ? (err.problem?.errors ?? []) : [];
  const unplaced = [];
  for (const e of fieldErrors) {
    const control = controlFor(form, e.field);
    if (control) markInvalid(control, friendly(e.message));
    else unplaced.push(`${e.field}: ${friendly(e.message)}`);
  }
  if (!fieldErrors.length) formError.textContent = problemText(err);
  else if (unplaced.length) formError.textContent = t("form.failed", { detail: unplaced.join("; ") });
  focusFirstInvalid(form);
}

export function focusFirstInvalid(form) {
  const first = form.querySelector("input[aria-invalid], select[aria-invalid], [aria-invalid] input");
  first?.focus();
}
