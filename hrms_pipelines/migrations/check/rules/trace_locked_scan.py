"""Trace mode: every row of an existing table read while the statement held a lock that blocks writes,
which no rule predicted."""

from hrms_pipelines.migrations.check.model import Rule, Severity

RULE = Rule(
    id="trace-locked-scan",
    severity=Severity.DANGER,
    found_by_trace=True,
    why="Rehearsed on a copy of the target's schema, this statement read every row of an existing table "
        "(a sequential scan) while holding a lock on it that blocks writes: on the real table that lock is held "
        "for as long as the scan takes, and no rule predicted it.",
    fix="Give PostgreSQL the proof it looks for instead of a scan (a validated CHECK constraint for NOT NULL or "
        "a partition bound, an empty default partition), or split the change so the scan runs under SHARE UPDATE "
        "EXCLUSIVE (ADD ... NOT VALID, then VALIDATE). If it is acceptable here, say why with "
        "`-- hrms:allow trace-locked-scan reason: <why>`.",
    bad="CREATE TABLE hrms.core_auditlog_y2031m01 PARTITION OF hrms.core_auditlog\n"
        "    FOR VALUES FROM ('2031-01-01') TO ('2031-02-01');\n",
    good="ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n",
)
