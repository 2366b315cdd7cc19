"""Result exports: a run's rows as JSON, CSV or Parquet, streamed in batches.

An export never holds a whole run: `db.Database.export_pieces` reads a few thousand
rows at a time and encodes them in a worker thread, and a bounded number of pieces wait
for the client, so memory stays the same whatever the run's size and the event loop only
passes bytes along. The rows are those stored when the export began.

The formats are those of the first, whole-answer implementation, cell for cell:
- JSON: a list of `{"scenario_id", "replication", "seed", "total_labor_costs",
  "ontime_delivery_rate", "metrics"}` objects;
- CSV: the fixed columns, then one column per metrics key (sorted); a value as Python's
  csv module writes what `json.loads` gives, an object or list as its JSON text, and an
  empty cell for null or absent;
- Parquet (optional extra `simsvc[parquet]`): the same columns, typed; a metrics key
  whose values mix types, or hold objects or lists, is a string column of JSON text.

The CSV columns are `CSV_FIXED` and then the metrics: a column is added by adding to
both `CSV_FIXED` and the SELECT in `db_exports`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import gc
import importlib.util
import io
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from . import db, db_exports, jsontext

CSV_FIXED = (
    "scenario_id",
    "scenario_name",
    "replication",
    "seed",
    "total_labor_costs",
    "ontime_delivery_rate",
)
FIXED_COLUMNS = len(CSV_FIXED)
JSON_ROW = (
    '{"scenario_id": %d, "scenario_name": %s, "replication": %d, "seed": %s,'
    ' "total_labor_costs": %r, "ontime_delivery_rate": %r, "metrics": %s}'
)
CONTAINERS = frozenset({"object", "array"})
# The JSON types of a metrics key whose CSV cells never need quoting.
PLAIN = frozenset({"integer", "bigint", "real", "true", "false", "null"})

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
# Run exports streaming at once, each with a thread, a read-only connection and up to
# three batches of its own; one more is refused (429) until one ends.
EXPORTS_AT_ONCE = 8

Batch = db_exports.Batch
T = TypeVar("T")


class ParquetUnavailable(Exception):
    """Parquet was asked for, but pyarrow (the `parquet` extra) is not installed."""


@dataclass(frozen=True)
class Export:
    """What an export sends: its media type and its body, piece by piece."""

    content_type: str
    filename: str
    body: AsyncGenerator[bytes, None]  # closed by its sender, whether sent whole or not


def _plan(keys: dict[str, set[str]], form: db.MetricForm) -> list[tuple[str, db.MetricForm]]:
    return [(key, form) for key in sorted(keys)]


async def ahead(pieces: AsyncIterator[T], depth: int = 2) -> AsyncGenerator[T, None]:
    """The pieces, with up to `depth` more made while the caller works on one.

    Without it, nothing would be read while a piece waits for the client to take it in.
    """
    queue: asyncio.Queue[T | Exception | None] = asyncio.Queue(depth)

    async def produce() -> None:
        try:
            async for piece in pieces:
                await queue.put(piece)
        except Exception as exc:  # handed to the sender, which ends the answer short
            await queue.put(exc)
            return
        await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        while (piece := await queue.get()) is not None:
            if isinstance(piece, Exception):
                raise piece
            yield piece
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


# -- JSON -----------------------------------------------------------------------------


async def scenario_names(database: db.Database, run_id: int) -> dict[int, str]:
    """Each scenario's name as the run recorded it; 0 stands for a scenario it lacks."""
    run = await database.get_run(run_id)
    names = {int(sid): str(e["scenario_name"]) for sid, e in run["snapshot"].items()}
    return {0: "", **names}


async def json_export(database: db.Database, run_id: int) -> Export:
    names = {k: jsontext.dumps(v) for k, v in (await scenario_names(database, run_id)).items()}
    bound = await database.export_bound(run_id)
    pieces = database.export_pieces(run_id, bound, names, [("", "metrics")], _json_rows)
    return Export("application/json", f"run-{run_id}-results.json", ahead(_json_body(pieces)))


