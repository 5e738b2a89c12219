"""Known lines: a full export costs what changed, whatever came before it (issue 19).

Every row a successful users or history import leaves equal to its CSV line (inserted, updated or
found unchanged) is remembered in hrms.imports_linehash (migration imports/0004): the natural key of
the row and a 16-byte blake2b of the raw line bytes, keyed by what gives them meaning -- the stage,
the format (CSV), the header line, the options recorded with the import, and an epoch of the earlier
stages (their resets, and for history the ladder updates its summaries are written from).

The next import of a file of that kind reads it once: each line is hashed and looked up, a chunk at a
time, before anything is parsed or validated. A line is **known** -- skipped, counted unchanged --
only when its hash is the hash of the newest entry of its key and that entry's import record still
vouches (shortcuts.vouches: no undo or restore since). So:

- a changed line has another hash: it is read, validated and compared as before;
- a row a later import wrote (another file of the same kind, an Excel workbook, a CSV the line path
  cannot read) has a newer entry for its key: the old line no longer vouches for it;
- an undo or a restore resets the stage (imports/0003): no line recorded before it vouches;
- two lines of the file with the same key, one of them known, send the file the full way (the full
  path rejects the repeat and names both rows), as do blank lines or records spanning lines.

The other lines are written to a private temporary file with their row numbers, validated (Pandera)
and staged as on the full path, numbered as in the whole file. `ENABLED = False` turns the skipping
off (the tests compare both paths); the store is written either way.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import pandera.pandas as pa
import psycopg
from psycopg import sql

from hrms_pipelines.imports import shortcuts

if TYPE_CHECKING:
    from hrms_pipelines.imports.reader import FileInfo

TABLE = "hrms.imports_linehash"
ENABLED = True            # internal switch: False reads every line (the store is still written)
LOOKUP_LINES = 25_000     # lines hashed and looked up per round trip
_UPSTREAM = {"users": ("ladders", "org"), "history": ("ladders", "org", "users")}


@dataclass(frozen=True)
class LineKeys:
    """What a stage tells the line store: its key over a staging row (SQL over alias s, given the
    file), and the label of its counts in the stage's entities."""

    key: object               # Callable[[FileInfo], str]
    entity: str


@dataclass
class Lines:
    """The line pass of one file: which temp tables hold what."""

    stage: str
    hashed: bool = False      # line hashes of the staged rows are in {lines}
    known: int = 0            # lines skipped as known
    total: int = 0

    @property
    def lines(self) -> str:
        return f"_lh_lines_{self.stage}"      # (row_number, line_hash) of the lines staged

    @property
    def known_table(self) -> str:
        return f"_lh_known_{self.stage}"      # (row_number, key_hash) of the lines skipped

    @property
    def keys(self) -> str:
        return f"_lh_keys_{self.stage}"       # (row_number, key_hash) of the rows staged


_WRITTEN = {"users": ("users",), "history": ("history", "ladders")}


def epoch(conn: psycopg.Connection, stage: str) -> list[int]:
    """What changes what a line of `stage` means, besides its own imports: the newest reset of the
    earlier stages (an undo of a team or a level can make a stored line unknown), for history the
    newest ladders import that updated rows (summaries are written from level titles and pay bands),
    and the counters of writes by anyone but the import to the stage's tables (imports/0004: a
    backfill, an undo, a restore, an administrator's UPDATE)."""
    upstream = list(_UPSTREAM.get(stage, ()))
    counters = ", ".join(f"(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM hrms.imports_written_{name})" for name in _WRITTEN[stage])
    ladders = ("(SELECT coalesce(max(id), 0) FROM hrms.imports_importrecord WHERE stage = 'ladders' "
               "AND outcome IN ('succeeded', 'undone') AND updated > 0)" if stage == "history" else "0")
    row = conn.execute(f"SELECT (SELECT coalesce(max(id), 0) FROM {shortcuts.TABLE} WHERE stage = ANY(%s)), {ladders}, "
                       f"{counters}", [upstream]).fetchone()
    return list(row)


def context_key(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict) -> bytes:
    """The blake2b key every line hash of this file is made with."""
    header = bytes(info.data.reader([(info.data_start, info.header_end)]).read()).rstrip(b"\r\n")
    meaning = json.dumps({"stage": stage, "format": info.format, "options": options, "epoch": epoch(conn, stage)},
                         sort_keys=True, default=str).encode() + b"\n" + header
    return hashlib.blake2b(meaning, digest_size=32).digest()


