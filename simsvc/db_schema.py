"""The schema of simsvc's database: its SQL texts and version, and the check of a file's identity.

`Database` (in `db`) applies these texts in order when it opens a file: version 1,
then the upgrade steps of versions 2 and 3, then the experiment tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from .db_connection import UnusableDatabase
from .moments import Moments as Moments

SCHEMA_VERSION = 3
# PRAGMA application_id of simsvc's files ("SIMS"): other programs' databases stay untouched.
APPLICATION_ID = 0x53494D53
SIMSVC_TABLES = frozenset({"scenarios", "runs", "results", "kpi_stats"})

_SCHEMA = """
CREATE TABLE scenarios (
    scenario_id   INTEGER PRIMARY KEY,
    scenario_name TEXT NOT NULL UNIQUE,
    model         TEXT NOT NULL,
    params        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE runs (
    run_id          INTEGER PRIMARY KEY,
    status          TEXT NOT NULL,
    scenario_ids    TEXT NOT NULL,
    replications    INTEGER NOT NULL,
    seed            INTEGER NOT NULL,
    pace_s          REAL NOT NULL,
    options         TEXT NOT NULL,
    snapshot        TEXT NOT NULL,
    done            INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    error           TEXT,
    stopped_because TEXT
);
CREATE TABLE results (
    result_id            INTEGER PRIMARY KEY,
    run_id               INTEGER REFERENCES runs (run_id),
    scenario_id          INTEGER NOT NULL REFERENCES scenarios (scenario_id),
    replication          INTEGER NOT NULL,
    seed                 INTEGER,
    total_labor_costs    REAL NOT NULL,
    ontime_delivery_rate REAL NOT NULL,
    metrics              TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    UNIQUE (run_id, scenario_id, replication)
);
CREATE TABLE kpi_stats (
    run_key     INTEGER NOT NULL,
    scenario_id INTEGER NOT NULL,
    kpi         TEXT NOT NULL,
    n           INTEGER NOT NULL,
    mean        REAL NOT NULL,
    m2          REAL NOT NULL,
    PRIMARY KEY (run_key, scenario_id, kpi)
) WITHOUT ROWID;
"""

# Version 2: an ingested row records the scenario's model and params it was sent under
# (`config`, see `config_key`), so that the pooled aggregates never mix two settings and
# a replication sent twice is found; moments gain the third central moment (skewness).
_SCHEMA_2 = """
ALTER TABLE results ADD COLUMN config TEXT;
ALTER TABLE kpi_stats ADD COLUMN m3 REAL DEFAULT 0;
CREATE INDEX results_ingested ON results (scenario_id, config, replication) WHERE run_id IS NULL;
"""

# Version 3: each run's metrics keys, with the JSON types their values take, recorded as
# its rows are stored, so that an export's header is read here instead of from every row.
# A run stored before (`metric_keys_known` 0) has its rows scanned by its first export.
_SCHEMA_3 = """
CREATE TABLE run_metric_keys (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    key    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    PRIMARY KEY (run_id, key, kind)
) WITHOUT ROWID;
ALTER TABLE runs ADD COLUMN metric_keys_known INTEGER NOT NULL DEFAULT 1;
UPDATE runs SET metric_keys_known = 0;
"""

# An index on results (scenario_id) cost a quarter of storing a row, and no query needs
# it: a scenario's runs are found through the unique index, its ingested rows through
# `results_ingested`, whether it has results at all through `kpi_stats`. Dropped on every
# open, so that a database made with it stores as fast; an older simsvc reads the file
# as before.
_DROPPED_INDEXES = "DROP INDEX IF EXISTS results_by_scenario"

# Experiments over a parameter space. Created on every open if missing, so that a
# database made before they existed gains them without a schema version of its own.
_EXPERIMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id     INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    model             TEXT NOT NULL,
    model_version     TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    request           TEXT NOT NULL,
    point_count       INTEGER NOT NULL,
    replications_used INTEGER NOT NULL DEFAULT 0,
    outcome           TEXT NOT NULL DEFAULT '{}',
    stopped_because   TEXT,
    error             TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT
);
CREATE TABLE IF NOT EXISTS experiment_points (
    experiment_id INTEGER NOT NULL REFERENCES experiments (experiment_id),
    point_id      INTEGER NOT NULL,
    params        TEXT NOT NULL,
    PRIMARY KEY (experiment_id, point_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_results (
    experiment_id        INTEGER NOT NULL REFERENCES experiments (experiment_id),
    point_id             INTEGER NOT NULL,
    replication          INTEGER NOT NULL,
    total_labor_costs    REAL NOT NULL,
    ontime_delivery_rate REAL NOT NULL,
    metrics              TEXT NOT NULL,
    PRIMARY KEY (experiment_id, replication, point_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_stats (
    experiment_id INTEGER NOT NULL,
    point_id      INTEGER NOT NULL,
    kpi           TEXT NOT NULL,
    n             INTEGER NOT NULL,
    mean          REAL NOT NULL,
    m2            REAL NOT NULL,
    PRIMARY KEY (experiment_id, point_id, kpi)
) WITHOUT ROWID;
"""


async def check_identity(conn: aiosqlite.Connection, path: str | Path) -> None:
    """Refuse a database that is neither empty nor simsvc's, before any write."""
    app_id = await _scalar(conn, "PRAGMA application_id")
    version = await _scalar(conn, "PRAGMA user_version")
    async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        tables = {str(r[0]) for r in await cursor.fetchall()}
    ours = app_id == APPLICATION_ID or (
        # made before simsvc stamped its files, or new and empty
        app_id == 0 and (tables >= SIMSVC_TABLES or not tables)
    )
    if not ours:
        listed = ", ".join(sorted(tables)[:5]) or "none"
        raise UnusableDatabase(
            f"{path} is not a simsvc database (application_id {app_id}, tables: {listed});"
            " it was left untouched: give --db a new file or a simsvc database"
        )
    if version > SCHEMA_VERSION:
        raise UnusableDatabase(
            f"{path} has schema version {version}, newer than this simsvc's "
            f"{SCHEMA_VERSION}: upgrade simsvc"
        )


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0]


def _unusable(path: str | Path, exc: sqlite3.Error) -> str:
    """One line on why SQLite cannot use `path`, from the error it gave."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a SQLite database, or it is damaged ({text})"
    if "readonly" in text or "read-only" in text:
        return f"{path} is read-only ({text}); simsvc must be able to write it and its folder"
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another program ({text})"
    if "unable to open" in text:
        return f"cannot open {path} ({text}): check the path and its permissions"
    return f"cannot use {path} as a database: {text}"
