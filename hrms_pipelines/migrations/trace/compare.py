"""The static findings beside the trace, and the trace's own findings.

Every lock rule says what it expects PostgreSQL to do (Rule.predicts: a lock on an existing table,
and the work done under it). For each static finding on a traced statement the trace answers:

- confirmed: the lock (or a stronger one) was taken on an existing table, and the predicted
  rewrite, scan or index build happened;
- harmless: the lock was taken but nothing was rewritten or read: a catalogue change held for
  milliseconds (varchar(n) -> text). The finding is kept, as a WARNING saying so;
- mismatch: the predicted lock was not taken (the trace says what was);
- not traced: the statement did not run (a migration already applied, a failure before it).

What the trace shows and no rule predicted fails like DANGER, at the statement's file and line:
a rewrite of an existing table or index (trace-rewrite), a whole-table read under a lock that blocks
writes (trace-locked-scan), and a statement that fails on a copy of the target (trace-failed). An
ACCESS EXCLUSIVE lock for a catalogue-only change is shown in the lock table but is no finding: it is
held for milliseconds, and waits at most the runner's lock_timeout (require-lock-timeout reports a
file that has none).
"""

from __future__ import annotations

from pathlib import Path

from hrms_pipelines.migrations.check import engine
from hrms_pipelines.migrations.check.analyzer import Report, mode_of
from hrms_pipelines.migrations.check.model import Finding, Severity
from hrms_pipelines.migrations.check.rules import ALL
from hrms_pipelines.migrations.check.sizes import TableSizes
from hrms_pipelines.migrations.trace import locks as lockmodes
from hrms_pipelines.migrations.trace.model import StatementTrace, TraceResult

WORK_NAMES = {"rewrite": "rewrite", "scan": "whole-table read", "build": "index build"}


def _did(trace: StatementTrace, work: str | None) -> bool:
    if work is None:
        return True
    if work == "rewrite":
        return bool(trace.rewritten)
    if work == "scan":
        return bool(trace.scanned or trace.rewritten)
    return bool(trace.created_indexes or trace.scanned or trace.rewritten)  # build


def _observed(trace: StatementTrace) -> str:
    """The strongest lock on each existing relation (taken here or held since an earlier statement of the
    transaction), the work done, the time."""
    best: dict[str, object] = {}
    for lock in trace.on_existing():
        if lock.relation not in best or lockmodes.strength(lock.mode) > lockmodes.strength(best[lock.relation].mode):
            best[lock.relation] = lock
    held = [lock.describe() + ("" if lock.new else " (held since an earlier statement)") for lock in best.values()]
    return "; ".join((held or ["no lock on an existing table"]) + trace.work()) + f" ({trace.duration_ms:.1f} ms)"


def judge(finding: Finding, trace: StatementTrace | None) -> None:
    """Set `finding.trace`; a harmless one becomes a WARNING that says why."""
    prediction = ALL[finding.rule].predicts if finding.rule in ALL else None
    if prediction is None:
        return
    if trace is None:
        finding.trace = {"status": "not traced", "observed": "the statement was not rehearsed"}
        return
    if trace.error:
        finding.trace = {"status": "not traced", "observed": f"the statement failed: {trace.error}"}
        return
    strongest = trace.strongest_existing()
    took_lock = strongest is not None and lockmodes.strength(strongest.mode) >= lockmodes.strength(prediction.lock)
    did_work = _did(trace, prediction.work)
    observed = _observed(trace)
    if took_lock and did_work:
        finding.trace = {"status": "confirmed", "observed": observed}
    elif took_lock:
        finding.trace = {"status": "harmless", "observed": observed}
        finding.severity = Severity.WARNING
        finding.message += (f" Trace: harmless here, no {WORK_NAMES.get(prediction.work, prediction.work)}, a catalogue "
                            f"change: {observed}.")
    else:
        finding.trace = {"status": "mismatch", "observed": observed,
                         "predicted": f"{lockmodes.sql_name(prediction.lock)}"
                                      + (f" and a {WORK_NAMES[prediction.work]}" if prediction.work else "")}


def _predicted_work(findings: list[Finding]) -> set[str]:
    works = set()
    for f in findings:
        rule = ALL.get(f.rule)
        if rule and rule.predicts and rule.predicts.work:
            works.add(rule.predicts.work)
    return works