def _create(conn: psycopg.Connection, lines: Lines) -> None:
    for table, second in ((lines.lines, "line_hash"), (lines.known_table, "key_hash")):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TEMP TABLE {table} (row_number bigint, {second} bytea) ON COMMIT DROP")


def vouching(conn: psycopg.Connection, stage: str) -> tuple[int, list[int]]:
    """(floor, gone): the line store's entries of `stage` vouch when written by a record above the
    floor -- the newest reset's through_record (shortcuts.vouches: a reset takes back every record up
    to it) -- and not by a record that no longer succeeded (undone: its undo reset the stage anyway)."""
    floor = conn.execute(f"SELECT coalesce(max(through_record), 0) FROM {shortcuts.TABLE} WHERE stage = %s", [stage]).fetchone()[0]
    gone = [r for (r,) in conn.execute("SELECT id FROM hrms.imports_importrecord WHERE stage = %s AND id > %s "
                                       "AND outcome NOT IN ('succeeded', 'running')", [stage, floor]).fetchall()]
    return floor, gone


def _flush(conn: psycopg.Connection, lines: Lines, base: int, digests: list[bytes], skip: bool,
           floor: int = 0, gone: list[int] | None = None) -> set[int]:
    """One chunk of consecutive lines (row numbers base, base + 1, ...), their hashes sent as one
    bytea: the known ones' keys go to {known_table}, the others' hashes to {lines}, all server-side.
    Returns the offsets (in the chunk) of the known lines: a line is known when its hash is the
    newest entry of its key, written by an import record that still vouches."""
    h = "SELECT i, substring(%(blob)s::bytea FROM i * 16 + 1 FOR 16) AS line_hash FROM generate_series(0, %(n)s - 1) i"
    params = {"blob": b"".join(digests), "n": len(digests), "base": base, "stage": lines.stage, "floor": floor,
              "gone": gone or []}
    if not skip:
        conn.execute(f"INSERT INTO {lines.lines} SELECT %(base)s + h.i, h.line_hash FROM ({h}) h", params)
        return set()
    rows = conn.execute(f"""
        WITH h AS MATERIALIZED ({h}),
        k AS MATERIALIZED (     -- per line an index-only probe (OFFSET 0: never a hash of the whole store)
            SELECT h.i, l.key_hash FROM h CROSS JOIN LATERAL (
                SELECT l.key_hash, l.import_record_id FROM {TABLE} l
                WHERE l.stage = %(stage)s AND l.line_hash = h.line_hash AND l.import_record_id > %(floor)s
                OFFSET 0) l
            WHERE l.import_record_id <> ALL(%(gone)s::bigint[])
              AND l.import_record_id = (SELECT max(n.import_record_id) FROM {TABLE} n
                                        WHERE n.stage = %(stage)s AND n.key_hash = l.key_hash)),
        known AS (INSERT INTO {lines.known_table} SELECT %(base)s + k.i, k.key_hash FROM k),
        unknown AS (INSERT INTO {lines.lines} SELECT %(base)s + h.i, h.line_hash FROM h WHERE h.i NOT IN (SELECT i FROM k))
        SELECT i FROM k""", params, binary=True).fetchall()
    return {i for (i,) in rows}


