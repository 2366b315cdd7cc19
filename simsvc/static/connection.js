// The live connection: the /ws/events socket with its backoff, the offline state (stale
// data greyed out, "server unreachable", Retry now) and the sign-in for a token.

import { ApiError, api, setToken, socketUrl, token } from "./api.js";
import { $, setText } from "./dom.js";
import { clearErrors, markInvalid } from "./errors.js";
import { language, t } from "./i18n.js";
import { state } from "./state.js";

const FIRST_RETRY_MS = 300;
const BACKOFF_FACTOR = 1.7;
const MAX_BACKOFF_MS = 10000;

// What the page does with an event, and when what it shows may have become stale.
const hooks = { onEvent: () => {}, onStale: () => {} };

let socket = null;
let attempt = 0;
let retryTimer = null;
let refusedOnce = false; // a handshake failed while the server answered HTTP

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
  hooks.onStale();
}

/** A failed call may be the first sign that the server is gone or wants a token. */
export function noteFailure(err) {
  if (!(err instanceof ApiError)) return;
  if (err.unreachable && !state.offline) setOffline(true);
  if (err.status === 401) showSignIn(token() ? "signin.rejected" : "signin.needed");
}

export function connect() {
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
      refusedOnce = false;
      attempt = 0;
      setConnection("live");
      setOffline(false);
      signedIn();
    }
    hooks.onEvent(event);
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
  if (up && !refusedOnce) {
    // The server may have come up just after the handshake failed: try once more at once.
    refusedOnce = true;
    connect();
    return;
  }
  if (up) {
    // The server answered before the handshake and still refused it: a token is missing or wrong.
    setConnection("signin");
    showSignIn(token() ? "signin.rejected" : "signin.needed");
    return;
  }
  refusedOnce = false;
  setConnection("reconnecting");
  setOffline(true);
  // Exponential backoff with jitter, so that many tabs do not hammer a restarting server.
  const delay = Math.min(MAX_BACKOFF_MS, FIRST_RETRY_MS * BACKOFF_FACTOR ** attempt) * (0.75 + Math.random() / 2);
  attempt += 1;
  retryTimer = setTimeout(connect, delay);
}

function retryNow() {
  // The backoff may already have reached the server: one socket per tab, never two.
  if (socket && socket.readyState <= WebSocket.OPEN) return;
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

export function renderSignIn() {
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

/** Start the connection; `onEvent` gets every event in order, `onStale` any change of state. */
export function startConnection(onEvent, onStale) {
  Object.assign(hooks, { onEvent, onStale });
  $("retry-now").addEventListener("click", retryNow);
  $("signin").addEventListener("submit", submitSignIn);
  $("signout").addEventListener("click", signOut);
  document.addEventListener("simsvc:failure", (e) => noteFailure(e.detail));
  connect();
}
