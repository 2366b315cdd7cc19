"""The limits of what one request may ask for, and the sentence that states them all."""

from __future__ import annotations

from ..exports import EXPORTS_AT_ONCE
from ..hub import MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES
from ..runner import DEFAULT_CHUNK_TIMEOUT_S
from ..sim import MAX_REPLICATION_WORK, MAX_RUN_WORK

MAX_SQLITE_INT = 2**63 - 1
MAX_REPLICATIONS = 100_000
MAX_SCENARIOS_PER_RUN = 1_000
# No more stored than one run may name, so a run of every scenario is always allowed.
MAX_SCENARIOS = MAX_SCENARIOS_PER_RUN
MAX_INGEST_ROWS = 100_000
MAX_BODY_BYTES = 1 << 20
MAX_NAME_LENGTH = 200
MAX_WS_MESSAGE_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # arrays and objects nested in one body
# |value| of a KPI or numeric metric sent to POST /api/results: far above any cost or
# count, exact for integers, and small enough that no sum or square of them overflows.
MAX_INGEST_MAGNITUDE = 1e15

LIMITS_TEXT = (
    f"Limits (a refusal names the one it hit): a request body holds at most "
    f"{MAX_BODY_BYTES} bytes (413); a run has at most {MAX_REPLICATIONS} replications per "
    f"scenario and names at most {MAX_SCENARIOS_PER_RUN} scenarios (422); at most "
    f"{MAX_SCENARIOS_PER_RUN} scenarios are stored (409); a scenario name has at most "
    f"{MAX_NAME_LENGTH} characters and one ingestion at most {MAX_INGEST_ROWS} rows (422); "
    f"a WebSocket message from a client has at most {MAX_WS_MESSAGE_BYTES} bytes (close "
    f"1009). A client that falls {MAX_QUEUED_MESSAGES} messages or {MAX_QUEUED_BYTES} bytes "
    "behind is closed with 1008. Work (a model's `work(params)`, about a microsecond of one "
    f"core per unit; warehouse: 20 + orders_per_hour * shift_hours): one replication at most "
    f"{MAX_REPLICATION_WORK:.0f} units (422 naming the param), one run at most "
    f"{MAX_RUN_WORK:.0f} units over all its scenarios and replications (422 naming "
    f"`replications` or `precision.max_replications`); a chunk of replications still "
    f"computing after {DEFAULT_CHUNK_TIMEOUT_S:g} s (by default) fails its run. "
    f"A body nests at most {MAX_JSON_DEPTH} levels (400), is "
    "sent as application/json (415), and holds no number beyond a double's range (422); "
    f"ingested KPIs and numeric metrics lie within ±{MAX_INGEST_MAGNITUDE:.0e} (422). "
    "Answers never hold NaN or Infinity: a statistic that overflows is null. Requests must "
    "name this service in Host (421), and changes from a browser must come from its own "
    "origin or an allowed one (403). One replay computes at a time (429), and "
    f"{EXPORTS_AT_ONCE} run exports stream at once (429)."
)
