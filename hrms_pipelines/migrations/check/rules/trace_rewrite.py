"""Trace mode: a table or index rewritten (a new relfilenode) that no rule predicted."""

from hrms_pipelines.migrations.check.model import Rule, Severity

RULE = Rule(
    id="trace-rewrite",
    severity=Severity.DANGER,
    found_by_trace=True,
    why="Rehearsed on a copy of the target's schema, this statement rewrote an existing table or index (its "
        "relfilenode changed): PostgreSQL copies every row under the statement's lock, for as long as the "
        "table takes to copy, and no rule predicted it.",
    fix="Find the form that changes only the catalogue (the trace table shows the lock and what was rewritten); "
        "otherwise expand/contract: a new table or column filled in batches (data_backfill). If the rewrite is "
        "acceptable here, say why with `-- hrms:allow trace-rewrite reason: <why>` on the statement.",
    bad="ALTER TABLE hrms.core_backfillcheckpoint SET UNLOGGED;\n",
    good="ALTER TABLE hrms.core_backfillcheckpoint SET (fillfactor = 90);\n",
)
