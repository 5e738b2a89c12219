"""Trace mode: the migration fails when rehearsed on a copy of the target's schema."""

from hrms_pipelines.migrations.check.model import Rule, Severity

RULE = Rule(
    id="trace-failed",
    severity=Severity.DANGER,
    found_by_trace=True,
    why="Rehearsed on a copy of the target's schema, exactly as the runner would run it, this statement failed: "
        "the real run would fail here too (a non-transactional migration leaving the statements before it "
        "applied).",
    fix="Fix the statement for the schema the target really has (the error is PostgreSQL's own); a schema that "
        "differs from what the migrations made is drift to resolve first.",
    bad="COMMENT ON COLUMN hrms.payroll_payslip.no_such_column IS 'gross pay before tax';\n",
    good="COMMENT ON COLUMN hrms.payroll_payslip.net_pay IS 'pay after tax';\n",
)
