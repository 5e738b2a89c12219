"""Known lines: a full export costs what changed, whatever came before it (issue 19).

Every row a successful users or history import leaves equal to its CSV line (inserted, updated or
found unchanged) is remembered in hrms.imports_linehash (migrations imports/0004, 0005): the natural
key of the row and a 16-byte blake2b of the raw line bytes, prefixed with a 32-byte context key made
of what gives them meaning -- the stage, the format (CSV), the header line, the options recorded
with the import, and an epoch of the earlier stages (their resets, and for history the ladder updates
its summaries are written from). The store holds one entry per key: an import's entry for a key
replaces the older one (only the newest entry of a key could ever vouch).

The next import of a file of that kind reads the stage's vouching entries once (linestore: one
statement, sorted in numpy) and its file once: each line is hashed and looked up before anything is
parsed or validated. A line is **known** -- skipped, counted unchanged -- only when its hash is the
line hash of its key's entry and that entry's import record still vouches (shortcuts.vouches: no undo
or restore since). So:

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

import numpy as np
import pandas as pd
import pandera.pandas as pa
import psycopg
from psycopg import sql

from hrms_pipelines.imports import linestore, shortcuts

if TYPE_CHECKING:
    from hrms_pipelines.imports.reader import FileInfo

TABLE = linestore.TABLE
ENABLED = True            # internal switch: False reads every line (the store is still written)
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
    known_rows: np.ndarray | None = None      # their staging row numbers
    known_at: np.ndarray | None = None        # the entries they matched (positions in store)
    store: linestore.Vouching = linestore.EMPTY
    known_written: bool = False               # {known_table} written (known_table())

    @property
    def lines(self) -> str:
        return f"_lh_lines_{self.stage}"      # (row_number, line_hash) of the lines staged

    @property
    def known_table(self) -> str:
        return f"_lh_known_{self.stage}"      # (row_number, key_hash) of the lines skipped: known_table()

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
    """The 32 bytes every line of this file is hashed after (blake2b(context + line), 16 bytes)."""
    header = bytes(info.data.reader([(info.data_start, info.header_end)]).read()).rstrip(b"\r\n")
    meaning = json.dumps({"stage": stage, "format": info.format, "options": options, "epoch": epoch(conn, stage)},
                         sort_keys=True, default=str).encode() + b"\n" + header
    return hashlib.blake2b(meaning, digest_size=32).digest()


def _create(conn: psycopg.Connection, lines: Lines) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {lines.lines}")
    conn.execute(f"CREATE TEMP TABLE {lines.lines} (row_number bigint, line_hash bytea) ON COMMIT DROP")


def vouching(conn: psycopg.Connection, stage: str) -> tuple[int, list[int]]:
    """(floor, gone): the line store's entries of `stage` vouch when written by a record above the
    floor -- the newest reset's through_record (shortcuts.vouches: a reset takes back every record up
    to it) -- and not by a record that no longer succeeded (undone: its undo reset the stage anyway)."""
    floor = conn.execute(f"SELECT coalesce(max(through_record), 0) FROM {shortcuts.TABLE} WHERE stage = %s", [stage]).fetchone()[0]
    gone = [r for (r,) in conn.execute("SELECT id FROM hrms.imports_importrecord WHERE stage = %s AND id > %s "
                                       "AND outcome NOT IN ('succeeded', 'running')", [stage, floor]).fetchall()]
    return floor, gone


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)      # signature, flags, header extension length
_COPY_ROWS = 100_000


def _copy_pairs(conn: psycopg.Connection, table: str, column: str, rows: np.ndarray, values: np.ndarray) -> None:
    """COPY (row_number, <column> 16-byte bytea) rows in PostgreSQL's binary format, built in numpy."""
    tuple_ = np.dtype([("n", ">i2"), ("l1", ">i4"), ("row", ">i8"), ("l2", ">i4"), ("value", "S16")])
    with conn.cursor() as cur, cur.copy(f"COPY {table} (row_number, {column}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(_COPY_HEADER)
        for at in range(0, len(rows), _COPY_ROWS):
            block = np.empty(min(_COPY_ROWS, len(rows) - at), dtype=tuple_)
            block["n"], block["l1"], block["l2"] = 2, 8, 16
            block["row"] = rows[at:at + len(block)]
            block["value"] = values[at:at + len(block)]
            copy.write(block.tobytes())
        copy.write(b"\xff\xff")


class _Pass:
    """The line pass's state: the vouching entries, and per block which lines are known."""

    def __init__(self, store: linestore.Vouching, key: bytes, row: int, spool):
        self.store, self.key, self.row, self.spool = store, key, row, spool
        self.known_rows: list[np.ndarray] = []
        self.known_at: list[np.ndarray] = []
        self.unknown_rows: list[np.ndarray] = []
        self.unknown_digests: list[np.ndarray] = []

    def take(self, parts: list[bytes]) -> None:
        """Complete lines, in file order: hash each (blake2b of the context key and the line), look
        them up, spool the unknown ones with their row numbers."""
        base, key, blake2b = self.row, self.key, hashlib.blake2b
        self.row += len(parts)
        digests = b"".join([blake2b(key + line, digest_size=16).digest() for line in parts])
        at = self.store.find(digests)
        hit = at >= 0
        miss = np.flatnonzero(~hit)
        if len(miss) < len(parts):
            known = np.flatnonzero(hit)
            self.known_rows.append(known + base)
            self.known_at.append(at[known])
        self.unknown_rows.append(miss + base)
        self.unknown_digests.append(np.frombuffer(digests, dtype="S16")[miss])
        if self.spool is not None and len(miss):
            picked = parts if len(miss) == len(parts) else [parts[i] for i in miss.tolist()]
            rows = range(base, base + len(parts)) if len(miss) == len(parts) else (miss + base).tolist()
            self.spool.write(b"".join([b"%d,%b\n" % (r, line) for r, line in zip(rows, picked)]))


def _split(body: bytes) -> list[bytes] | None:
    """The lines of a block of whole lines, or None when they cannot stand for records (a blank line,
    an odd number of quotes on a line: a quoted field spanning lines)."""
    parts = body.split(b"\n")
    if b"\r" in body:
        parts = [p.removesuffix(b"\r") for p in parts]
    if b"" in parts:
        return None
    if b'"' in body:        # the quotes per line, counted in numpy: a Python loop costs more than the hashes
        data = np.frombuffer(body, dtype=np.uint8)
        line_of_quote = np.searchsorted(np.flatnonzero(data == 10), np.flatnonzero(data == 34))
        if (np.bincount(line_of_quote) % 2).any():
            return None
    return parts


def scan(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, *, start_offset: int | None = None,
         first_row_number: int = 2, skip: bool = True):
    """One pass over the file's lines (from `start_offset`): hash each, look them up against the
    stage's vouching entries (read once: linestore), write the unknown ones (with their row numbers)
    to a private temporary file. Returns (Lines, the temporary file or None). Lines.hashed is False
    when the lines cannot stand for records (a blank line, a record spanning lines, a count that
    differs from the reader's): then nothing is skipped and no line hash is kept."""
    lines = Lines(stage)
    _create(conn, lines)
    if info.format != "csv" or info.data is None:
        return lines, None
    key = context_key(conn, stage, info, options)
    store = linestore.load(conn, stage, *vouching(conn, stage)) if skip and ENABLED else linestore.EMPTY
    # 0600, unlinked at once: the lines to read (personal data); none when no line can be known
    spool = tempfile.TemporaryFile() if len(store) else None
    state = _Pass(store, key, first_row_number - 1, spool)      # staging row_number of the first line
    ok = True
    stream = info.data.reader([(info.header_end if start_offset is None else start_offset, info.data_end)])
    rest = b""
    while ok and (block := stream.read(1 << 20)):
        data = rest + block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        parts = _split(data[:cut])
        if parts is None:
            ok = False
        else:
            state.take(parts)
    if ok and rest.removesuffix(b"\r"):
        parts = _split(rest)
        ok = parts is not None
        if ok:
            state.take(parts)
    expected = info.rows if start_offset is None else (info.rows - (first_row_number - 2))
    lines.total = state.row - (first_row_number - 1)
    if not ok or lines.total != expected:
        if spool is not None:
            spool.close()
        return Lines(stage), None
    lines.hashed = True
    if state.unknown_rows:
        _copy_pairs(conn, lines.lines, "line_hash", np.concatenate(state.unknown_rows), np.concatenate(state.unknown_digests))
    if state.known_rows:
        lines.known_rows = np.concatenate(state.known_rows)
        lines.known_at = np.concatenate(state.known_at)
        lines.known = len(lines.known_rows)
        lines.store = store
    if spool is not None:
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


def known_table(conn: psycopg.Connection, lines: Lines) -> str:
    """A temporary table (row_number, key_hash) of the lines skipped as known, written the first time
    it is asked for (only the users stage's cycle warning needs it): their hashes COPYed, their keys
    joined from the store (one entry per key, so one per line hash)."""
    if not lines.known_written:
        conn.execute(f"DROP TABLE IF EXISTS {lines.known_table}")
        conn.execute(f"CREATE TEMP TABLE {lines.known_table} (row_number bigint, key_hash bytea) ON COMMIT DROP")
        if lines.known:
            found = f"_lh_found_{lines.stage}"
            conn.execute(f"DROP TABLE IF EXISTS {found}")
            conn.execute(f"CREATE TEMP TABLE {found} (row_number bigint, line_hash bytea) ON COMMIT DROP")
            _copy_pairs(conn, found, "line_hash", lines.known_rows, lines.store.hashes(lines.known_at))
            conn.execute(f"INSERT INTO {lines.known_table} SELECT f.row_number, s.key_hash FROM {found} f "
                         f"JOIN {TABLE} s ON s.stage = %s AND s.line_hash = f.line_hash", [lines.stage])
        lines.known_written = True
    return lines.known_table


def repeats_a_known_key(conn: psycopg.Connection, lines: Lines) -> int:
    """Keys of the file shared by a line skipped as known and another line (the full path rejects the
    repeat). The store holds one entry per key (imports/0005), so two known lines share a key only
    when they found the same entry; a staged row shares one when its key's entry was found."""
    if not lines.known:
        return 0
    found = np.bincount(lines.known_at, minlength=len(lines.store))
    staged = conn.execute(f"SELECT string_agg(s.line_hash, ''::bytea) FROM {lines.keys} k JOIN {TABLE} s "
                          "ON s.stage = %s AND s.key_hash = k.key_hash WHERE s.line_hash IS NOT NULL",
                          [lines.stage], binary=True).fetchone()[0]
    at = lines.store.find(staged) if staged else np.empty(0, np.int64)
    at = at[at >= 0]
    return int((found > 1).sum()) + int(len(np.unique(at[found[at] > 0])))


def record(conn: psycopg.Connection, lines: Lines, record_id: int, unwritten: str | None) -> int:
    """Remember the staged rows the stage left equal to their lines (every staged row but those of
    `unwritten`, SQL giving row numbers): their key, and their line hash when the lines were hashed.
    One entry per key (imports/0005): the entry of a key written here replaces the older one. A key
    staged twice (the stage rejects that; never trusted) is stored without a line hash."""
    line, join = ("l.line_hash", f"LEFT JOIN {lines.lines} l ON l.row_number = k.row_number") if lines.hashed else ("NULL::bytea", "")
    where = f"AND k.row_number NOT IN ({unwritten})" if unwritten else ""
    return conn.execute(f"""
        INSERT INTO {TABLE} AS e (stage, import_record_id, key_hash, line_hash)
        SELECT DISTINCT ON (k.key_hash) %(stage)s, %(record)s, k.key_hash,
               CASE WHEN count(*) OVER (PARTITION BY k.key_hash) = 1 THEN {line} END
        FROM {lines.keys} k {join} WHERE k.key_hash IS NOT NULL {where}
        ON CONFLICT (stage, key_hash) DO UPDATE SET import_record_id = excluded.import_record_id, line_hash = excluded.line_hash""",
        {"stage": lines.stage, "record": record_id}).rowcount
