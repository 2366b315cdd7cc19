// Labels in English and Japanese. The page starts in the browser's language and the
// header switch overrides it (remembered in localStorage).

const STRINGS = {
  en: {
    title: "simsvc: simulation experiments",
    tagline: "Scenarios, runs and their statistics, updated live.",
    language: "Language",
    "conn.connecting": "Connecting…",
    "conn.live": "Live",
    "conn.reconnecting": "Reconnecting…",
    "nav.label": "Sections",
    "scenarios.title": "Scenarios",
    "scenarios.empty": "No scenarios yet. Create one below.",
    "scenarios.name": "Name",
    "scenarios.model": "Model",
    "scenarios.params": "Parameters",
    "scenarios.actions": "Actions",
    "scenarios.defaults": "model defaults",
    "scenarios.edit": "Edit",
    "scenarios.delete": "Delete",
    "scenarios.deleteConfirm": "Delete scenario “{name}”?",
    "form.create": "New scenario",
    "form.editing": "Edit scenario #{id}",
    "form.name": "Scenario name",
    "form.model": "Model",
    "form.params": "Parameters",
    "form.paramHint": "default {value}",
    "form.save": "Create scenario",
    "form.update": "Save changes",
    "form.cancelEdit": "Cancel editing",
    "form.created": "Scenario “{name}” created.",
    "form.updated": "Scenario “{name}” saved.",
    "form.notNumber": "Enter a number.",
    "form.failed": "The server refused the request: {detail}",
    "run.title": "Start a run",
    "run.scenarios": "Scenarios to run",
    "run.replications": "Replications per scenario",
    "run.seed": "Seed (blank: random)",
    "run.advanced": "Advanced: pacing and precision targets",
    "run.pace": "Pause after each replication (seconds, for demos)",
    "run.precision": "Precision targets (optional)",
    "run.precisionHint":
      "Stop when every 95% confidence half-width meets its target. Leave blank for a fixed number of replications.",
    "run.target": "Target for {kpi}",
    "run.targetKind": "Kind of target for {kpi}",
    "run.kind.half_width": "± absolute",
    "run.kind.relative_half_width": "± relative (fraction of the mean)",
    "run.minReps": "Minimum replications",
    "run.maxReps": "Maximum replications",
    "run.start": "Start run",
    "run.started": "Run #{id} started.",
    "run.noneSelected": "Choose at least one scenario.",
    "live.title": "Live progress",
    "live.empty": "No run in progress.",
    "live.cancel": "Cancel run #{id}",
    "live.progress": "Progress of run #{id}",
    "results.title": "Results",
    "results.show": "Show results of",
    "results.latest": "Latest run (follows new runs)",
    "results.all": "All stored results (current params)",
    "results.run": "Run #{id} ({status})",
    "results.empty": "No results yet. Start a run.",
    "results.summary": "Best scenario per indicator",
    "results.best": "{kpi}: {name} ({value})",
    "results.lower": "lower is better",
    "results.higher": "higher is better",
    "results.chartCaption": "{kpi}: scenario means with 95% confidence intervals ({dir})",
    "results.scatter": "Trade-off: cost vs on-time delivery (means with 95% intervals)",
    "results.scatterHint": "Upper left is better: cheaper and more orders on time.",
    "results.table": "Means ± 95% confidence half-width",
    "results.scenario": "Scenario",
    "results.n": "Replications",
    "results.bestMark": "best",
    "results.forRun": "Run #{id}: {done} of {total} replications, {status}",
    "results.forAll": "All stored results computed with each scenario's current params; runs with the same seed counted once",
    "compare.title": "Comparison with a baseline",
    "compare.baseline": "Baseline scenario",
    "compare.kpi": "Indicator",
    "compare.diff": "Mean difference (scenario − baseline)",
    "compare.paired": "Paired 95% CI",
    "compare.welch": "Welch 95% CI",
    "compare.verdict": "Verdict",
    "compare.better": "better",
    "compare.worse": "worse",
    "compare.no_significant_difference": "no significant difference",
    "compare.unavailable": "No comparison for this run: {detail}",
    "history.title": "Run history",
    "history.empty": "No runs yet.",
    "history.run": "Run",
    "history.status": "Status",
    "history.created": "Started",
    "history.scenarios": "Scenarios",
    "history.replications": "Replications",
    "history.progress": "Done",
    "history.actions": "Actions",
    "history.view": "Show results",
    "history.csv": "CSV",
    "history.csvLabel": "Download the replications of run #{id} as CSV",
    "status.queued": "queued",
    "status.running": "running",
    "status.completed": "completed",
    "status.failed": "failed",
    "status.cancelled": "cancelled",
    "status.interrupted": "interrupted",
    "stopped.precision_met": "precision target met",
    "stopped.max_replications": "stopped at the replication cap",
    "kpi.total_labor_costs": "Total labor costs",
    "kpi.ontime_delivery_rate": "On-time delivery rate",
    "kpi.overtime_hours": "Overtime hours",
    "kpi.mean_wait_minutes": "Mean wait (minutes)",
    "param.workers": "Pickers on the shift",
    "param.shift_hours": "Shift length (hours)",
    "param.hourly_wage": "Wage per worker-hour",
    "param.overtime_premium": "Overtime premium (multiplier)",
    "param.orders_per_hour": "Orders per hour",
    "param.mean_pick_minutes": "Mean pick time (minutes)",
    "param.due_minutes": "On time within (minutes)",
  },
  ja: {
    title: "simsvc: シミュレーション実験",
    tagline: "シナリオ・実行・統計をリアルタイムで表示します。",
    language: "言語",
    "conn.connecting": "接続中…",
    "conn.live": "ライブ",
    "conn.reconnecting": "再接続中…",
    "nav.label": "セクション",
    "scenarios.title": "シナリオ",
    "scenarios.empty": "シナリオがありません。下のフォームで作成してください。",
    "scenarios.name": "名前",
    "scenarios.model": "モデル",
    "scenarios.params": "パラメータ",
    "scenarios.actions": "操作",
    "scenarios.defaults": "モデルの既定値",
    "scenarios.edit": "編集",
    "scenarios.delete": "削除",
    "scenarios.deleteConfirm": "シナリオ「{name}」を削除しますか？",
    "form.create": "新しいシナリオ",
    "form.editing": "シナリオ #{id} を編集",
    "form.name": "シナリオ名",
    "form.model": "モデル",
    "form.params": "パラメータ",
    "form.paramHint": "既定値 {value}",
    "form.save": "シナリオを作成",
    "form.update": "変更を保存",
    "form.cancelEdit": "編集をやめる",
    "form.created": "シナリオ「{name}」を作成しました。",
    "form.updated": "シナリオ「{name}」を保存しました。",
    "form.notNumber": "数値を入力してください。",
    "form.failed": "サーバーが要求を拒否しました: {detail}",
    "run.title": "実行を開始",
    "run.scenarios": "実行するシナリオ",
    "run.replications": "シナリオごとの反復回数",
    "run.seed": "乱数シード（空欄: ランダム）",
    "run.advanced": "詳細: 実行間隔と精度目標",
    "run.pace": "反復ごとの待ち時間（秒、デモ用）",
    "run.precision": "精度目標（任意）",
    "run.precisionHint":
      "すべての95%信頼区間の半幅が目標に達したら停止します。空欄なら反復回数は固定です。",
    "run.target": "{kpi} の目標",
    "run.targetKind": "{kpi} の目標の種類",
    "run.kind.half_width": "± 絶対値",
    "run.kind.relative_half_width": "± 相対値（平均に対する比率）",
    "run.minReps": "最小反復回数",
    "run.maxReps": "最大反復回数",
    "run.start": "実行開始",
    "run.started": "実行 #{id} を開始しました。",
    "run.noneSelected": "シナリオを1つ以上選んでください。",
    "live.title": "進行状況",
    "live.empty": "実行中のものはありません。",
    "live.cancel": "実行 #{id} を中止",
    "live.progress": "実行 #{id} の進捗",
    "results.title": "結果",
    "results.show": "表示する結果",
    "results.latest": "最新の実行（新しい実行に追従）",
    "results.all": "保存済みのすべての結果（現在のパラメータ）",
    "results.run": "実行 #{id}（{status}）",
    "results.empty": "まだ結果がありません。実行を開始してください。",
    "results.summary": "指標ごとの最良シナリオ",
    "results.best": "{kpi}: {name}（{value}）",
    "results.lower": "小さいほど良い",
    "results.higher": "大きいほど良い",
    "results.chartCaption": "{kpi}: シナリオ別の平均と95%信頼区間（{dir}）",
    "results.scatter": "トレードオフ: コストと納期遵守率（平均と95%信頼区間）",
    "results.scatterHint": "左上ほど良い: 安く、納期どおりの注文が多い。",
    "results.table": "平均 ± 95%信頼区間の半幅",
    "results.scenario": "シナリオ",
    "results.n": "反復回数",
    "results.bestMark": "最良",
    "results.forRun": "実行 #{id}: {total} 回中 {done} 回、{status}",
    "results.forAll": "各シナリオの現在のパラメータで計算した保存済みのすべての結果（同じシードの実行は1回だけ数える）",
    "compare.title": "基準シナリオとの比較",
    "compare.baseline": "基準シナリオ",
    "compare.kpi": "指標",
    "compare.diff": "平均の差（シナリオ − 基準）",
    "compare.paired": "対応のある95%信頼区間",
    "compare.welch": "Welch の95%信頼区間",
    "compare.verdict": "判定",
    "compare.better": "良い",
    "compare.worse": "悪い",
    "compare.no_significant_difference": "有意差なし",
    "compare.unavailable": "この実行の比較はありません: {detail}",
    "history.title": "実行履歴",
    "history.empty": "まだ実行がありません。",
    "history.run": "実行",
    "history.status": "状態",
    "history.created": "開始日時",
    "history.scenarios": "シナリオ",
    "history.replications": "反復回数",
    "history.progress": "完了数",
    "history.actions": "操作",
    "history.view": "結果を表示",
    "history.csv": "CSV",
    "history.csvLabel": "実行 #{id} の反復結果を CSV でダウンロード",
    "status.queued": "待機中",
    "status.running": "実行中",
    "status.completed": "完了",
    "status.failed": "失敗",
    "status.cancelled": "中止",
    "status.interrupted": "中断",
    "stopped.precision_met": "精度目標を達成",
    "stopped.max_replications": "反復回数の上限で停止",
    "kpi.total_labor_costs": "総人件費",
    "kpi.ontime_delivery_rate": "納期遵守率",
    "kpi.overtime_hours": "残業時間",
    "kpi.mean_wait_minutes": "平均待ち時間（分）",
    "param.workers": "作業者数",
    "param.shift_hours": "シフト時間（時間）",
    "param.hourly_wage": "時給",
    "param.overtime_premium": "残業割増率（倍）",
    "param.orders_per_hour": "1時間あたりの注文数",
    "param.mean_pick_minutes": "平均ピッキング時間（分）",
    "param.due_minutes": "納期（受注からの分）",
  },
};

export const LANGUAGES = { en: "English", ja: "日本語" };
const STORAGE_KEY = "simsvc.lang";

function initialLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    // Storage can be disabled; the browser's language still applies.
  }
  if (saved && saved in STRINGS) return saved;
  const preferred = navigator.languages?.length ? navigator.languages : [navigator.language];
  const match = preferred.map((l) => (l || "").slice(0, 2)).find((l) => l in STRINGS);
  return match || "en";
}

let current = initialLanguage();

export function language() {
  return current;
}

export function setLanguage(lang) {
  if (!(lang in STRINGS)) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not remembered across visits, which is all that is lost.
  }
}

/** The label for `key` with {placeholders} filled; `fallback` when no language has it. */
export function t(key, vars = {}, fallback = key) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? fallback;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Whether a translation exists, so callers can fall back to the API's own wording. */
export function has(key) {
  return key in STRINGS[current] || key in STRINGS.en;
}

/** Fill every element carrying data-i18n with its label, and set <html lang>. */
export function applyStatic(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
}