def _statement_of(traces: list[StatementTrace], finding: Finding) -> StatementTrace | None:
    for trace in traces:
        if trace.path == finding.path and trace.line <= finding.line <= trace.end_line:
            return trace
    return None


def merge(report: Report, result: TraceResult, *, sizes: TableSizes, files_by_path: dict[str, Path],
          traced_files: set[str]) -> None:
    """Judge the report's findings by the trace and add the trace's own findings to the report."""
    by_file: dict[str, list[StatementTrace]] = {}
    for trace in result.statements:
        by_file.setdefault(trace.path, []).append(trace)
    on_statement: dict[int, list[Finding]] = {}
    for finding in report.findings:
        if finding.path not in traced_files:
            continue
        trace = _statement_of(by_file.get(finding.path, []), finding)
        judge(finding, trace)
        if trace is not None:
            on_statement.setdefault(id(trace), []).append(finding)
    new: list[Finding] = []
    for trace in result.statements:
        predicted = _predicted_work(on_statement.get(id(trace), []))
        new += _unpredicted(trace, predicted, sizes)
    if result.failure and not any(f.rule == "trace-failed" for f in new):
        label = result.migrations[-1] if result.migrations else "?"
        path = next((t.path for t in reversed(result.statements)), label)
        new.append(_finding("trace-failed", path, 1, f"{result.failure.splitlines()[0]}", "", label))
    _suppress(new, files_by_path, sizes)
    report.findings.extend(new)
    report.findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule))


def _unpredicted(trace: StatementTrace, predicted: set[str], sizes: TableSizes) -> list[Finding]:
    found = []
    if trace.error:
        found.append(_finding("trace-failed", trace.path, trace.line, f"PostgreSQL says: {trace.error}", trace.sql,
                              trace.migration))
        return found
    if trace.rewritten and "rewrite" not in predicted:
        found.append(_finding("trace-rewrite", trace.path, trace.line,
                              "Rewrote " + ", ".join(_size(r, sizes) for r in trace.rewritten) + " under "
                              + (trace.strongest_existing().describe() if trace.strongest_existing() else "its lock") + ".",
                              trace.sql, trace.migration))
    write_blocked = {lock.relation for lock in trace.on_existing() if lockmodes.blocks_writes(lock.mode)}
    locked_scans = [t for t in trace.scanned or () if t in write_blocked and t not in trace.rewritten]
    if locked_scans and not predicted & {"scan", "build", "rewrite"}:
        modes = {lock.relation: lockmodes.sql_name(lock.mode) for lock in trace.on_existing()}
        found.append(_finding("trace-locked-scan", trace.path, trace.line,
                              "Read every row of " + ", ".join(f"{_size(t, sizes)} under {modes.get(t, 'a lock')}"
                                                              for t in locked_scans) + ".",
                              trace.sql, trace.migration))
    return found


def _size(table: str, sizes: TableSizes) -> str:
    rows = sizes.rows(table)
    if rows is None:
        return f"{table} (size unknown)"
    return f"{table} (~{rows:,} rows{', large' if sizes.is_large(table) else ''})"


def _finding(rule_id: str, path: str, line: int, detail: str, statement: str, migration: str) -> Finding:
    rule = ALL[rule_id]
    return Finding(path=path, line=line, column=1, rule=rule.id, severity=rule.severity,
                   message=f"{rule.why} {detail}", fix=rule.fix, statement=statement, migration=migration)


def _suppress(findings: list[Finding], files_by_path: dict[str, Path], sizes: TableSizes) -> None:
    """`-- hrms:allow trace-rewrite reason: ...` on the statement suppresses a trace finding."""
    parsed: dict[str, engine.FileResult] = {}
    for finding in findings:
        path = files_by_path.get(finding.path)
        if path is None or finding.rule == "trace-failed":
            continue
        if finding.path not in parsed:
            data = path.read_bytes()
            parsed[finding.path] = engine.analyze_text(finding.path, data, mode=mode_of(data), sizes=sizes)
        result = parsed[finding.path]
        offset = next((s.start for s in result.statements if result.position(s.start)[0] == finding.line), None)
        if offset is not None:
            finding.suppressed = engine.suppression_reason(result, finding.rule, offset)
