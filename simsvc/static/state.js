// What the page knows, as the events and answers left it, and the questions every view
// asks of it.

export const TERMINAL = new Set(["completed", "failed", "cancelled", "interrupted"]);
export const ACTIVE = new Set(["queued", "running"]);

export const state = {
  models: new Map(),
  scenarios: new Map(),
  runs: new Map(),
  runResults: new Map(), // run_id -> aggregate list
  allResults: [],
  view: "latest", // "latest" | "all" | a run id
  followed: null, // the run this tab last started, cancelled, extended or resumed
  editing: null, // scenario id in the form, or null for a new one
  watched: new Set(), // runs this page saw active: they stay in the run bar when they end
  unchecked: new Set(), // scenarios the user left out of the next run
  samples: new Map(), // run_id -> [{at, done}] for throughput and ETA
  batches: new Map(), // run_id -> {totals, fromStart} for precision runs
  experiments: new Map(), // experiment_id -> summary, from the snapshot and events
  experimentsAvailable: false, // whether this server runs experiments at all
  experimentView: "latest", // "latest" | an experiment id
  experimentBest: new Map(), // experiment_id -> the leading point of its last progress event
  offline: false,
  offlineSince: null,
  seq: 0,
};

// News of each run, counted in events this tab has handled. An HTTP answer asked for
// before the latest news of its run is older than that news and must not overwrite it.
let newsClock = 0;
const newsOf = new Map(); // run_id -> newsClock when an event or snapshot last spoke of it

export function noteNews(runIds) {
  newsClock += 1;
  for (const id of runIds) newsOf.set(id, newsClock);
}

/** A mark to take just before asking the server about a run. */
export function newsMark() {
  return newsClock;
}

/** Whether an event spoke of the run after `mark`, so is at least as new as the answer. */
export function newsSince(runId, mark) {
  return (newsOf.get(runId) ?? -1) > mark;
}

export function kpiDirections() {
  const directions = new Map();
  for (const model of state.models.values()) {
    for (const kpi of model.kpis ?? []) if (!directions.has(kpi.name)) directions.set(kpi.name, kpi.direction);
  }
  return directions;
}

export function scenarioName(id, run) {
  return run?.scenarios?.[String(id)]?.scenario_name ?? state.scenarios.get(id)?.scenario_name ?? `#${id}`;
}

/**
 * The run "latest" shows: the newest active run, else the run this tab last acted on,
 * else the newest run, whatever its status (a cancelled or interrupted run stays shown).
 */
function latestRunId() {
  const runs = [...state.runs.values()].sort((a, b) => b.run_id - a.run_id);
  const active = runs.find((r) => ACTIVE.has(r.status));
  if (active) return active.run_id;
  if (state.followed != null && state.runs.has(state.followed)) return state.followed;
  return runs[0]?.run_id ?? null;
}

export function viewedRunId() {
  if (state.view === "all") return null;
  return state.view === "latest" ? latestRunId() : state.view;
}
