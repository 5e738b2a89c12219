"""The structure of a CSV file, checked in the same single streaming pass as its sha256.

CSV as PostgreSQL's COPY reads it (RFC 4180): cells separated by commas, records by LF or CRLF, a
double quote opens and closes quoting anywhere, a doubled one inside quotes is a quote. The scan is
vectorised with numpy over blocks, looking only at the positions of quotes, commas and line
ends (quote parity by counting the quotes before a position), so it costs a few milliseconds per MiB and keeps only counters between blocks. It finds, with their row (the record
number a spreadsheet shows, header = row 1) and column:

- rows with too few or too many cells (against the header), and an unclosed quote;
- a double quote inside a cell that is not quoted as a whole, or text after a closing quote (pandas
  and PostgreSQL would read such a cell differently, so it is refused rather than guessed);
- blank rows (empty, or nothing but commas): trailing ones are dropped, ones inside are refused;
- NUL bytes, carriage returns that end nothing, mixed LF/CRLF line ends;
- a cell larger than the cell limit, or more rows than the row limit (refused at once, mid-stream);
- where the rows end (so the two readers stream the same bytes: trailing blank rows left out), and
  for append-aware imports whether a given byte offset falls on a row boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hrms_pipelines.imports.files import limits as limits_mod

QUOTE, COMMA, LF, CR = 34, 44, 10, 13
HEADER_LIMIT = 64 * 1024
SUB_BLOCK = 256 * 1024
LISTED = 20


@dataclass
class Listed:
    """The first few occurrences of a problem, and how many there were."""

    items: list = field(default_factory=list)
    count: int = 0

    def add(self, *items) -> None:
        self.count += len(items)
        room = LISTED - len(self.items)
        if room > 0:
            self.items.extend(items[:room])


class CellTooLarge(Exception):
    def __init__(self, row: int, column: int, found: int):
        super().__init__(row, column, found)
        self.row, self.column, self.found = row, column, found


class TooManyRows(Exception):
    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class CsvScan:
    """Feed it the blocks of the file from `start` (after a BOM) on; then `finish()`."""

    def __init__(self, start: int, limits: limits_mod.Limits, prefix_size: int | None = None):
        self.start = start
        self.limits = limits
        self.pos = start
        self.parity = 0
        self.prev = LF
        self.records = 0               # complete records so far (header and blank ones included)
        self.rec_start = start
        self.rec_commas = 0
        self.rec_cr = 0
        self.cell_start = start
        self.header_done = False
        self.header_commas = -1
        self.header_end = start
        self.data_rows = 0             # non-blank records after the header
        self.data_end = start          # end of the last non-blank record (its line end included)
        self.pending_blank: list[int] = []
        self.pending_blank_count = 0
        self.blank_inside = Listed()
        self.cells = Listed()          # (row, cells found)
        self.quotes = Listed()         # (row, column index)
        self.nuls = Listed()           # (row, column index, byte offset)
        self.lone_cr = Listed()        # (row, column index)
        self.line_ends = {"CRLF": Listed(), "LF": Listed()}
        self.last_open: tuple[int, int] | None = None
        self._pending_close: int | None = None
        self._pending_cr: int | None = None
        self.prefix_size = prefix_size
        self.prefix_boundary: bool | None = None
        self.prefix_records: int | None = None

    # -- positions ---------------------------------------------------------------------------
    def _where(self, i: int, nl_pos: np.ndarray, comma_pos: np.ndarray) -> tuple[int, int]:
        """(spreadsheet row, 0-based column index) of block-relative offset i."""
        i = max(i, 0)
        k = int(np.searchsorted(nl_pos, i))
        row = self.records + k + 1
        before = int(np.searchsorted(comma_pos, i))
        if k == 0:
            return row, self.rec_commas + before
        return row, before - int(np.searchsorted(comma_pos, nl_pos[k - 1]))

    # -- one block ---------------------------------------------------------------------------
    def feed(self, block: bytes) -> None:
        view = memoryview(block)
        for at in range(0, len(view), SUB_BLOCK):     # numpy temporaries stay a few times SUB_BLOCK
            self._feed(view[at: at + SUB_BLOCK])

    def _feed(self, block) -> None:
        """Sparse: only the positions of quotes, commas, LFs and CRs are looked at; whether one is
        inside quotes is the parity of the quotes before it (searchsorted)."""
        a = np.frombuffer(block, dtype=np.uint8)
        n = a.size
        if n == 0:
            return
        q = np.flatnonzero(a == QUOTE)

        def outside(positions: np.ndarray) -> np.ndarray:
            if not q.size:
                return positions if not self.parity else positions[:0]
            inside = (np.searchsorted(q, positions, side="right") & 1) ^ self.parity
            return positions[inside == 0]

        delim = outside(np.flatnonzero((a == LF) | (a == COMMA)))    # separators, in order
        is_nl = a[delim] == LF
        nl_pos = delim[is_nl]
        comma_pos = delim[~is_nl]
        cr_all = np.flatnonzero(a == CR)
        where = lambda i: self._where(int(i), nl_pos, comma_pos)  # noqa: E731

        # checks deferred from the previous block's last byte
        if self._pending_close is not None:
            if a[0] not in (COMMA, LF, CR, QUOTE):
                self.quotes.add(where(0))
            self._pending_close = None
        if self._pending_cr is not None:
            if a[0] != LF:
                self.lone_cr.add(where(0))
            self._pending_cr = None

        # quotes: an opening one must start a cell (or be the second of a doubled pair), a closing
        # one must end it (or be the first of a pair)
        if q.size:
            after_parity = (np.arange(1, q.size + 1) & 1) ^ self.parity
            opening = q[after_parity == 1]
            closing = q[after_parity == 0]
            if opening.size:
                before = np.where(opening > 0, a[np.maximum(opening - 1, 0)], self.prev)
                bad = opening[~np.isin(before, (COMMA, LF, QUOTE))]
                if bad.size:
                    self.quotes.add(*[where(i) for i in bad[:LISTED]])
                    self.quotes.count += max(0, bad.size - LISTED)
                self.last_open = where(opening[-1])
            if closing.size:
                if closing[-1] == n - 1:
                    self._pending_close = self.pos + n - 1
                    closing = closing[:-1]
                bad = closing[~np.isin(a[closing + 1], (COMMA, LF, CR, QUOTE))]
                if bad.size:
                    self.quotes.add(*[where(i) for i in bad[:LISTED]])
                    self.quotes.count += max(0, bad.size - LISTED)

        # carriage returns outside quotes must end a line (CRLF)
        cr = outside(cr_all)
        if cr.size:
            if cr[-1] == n - 1:
                self._pending_cr = self.pos + n - 1
                cr = cr[:-1]
            bad = cr[a[cr + 1] != LF]
            if bad.size:
                self.lone_cr.add(*[where(i) for i in bad[:LISTED]])

        # NUL bytes
        if 0 in a:
            nul = np.flatnonzero(a == 0)
            self.nuls.add(*[(*where(i), self.pos + int(i)) for i in nul[:LISTED]])
            self.nuls.count += max(0, nul.size - LISTED)

        # records ending in this block: cells (commas + 1), length, CRs -> blank or not
        commas_before = np.searchsorted(comma_pos, nl_pos)
        commas = np.diff(commas_before, prepend=0)
        crs_before = np.searchsorted(cr_all, nl_pos)
        crs = np.diff(crs_before, prepend=0)
        if nl_pos.size:
            commas[0] += self.rec_commas
            crs[0] += self.rec_cr
        starts = np.concatenate(([self.rec_start], nl_pos[:-1] + 1 + self.pos)) if nl_pos.size else nl_pos
        lengths = nl_pos + self.pos - starts
        blanks = lengths == commas + crs

        # the header first: the limits below name columns by it
        if not self.header_done and nl_pos.size:
            self._header_complete(int(commas[0]), bool(blanks[0]), self.pos + int(nl_pos[0]) + 1)

        # cell sizes (bytes between separators, as written in the file)
        limit = self.limits.cell_bytes
        first = self.cell_start - self.pos
        if delim.size:
            cell_starts = np.concatenate(([first], delim[:-1] + 1))
            sizes = delim - cell_starts
            over = np.flatnonzero(sizes > limit)
            if over.size:
                k = int(over[0])
                row, column = where(cell_starts[k])
                raise CellTooLarge(row, column, int(sizes[k]))
            tail_start = int(delim[-1]) + 1
        else:
            tail_start = first
        if n - tail_start > limit:
            row, column = where(tail_start)
            raise CellTooLarge(row, column, n - tail_start)

        if nl_pos.size:
            index = self.records + np.arange(nl_pos.size)
            ending_cr = np.where(nl_pos > 0, a[np.maximum(nl_pos - 1, 0)], self.prev) == CR
            self._line_ends(index, ending_cr)
            self._records(index, commas, blanks, nl_pos + 1 + self.pos)
            self.rec_commas = int(comma_pos.size - commas_before[-1])
            self.rec_cr = int(cr_all.size - crs_before[-1])
            self.rec_start = self.pos + int(nl_pos[-1]) + 1
        else:
            if not self.header_done and self.pos + n - self.start > HEADER_LIMIT:
                raise _HeaderTooLong(self.pos + n - self.start)
            self.rec_commas += int(comma_pos.size)
            self.rec_cr += int(cr_all.size)

        # prefix of an append-aware import: does byte prefix_size - 1 end a row?
        if self.prefix_size is not None and self.pos < self.prefix_size <= self.pos + n:
            i = self.prefix_size - 1 - self.pos
            at = int(np.searchsorted(nl_pos, i))
            self.prefix_boundary = at < nl_pos.size and int(nl_pos[at]) == i
            self.prefix_records = self.records + at + (1 if self.prefix_boundary else 0)

        self.records += int(nl_pos.size)
        self.cell_start = self.pos + tail_start
        self.parity ^= int(q.size & 1)
        self.prev = int(a[-1])
        self.pos += n

    def _header_complete(self, commas: int, blank: bool, end: int) -> None:
        self.header_done = True
        self.header_commas = commas
        self.header_end = end
        if blank:
            raise _BlankHeader()
        if end - self.start > HEADER_LIMIT:
            raise _HeaderTooLong(end - self.start)

    def _line_ends(self, index: np.ndarray, ending_cr: np.ndarray) -> None:
        for style, mask in (("CRLF", ending_cr), ("LF", ~ending_cr)):
            rows = index[mask]
            if rows.size:
                self.line_ends[style].add(*[int(r) + 1 for r in rows[:LISTED]])
                self.line_ends[style].count += max(0, rows.size - LISTED)

    def _records(self, index: np.ndarray, commas: np.ndarray, blanks: np.ndarray, ends: np.ndarray) -> None:
        data = index > 0
        blank = blanks & data
        filled = ~blanks & data
        wrong = filled & (commas != self.header_commas)
        bad = np.flatnonzero(wrong)
        if bad.size:
            self.cells.add(*[(int(index[i]) + 1, int(commas[i]) + 1) for i in bad[:LISTED]])
            self.cells.count += max(0, bad.size - LISTED)
        filled_at = np.flatnonzero(filled)
        if filled_at.size:
            last = int(filled_at[-1])
            self._inside(self.pending_blank, self.pending_blank_count)
            inside = np.flatnonzero(blank[:last])
            self._inside([int(index[i]) + 1 for i in inside[:LISTED]], int(inside.size))
            after = np.flatnonzero(blank[last + 1:]) + last + 1
            self.pending_blank = [int(index[i]) + 1 for i in after[:LISTED]]
            self.pending_blank_count = int(after.size)
            self.data_end = int(ends[last])
            self.data_rows += int(filled_at.size)
            if self.data_rows > self.limits.rows:
                raise TooManyRows(int(index[filled_at[self.limits.rows - (self.data_rows - filled_at.size)]]) + 1)
        else:
            rows = np.flatnonzero(blank)
            room = LISTED - len(self.pending_blank)
            self.pending_blank += [int(index[i]) + 1 for i in rows[:max(room, 0)]]
            self.pending_blank_count += int(rows.size)

    def _inside(self, rows: list[int], count: int) -> None:
        if count:
            self.blank_inside.add(*rows)
            self.blank_inside.count += count - len(rows)

    # -- end of file -------------------------------------------------------------------------
    def finish(self) -> None:
        if self._pending_cr is not None:
            self.lone_cr.add((self.records + 1, self.rec_commas))
        self.unclosed = self.parity == 1
        if self.pos > self.rec_start and not self.unclosed:   # a last record without a line end
            index = np.array([self.records])
            commas = np.array([self.rec_commas])
            blanks = np.array([self.pos - self.rec_start == self.rec_commas + self.rec_cr])
            if not self.header_done:
                self._header_complete(self.rec_commas, bool(blanks[0]), self.pos)
            self._records(index, commas, blanks, np.array([self.pos]))
            self.records += 1
        if self.prefix_size is not None and self.prefix_size == self.pos and self.prefix_boundary is None:
            self.prefix_boundary = False
        if self.prefix_size is not None and self.prefix_boundary is False:
            self.prefix_records = None


class _BlankHeader(Exception):
    pass


class _HeaderTooLong(Exception):
    def __init__(self, size: int):
        super().__init__(size)
        self.size = size
