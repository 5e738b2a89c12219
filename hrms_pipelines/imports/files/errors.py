"""What goes wrong with a file, and how it is shown: `ImportFileError`, `Reject`, `RejectReport`.

Messages, `str(reject)`, `RejectReport.message()` and the metadata rows (`Reject.as_row`) go to
Dagster's logs, metadata and alerts: sensitive values in them are masked by column
(`privacy.mask_cell`: '4,800.00' -> '#,###.##', emails 'a***@nhia.gov.gh'); other values are shown
as they are. The reject FILE is the analyst's worklist: the full rejected rows (every cell, verbatim),
with the row number, the problem columns and the rules, 0600 in a 0700 folder, every cell quoted and
cells that a spreadsheet would evaluate neutralised as the OWASP CSV-injection guidance says.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from hrms_pipelines import privacy, settings

SHOWN_REJECTS = 20
# OWASP, CSV Injection: cells must not begin with these; prefix them with a single quote, wrap every
# cell in double quotes and double the double quotes inside (csv.QUOTE_ALL does the last two).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
REJECT_FIXED_HEADERS = ["file", "row", "problem_columns", "rules"]


def neutralise(cell: str) -> str:
    """A cell as a spreadsheet will show it as text: "'" before a leading =, +, -, @, tab or CR."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


class ImportFileError(Exception):
    """A file that cannot be imported. The message names file, row, column, (masked) value and rule."""

    def __init__(self, message: str, rejects: RejectReport | None = None):
        super().__init__(message)
        self.rejects = rejects


@dataclass(frozen=True)
class Reject:
    file: str
    row: int | None       # the row number a spreadsheet shows (header = row 1); None for the whole file
    column: str | None
    value: str | None     # verbatim (only the reject file shows it so); shown masked everywhere else
    rule: str
    table: str | None = None   # the privacy table of the file ("history" for the history file), for masking

    @property
    def shown_value(self):
        return privacy.mask_cell(self.column, self.value, self.table)

    @property
    def shown_rule(self) -> str:
        # rules written by SQL can quote values of other rows (a management cycle names emails)
        return privacy.scrub_text(self.rule)

    def as_row(self) -> list:
        """The reject as a row of metadata (value masked)."""
        value = self.shown_value
        return [self.file, "" if self.row is None else self.row, self.column or "", "" if value is None else value,
                self.shown_rule]

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        column = f", column {self.column}" if self.column else ""
        value = f", value {settings.excerpt(self.shown_value, 60)}" if self.value is not None else ""
        return f"{self.file} {where}{column}{value}: {self.shown_rule}"


class _Spool:
    """The problems of one file, spooled to an unnamed 0600 temporary file (memory stays flat however
    many there are), kept as runs sorted by row so they can be merged back in row order."""

    def __init__(self):
        self.handle = tempfile.TemporaryFile()
        self.runs: list[list[int]] = []      # [start, end] byte ranges, each sorted by row
        self.last_row = -1

    def add(self, row: int | None, column: str | None, rule: str) -> None:
        key = -1 if row is None else row
        if not self.runs or key < self.last_row:
            self.runs.append([self.handle.tell(), self.handle.tell()])
        line = f"{key}\t{_flat(column or '')}\t{_flat(rule)}\n".encode("utf-8", "replace")
        self.handle.write(line)
        self.runs[-1][1] = self.handle.tell()
        self.last_row = key

    def _run(self, start: int, end: int) -> Iterator[tuple[int, str, str]]:
        self.handle.flush()
        fd = self.handle.fileno()
        offset, rest = start, b""
        while offset < end:
            block = os.pread(fd, min(1 << 20, end - offset), offset)
            if not block:
                break
            offset += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                row, column, rule = line.decode("utf-8").split("\t", 2)
                yield int(row), column, rule

    def problems(self) -> Iterator[tuple[int, str, str]]:
        """Every problem, in row order (file-level ones, row -1, first)."""
        return heapq.merge(*(self._run(s, e) for s, e in self.runs), key=lambda p: p[0])


def _flat(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


class RejectReport:
    """Every reject of a stage: the first few kept for logs and metadata, all of them (as full rows)
    in a CSV file for the analyst."""

    def __init__(self, path: Path | None, shown: int = SHOWN_REJECTS):
        self.path = path
        self.shown = shown
        self.first: list[Reject] = []
        self.count = 0
        self._spools: dict[str, _Spool] = {}
        self._sources: dict[str, object] = {}    # file name -> FileInfo (its open data stream)
        self._tables: dict[str, str | None] = {}
        self._written = True

    def attach(self, info, table: str | None = None) -> None:
        """The file whose rejected rows the report copies whole into the reject file (FileInfo), and
        the privacy table its columns belong to."""
        self._sources[info.name] = info
        self._tables[info.name] = table

    def add(self, reject: Reject) -> None:
        if reject.table is None and self._tables.get(reject.file):
            reject = replace(reject, table=self._tables[reject.file])
        self.count += 1
        if len(self.first) < self.shown:
            self.first.append(reject)
        if self.path is not None:
            self._spools.setdefault(reject.file, _Spool()).add(reject.row, reject.column, reject.rule)
            self._written = False

    def extend(self, rejects: Iterable[Reject]) -> None:
        for reject in rejects:
            self.add(reject)

    def close(self) -> None:
        """Write the reject file (again, if rejects came after the last write)."""
        if self.path is None or self._written or not self.count:
            return
        self._write()
        self._written = True

    def _columns(self) -> list[str]:
        columns: list[str] = []
        for name in self._spools:
            info = self._sources.get(name)
            for column in getattr(info, "columns", []):
                if column not in columns:
                    columns.append(column)
        return columns

    def _write(self) -> None:
        root = settings.rejects_dir()
        if root in self.path.parents:
            settings.private_dir(root)
        settings.private_dir(self.path.parent)
        columns = self._columns()
        with io.TextIOWrapper(settings.create_private_file(self.path), newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
            writer.writerow(REJECT_FIXED_HEADERS + [neutralise(c) for c in columns])   # source column names are input too
            for name, spool in self._spools.items():
                info = self._sources.get(name)
                targets = [columns.index(c) for c in getattr(info, "columns", [])]
                rows = info.numbered_rows() if info is not None else iter(())
                current = next(rows, None)
                for row, group in itertools.groupby(spool.problems(), key=lambda p: p[0]):
                    group = list(group)
                    cells: list[str] = []
                    if row >= 0:
                        while current is not None and current[0] < row:
                            current = next(rows, None)
                        if current is not None and current[0] == row:
                            cells = current[1]
                    out = [""] * len(columns)
                    for index, target in enumerate(targets[:len(cells)]):
                        out[target] = neutralise(cells[index])
                    problem_columns = list(dict.fromkeys(c for _, c, _ in group if c))
                    rules = "; ".join(f"{c}: {r}" if c else r for _, c, r in group)
                    writer.writerow([neutralise(name), "" if row < 0 else row, ", ".join(problem_columns),
                                     neutralise(rules)] + out)

    def message(self, what: str) -> str:
        self.close()
        lines = [f"{what}: {self.count} problem(s); nothing was written."]
        lines += [f"  - {r}" for r in self.first]
        if self.count > len(self.first):
            lines.append(f"  ... and {self.count - len(self.first)} more")
        if self.path is not None and self.count:
            lines.append(f"Every rejected row is listed in full in {self.path} (readable by the service user only)")
        lines.append("Fix the file(s) and run the import again.")
        return "\n".join(lines)