async def _json_body(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield b"["
    first = True
    async for piece in pieces:
        yield piece if first else b", " + piece
        first = False
    yield b"]"


def _json_rows(batch: Batch) -> bytes:
    """Rows as JSON objects; the stored metrics JSON is copied as it is."""
    text = ", ".join([JSON_ROW % (*row[:3], _json_seed(row[3]), *row[4:]) for row in batch])
    if "NaN" in text or "Infinity" in text:
        # A plug-in's nested non-finite float was stored as Python writes it: not JSON.
        return _json_rows_checked(batch)
    return text.encode("utf-8")


def _json_seed(seed: int | None) -> str:
    return "null" if seed is None else str(seed)


def _json_rows_checked(batch: Batch) -> bytes:
    rows = [
        dict(
            zip(
                (*CSV_FIXED, "metrics"),
                (row[0], json.loads(row[1]), *row[2:FIXED_COLUMNS], json.loads(row[-1])),
                strict=True,
            )
        )
        for row in batch
    ]
    return jsontext.dumps(rows)[1:-1].encode("utf-8")


# -- CSV ------------------------------------------------------------------------------


async def csv_export(database: db.Database, run_id: int) -> Export:
    scenarios = await scenario_names(database, run_id)
    bound = await database.export_bound(run_id)
    keys = await database.export_metric_keys(run_id, bound)
    names = sorted(keys)
    header = _csv_text([(*CSV_FIXED, *names)])
    pieces = _csv_rows(database.export_pieces, (run_id, bound, scenarios), keys)
    return Export("text/csv", f"run-{run_id}-results.csv", ahead(_csv_body(header, pieces)))


def _csv_rows(
    read: Callable[..., AsyncIterator[bytes]],
    where: tuple[int, int, dict[int, str]],
    keys: dict[str, set[str]],
) -> AsyncIterator[bytes]:
    """The rows as CSV, read and encoded the fastest way the run's metrics allow."""
    names = sorted(keys)
    if all(db.export_safe_key(k) and keys[k] <= PLAIN for k in names):
        # Numbers, booleans and nulls only: no cell needs quoting (see `_csv_plain`).
        plain: list[tuple[str, db.MetricForm]] = [(k, "cell") for k in names]
        prefixes = _NamePrefixes(where[2])
        return read(*where, plain, lambda b: _csv_plain(b, prefixes), named=False)
    if all(db.export_safe_key(k) for k in names):
        # Containers come as JSON text and are re-written as json.dumps writes them.
        plan: list[tuple[str, db.MetricForm]] = [
            (k, "json" if keys[k] & CONTAINERS else "cell") for k in names
        ]
        fix = [FIXED_COLUMNS + i for i, (_, form) in enumerate(plan) if form == "json"]
        return read(*where, plan, lambda b: _csv_cells(b, fix))
    # A key SQLite's JSON paths cannot name: read whole metrics objects instead.
    return read(*where, [("", "metrics")], lambda b: _csv_from_metrics(b, names))


async def _csv_body(header: bytes, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield header
    async for piece in pieces:
        yield piece


def _csv_text(rows: Sequence[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


class _NamePrefixes(dict[int, bytes]):
    """`scenario_id,scenario_name,` as CSV, for every scenario id (the unknown: no name)."""

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, sid: int) -> bytes:
        name = self.names.get(sid, self.names.get(0, ""))
        self[sid] = _csv_text([(sid, name, "")])[:-1]  # the row's text up to its third cell
        return self[sid]


def _csv_plain(batch: Batch, prefixes: _NamePrefixes) -> bytes:
    """Rows without a name, of numbers and text cells that need no quoting, as CSV.

    orjson writes each float as its shortest round-trip digits, the digits `repr` writes;
    only its exponent notation differs, so a batch with an exponent (or a null or a
    non-finite value) goes the slow way, through the csv module.
    """
    pieces = []
    start = 0
    while start < len(batch):
        sid = batch[start][0]
        end = bisect.bisect_right(batch, sid, lo=start, key=_first)
        # [[sid,rep,...],[sid,rep,...]] -> sid,name,rep,...\nsid,name,rep,...\n
        text = orjson.dumps(batch[start:end])
        if _unlike_repr(text):
            return _csv_text([(r[0], prefixes.names.get(r[0], ""), *r[1:]) for r in batch])
        if b'"' in text:
            text = text.replace(b'"', b"")  # the cells of metrics, before any name is in
        first = b"[[%d," % sid
        pieces.append(prefixes[sid])
        pieces.append(text[len(first) : -2].replace(b"],[%d," % sid, b"\n" + prefixes[sid]))
        pieces.append(b"\n")
        start = end
    return b"".join(pieces)


def _unlike_repr(text: bytes) -> bool:
    """Whether orjson may have written a value otherwise than `repr` and the csv module.

    They differ on exponents (repr's `1e-05`, orjson's `1e-5`), numbers under 1e-4
    (orjson's `0.00001`: after the `,` before every cell but a row's first, the scenario
    id, or after a sign) and None (and NaN or infinities), orjson's null. Every `e` that
    is not the end of a `"True"` or `"False"` cell is an exponent. Each test is one scan
    in C.
    """
    if b"null" in text or any(small in text for small in _SMALL_NUMBERS):
        return True
    return b"e" in text and text.count(b"e") != text.count(b'ue"') + text.count(b'se"')


_SMALL_NUMBERS = (b",0.0000", b"-0.0000")


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


def _csv_cells(batch: Batch, containers: list[int]) -> bytes:
    if containers:
        batch = [_fix_containers(row, containers) for row in batch]
    return _csv_text(batch)


def _fix_containers(row: tuple[Any, ...], columns: list[int]) -> tuple[Any, ...]:
    cells = list(row)
    for i in columns:
        cells[i] = "" if cells[i] is None else csv_cell(json.loads(cells[i]))
    return tuple(cells)


def _csv_from_metrics(batch: Batch, names: list[str]) -> bytes:
    rows = []
    for row in batch:
        metrics = json.loads(row[FIXED_COLUMNS])
        rows.append([*row[:FIXED_COLUMNS], *(csv_cell(metrics.get(k)) for k in names)])
    return _csv_text(rows)


def csv_cell(value: Any) -> Any:
    """A metrics value as the CSV export writes it."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


# -- Parquet --------------------------------------------------------------------------

# The Parquet type of a metrics key, by the JSON types its values take (null aside).
_PARQUET_TYPES: dict[frozenset[str], str] = {
    frozenset({"integer"}): "int64",
    frozenset({"real"}): "float64",
    frozenset({"integer", "real"}): "float64",
    frozenset({"true"}): "bool",
    frozenset({"false"}): "bool",
    frozenset({"true", "false"}): "bool",
    frozenset({"text"}): "string",
}


def parquet_available() -> bool:
    """Whether pyarrow is installed; found without importing it on the event loop."""
    return importlib.util.find_spec("pyarrow") is not None


def _load_pyarrow() -> None:
    """Import pyarrow once, in a worker thread, and keep its objects out of collections.

    pyarrow imports pandas, when installed, on its first array: some 60,000 objects that
    live as long as the process. Left in the collector's care, each full collection (and
    an export makes a dozen) walks them all and holds the event loop for 50 ms or more.
    No collection runs while they are made (their number would set off a full one, which
    holds the event loop as long), and they are frozen after without one: the little
    cyclic garbage of the imports is kept for good instead.
    """
    global _pyarrow_loaded
    if _pyarrow_loaded:
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        import pyarrow as pa
        import pyarrow.compute
        import pyarrow.parquet

        pa.array([0])
        gc.freeze()
    finally:
        if collecting:
            gc.enable()
    _pyarrow_loaded = True


_pyarrow_loaded = False


async def parquet_export(database: db.Database, run_id: int) -> Export:
    """Row groups of one batch each; numbers parsed from the stored JSON text exactly."""
    if not parquet_available():
        raise ParquetUnavailable(
            "Parquet needs pyarrow, which is not installed: pip install 'simsvc[parquet]'"
        )
    await asyncio.to_thread(_load_pyarrow)
    scenarios = await scenario_names(database, run_id)
    bound = await database.export_bound(run_id)
    keys = await database.export_metric_keys(run_id, bound)
    names = sorted(keys)
    if not all(db.export_safe_key(k) for k in names):
        raise ParquetUnavailable("a metrics key holds a double quote, which Parquet export lacks")
    types = [_PARQUET_TYPES.get(frozenset(keys[k] - {"null"}), "json") for k in names]
    plan: list[tuple[str, db.MetricForm]] = [
        (k, "text" if t == "string" else "json") for k, t in zip(names, types, strict=True)
    ]
    writer = _ParquetWriter(names, types)
    body = ahead(writer.body(database.export_pieces(run_id, bound, scenarios, plan, writer.write)))
    return Export(PARQUET_MEDIA_TYPE, f"run-{run_id}-results.parquet", body)


class _ParquetWriter:
    """One Parquet file written batch by batch; each piece is what the batch added."""

    def __init__(self, names: list[str], types: list[str]) -> None:
        import pyarrow as pa

        self._names = names
        self._types = types
        fixed = [
            pa.field("scenario_id", pa.int64(), nullable=False),
            pa.field("scenario_name", pa.string(), nullable=False),
            pa.field("replication", pa.int64(), nullable=False),
            pa.field("seed", pa.int64()),
            pa.field("total_labor_costs", pa.float64(), nullable=False),
            pa.field("ontime_delivery_rate", pa.float64(), nullable=False),
        ]
        kinds = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
        pairs = zip(names, types, strict=True)
        metrics = [pa.field(name, kinds.get(kind, pa.string())) for name, kind in pairs]
        self._schema = pa.schema(fixed + metrics)
        self._sink = _Pieces()
        self._writer: Any = None

    async def body(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for piece in pieces:
            yield piece
        yield await asyncio.to_thread(self._close)

    def write(self, batch: Batch) -> bytes:
        """The file's bytes that `batch`, one row group, adds; called in a worker thread."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")
        columns = list(zip(*batch, strict=True))
        fixed = zip(columns[:FIXED_COLUMNS], self._schema, strict=False)
        arrays = [pa.array(column, type=field.type) for column, field in fixed]
        for column, kind in zip(columns[FIXED_COLUMNS:], self._types, strict=True):
            text = pa.array(column, type=pa.string())
            if kind in ("int64", "float64"):
                arrays.append(pc.cast(text, kind))  # exact: the JSON text Python wrote
            elif kind == "bool":
                arrays.append(pc.equal(text, "true"))
            else:
                arrays.append(text)
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        return self._sink.take()

    def _close(self) -> bytes:
        if self._writer is None:  # no rows: still a valid, empty file
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")
        self._writer.close()
        import pyarrow as pa

        # Give back what the pool keeps for reuse: an export's memory ends with it.
        pa.default_memory_pool().release_unused()
        return self._sink.take()


class _Pieces(io.RawIOBase):
    """A write-only file that hands out what was written since it was last asked."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self._parts.append(piece)
        self._position += len(piece)
        return len(piece)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out