def scan(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, *, start_offset: int | None = None,
         first_row_number: int = 2, skip: bool = True):
    """One pass over the file's lines (from `start_offset`): hash each, look them up a chunk at a
    time, write the unknown ones (with their row numbers) to a private temporary file. Returns
    (Lines, the temporary file or None). Lines.hashed is False when the lines cannot stand for
    records (a blank line, a record spanning lines, a count that differs from the reader's): then
    nothing is skipped and no line hash is kept."""
    lines = Lines(stage)
    _create(conn, lines)
    if info.format != "csv" or info.data is None:
        return lines, None
    key = context_key(conn, stage, info, options)
    start = info.header_end if start_offset is None else start_offset
    spool = tempfile.TemporaryFile()      # 0600, unlinked at once: the lines to read (personal data)
    row = first_row_number - 1            # staging row_number of the first line
    pending: list[bytes] = []
    digests: list[bytes] = []
    ok = True
    lookup = skip and ENABLED
    floor, gone = vouching(conn, stage) if lookup else (0, [])

    def flush() -> None:
        base = row - len(pending)
        known = _flush(conn, lines, base, digests, lookup, floor, gone) if pending else set()
        write = spool.write
        for i, line in enumerate(pending):
            if i not in known:
                write(b"%d," % (base + i) + line + b"\n")
        lines.known += len(known)
        pending.clear()
        digests.clear()

    stream = info.data.reader([(start, info.data_end)])
    rest = b""
    blake2b = hashlib.blake2b
    while ok:
        block = stream.read(1 << 20)
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for line in parts:
            line = line.removesuffix(b"\r")
            if not line or line.count(b'"') % 2:
                ok = False
                break
            pending.append(line)
            digests.append(blake2b(line, digest_size=16, key=key).digest())
            row += 1
        if len(pending) >= LOOKUP_LINES:
            flush()
    line = rest.removesuffix(b"\r")
    if ok and line:
        if line.count(b'"') % 2:
            ok = False
        else:
            pending.append(line)
            digests.append(blake2b(line, digest_size=16, key=key).digest())
            row += 1
    if ok:
        flush()
    expected = info.rows if start_offset is None else (info.rows - (first_row_number - 2))
    lines.total = row - (first_row_number - 1)
    if not ok or lines.total != expected:
        spool.close()
        _create(conn, lines)
        return Lines(stage), None
    lines.hashed = True
    spool.flush()
    return lines, spool


def load_unknown(conn: psycopg.Connection, info: FileInfo, table: str, model: type[pa.DataFrameModel], rejects,
                 spool, *, prepare=None, chunk_rows: int) -> int:
    """Validate (Pandera, lazily, every bad cell a reject numbered as in the whole file) and stage the
    lines of the temporary file: `<row_number>,<the line as in the file>`. Returns the rows staged."""
    from hrms_pipelines.imports.files.load import _privacy_table, _staging_columns, validate_chunk

    rejects.attach(info, _privacy_table(model))
    columns = _staging_columns(info)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (row_number bigint, {}) ON COMMIT DROP").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)))
    rows = 0
    spool.seek(0)
    reader = pd.read_csv(spool, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8", chunksize=chunk_rows,
                         header=None, names=["__row_number", *info.columns], index_col=False, engine="c")
    with reader, warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        for chunk in reader:
            chunk.index = chunk.pop("__row_number").astype("int64").to_numpy() - 1
            rows += len(chunk)
            validate_chunk(info, chunk, model, rejects, prepare=prepare)
    spool.seek(0)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, ["row_number", *columns])))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        while block := spool.read(1 << 20):
            copy.write(block)
    spool.close()
    return rows


def stage_keys(conn: psycopg.Connection, lines: Lines, table: str, key_sql: str) -> None:
    """The natural key (md5) of every staged row, by row number."""
    conn.execute(f"DROP TABLE IF EXISTS {lines.keys}")
    conn.execute(f"CREATE TEMP TABLE {lines.keys} ON COMMIT DROP AS "
                 f"SELECT s.row_number, decode(md5({key_sql}), 'hex') AS key_hash FROM {table} s")


def repeats_a_known_key(conn: psycopg.Connection, lines: Lines) -> int:
    """Rows of the file sharing a key with a line skipped as known (the full path rejects the repeat)."""
    if not lines.known:
        return 0
    return conn.execute(f"""
        SELECT count(*) FROM (SELECT key_hash FROM (SELECT key_hash, true AS known FROM {lines.known_table}
                                                   UNION ALL SELECT key_hash, false FROM {lines.keys}) x
                              GROUP BY key_hash HAVING count(*) > 1 AND bool_or(known)) d""").fetchone()[0]


def record(conn: psycopg.Connection, lines: Lines, record_id: int, unwritten: str | None) -> int:
    """Remember the staged rows the stage left equal to their lines (every staged row but those of
    `unwritten`, SQL giving row numbers): their key, and their line hash when the lines were hashed."""
    line, join = ("l.line_hash", f"LEFT JOIN {lines.lines} l ON l.row_number = k.row_number") if lines.hashed else ("NULL::bytea", "")
    where = f"AND k.row_number NOT IN ({unwritten})" if unwritten else ""
    return conn.execute(f"""
        INSERT INTO {TABLE} (stage, import_record_id, key_hash, line_hash)
        SELECT %s, %s, k.key_hash, {line} FROM {lines.keys} k {join} WHERE k.key_hash IS NOT NULL {where}""",
        [lines.stage, record_id]).rowcount
