// How numbers read on the page: shares as percentages (and their differences as
// percentage points), money in the chosen currency, half-widths with enough digits to
// be non-zero, and thousands separators everywhere.

import { has, language, t } from "./i18n.js";

const CURRENCY_KEY = "simsvc.currency";
export const CURRENCIES = ["", "JPY", "USD", "EUR", "GBP"];
const MONEY = /(cost|wage|price|revenue|profit)/;

export function isShare(kpi) {
  return kpi.endsWith("_rate") || kpi === "utilization";
}

export function isMoney(kpi) {
  return MONEY.test(kpi);
}

export function currency() {
  try {
    const saved = localStorage.getItem(CURRENCY_KEY);
    return CURRENCIES.includes(saved) ? saved : "";
  } catch {
    return "";
  }
}

export function setCurrency(code) {
  try {
    localStorage.setItem(CURRENCY_KEY, code);
  } catch {
    // Not remembered across visits.
  }
}

export function kpiLabel(kpi) {
  return has(`kpi.${kpi}`) ? t(`kpi.${kpi}`) : kpi;
}

function numberFormat(digits, money) {
  const options = { minimumFractionDigits: digits, maximumFractionDigits: digits };
  const code = money ? currency() : "";
  if (code) Object.assign(options, { style: "currency", currency: code, currencyDisplay: "narrowSymbol" });
  return new Intl.NumberFormat(language(), options);
}

/** Decimals that show `value` with at least two significant digits (at most 6). */
function digitsFor(value, least) {
  const size = Math.abs(value);
  if (!(size > 0)) return least;
  const needed = Math.max(0, 1 - Math.floor(Math.log10(size)));
  return Math.min(6, Math.max(least, needed));
}

/**
 * Formatters for one KPI: `mean` for values, `half` for ± half-widths and `diff` for
 * differences (percentage points for shares), decimals chosen from the size of the means.
 */
export function formatterFor(kpi, means) {
  if (isShare(kpi)) {
    const pct = (digits) => new Intl.NumberFormat(language(), { minimumFractionDigits: digits, maximumFractionDigits: digits });
    const meanNf = pct(1);
    const mean = (v) => `${meanNf.format(v * 100)}%`;
    const point = (v) => pct(digitsFor(v * 100, 1)).format(v * 100).replace("-", "−");
    const points = (v) => `${point(v)} ${t("unit.pp")}`;
    const signed = (v) => `${v > 0 ? "+" : v < 0 ? "−" : "±"}${points(Math.abs(v))}`;
    return Object.assign(mean, { half: points, diff: signed, point });
  }
  const top = Math.max(...means.map((m) => Math.abs(m)), 0);
  const digits = top >= 1000 ? 0 : top >= 100 ? 1 : top >= 1 ? 2 : 3;
  const money = isMoney(kpi);
  const meanNf = numberFormat(digits, money);
  const mean = (v) => meanNf.format(v);
  const half = (v) => numberFormat(digitsFor(v, digits), money).format(v);
  const signed = (v) => `${v > 0 ? "+" : v < 0 ? "−" : "±"}${half(Math.abs(v))}`;
  const point = (v) => half(v).replace("-", "−");
  return Object.assign(mean, { half, diff: signed, point });
}

export function tickFormatter(kpi) {
  if (isShare(kpi)) return (v) => `${Math.round(v * 1000) / 10}%`;
  const options = { maximumFractionDigits: 2 };
  const code = isMoney(kpi) ? currency() : "";
  if (code) Object.assign(options, { style: "currency", currency: code, currencyDisplay: "narrowSymbol", minimumFractionDigits: 0 });
  const nf = new Intl.NumberFormat(language(), options);
  return (v) => nf.format(v);
}

export function count(n) {
  return new Intl.NumberFormat(language()).format(n);
}

/** "mean ± half", or the mean alone when there is no interval. */
export function statText(stat, format) {
  if (!stat) return "–";
  return stat.half == null ? format(stat.mean) : `${format(stat.mean)} ± ${format.half(stat.half)}`;
}

/** A confidence interval "[lo, hi]" in the KPI's own unit. */
export function intervalText(ci, format) {
  if (!ci) return "–";
  return `[${format.point(ci[0])}, ${format.point(ci[1])}]`;
}

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/**
 * A model's description as nodes: paragraphs, `code`, **strong** and *emphasis*.
 * Built with text nodes only, so nothing in it can become markup.
 */
export function richText(text) {
  const fragment = document.createDocumentFragment();
  for (const block of (text || "").split(/\n\s*\n/)) {
    if (!block.trim()) continue;
    const p = document.createElement("p");
    for (const part of block.split(/(`[^`]+`|\*\*[^*]+\*\*|\*[^*]+\*)/)) {
      if (!part) continue;
      const tag = part.startsWith("`") ? "code" : part.startsWith("**") ? "strong" : part.startsWith("*") ? "em" : null;
      if (!tag) {
        p.append(part);
        continue;
      }
      const node = document.createElement(tag);
      node.textContent = part.replace(/^(`|\*\*|\*)|(`|\*\*|\*)$/g, "");
      p.append(node);
    }
    fragment.append(p);
  }
  return fragment;
}
