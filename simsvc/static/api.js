// The HTTP API as the dashboard calls it: JSON in and out, the tab's token (if the
// user signed in) on every call, and errors that say whether the server answered.

const TOKEN_KEY = "simsvc.token";

/** An answer that was not 2xx; status 0 means the server could not be reached at all. */
export class ApiError extends Error {
  constructor(status, problem, message = null) {
    super(message || problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  get unreachable() {
    return this.status === 0;
  }
}

// The token lives for this tab only (sessionStorage): closing the tab signs out.
let memoryToken = null;

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || null;
  } catch {
    return memoryToken;
  }
}

export function setToken(value) {
  memoryToken = value || null;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token still lasts until the page is reloaded.
  }
}

/** The WebSocket URL; browsers cannot set headers on a handshake, so the token rides in the query. */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = new URL(`${scheme}://${location.host}${path}`);
  const current = token();
  if (current) url.searchParams.set("token", current);
  return url.toString();
}

function headers(body) {
  const out = { Accept: "application/json" };
  if (body !== undefined) out["Content-Type"] = "application/json";
  const current = token();
  if (current) out.Authorization = `Bearer ${current}`;
  return out;
}

export async function api(method, path, body) {
  const init = { method, headers: headers(body) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, null, err.message);
  }
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
