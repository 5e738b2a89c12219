"""The safety gate in front of `apply_migrations`: the analyzer's verdict on the pending files.

The pending migrations are analyzed with what the database knows: live table sizes
(`pg_class.reltuples`, the larger of that and `sql/table_sizes.yaml`) and the ledger, so tables
created by migrations applied in the same run count as new. A migration with a failing finding
(DANGER; WARNING too when strict) is refused unless the finding is suppressed with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from hrms_pipelines.migrations import files
from hrms_pipelines.roles import MIGRATOR
from hrms_pipelines.migrations.check import Options, Report, analyze_migrations
from hrms_pipelines.migrations.check.analyzer import applied_keys
from hrms_pipelines.migrations.check.sizes import TableSizes


@dataclass
class Verdict:
    refused: list[str] = field(default_factory=list)
    report: Report = field(default_factory=Report)

    def metadata(self) -> dict:
        counts = self.report.counts()
        traced = {}
        if self.report.trace is not None:
            from hrms_pipelines.migrations.trace.metadata import trace_metadata

            traced = trace_metadata(self.report.trace)
        return {**traced,
            "refused": len(self.refused),
            "findings": len(self.report.findings),
            "danger": counts["danger"],
            "warning": counts["warning"],
            "suppressed": counts["suppressed"],
            "safety_findings": dg.MetadataValue.md(self.report.to_markdown()),
        }

    def refusal_message(self) -> str:
        lines = ["refusing pending migrations with failing safety findings:"]
        for label in self.refused:
            lines.append(f"  {label}")
            for f in self.report.failing:
                if f.migration == label:
                    lines.append(f"    {f.path}:{f.line}:{f.column}: {f.severity.value} {f.rule}: {f.message}")
                    lines.append(f"      fix: {f.fix}")
        lines.append("Fix the migration, or suppress a finding that is safe here with "
                     "`-- hrms:allow <rule-id> reason: <why>` on its statement.")
        return "\n".join(lines)


def check_pending(migrations: list[files.Migration], pending: list[files.Migration], *, strict: bool, database,
                  log, trace: bool = False, timeouts=None) -> Verdict:
    """`migrations`: every migration, in order (earlier ones teach the analyzer); `pending`: those judged.
    `trace`: also rehearse them on a scratch copy of the database's schema (apply_migrations' dry run)."""
    if not pending:
        return Verdict()
    with database.connection(MIGRATOR, autocommit=True) as conn:
        sizes = TableSizes.load(conn=conn)
        applied = applied_keys(conn)
        if trace:
            from hrms_pipelines.migrations.trace.check import is_embedded, target_of

            target = target_of(conn, sizes=sizes, dump_url=None if is_embedded(database) else database.url(MIGRATOR),
                               display=database.display_url(MIGRATOR))
    report = analyze_migrations(migrations, sizes=sizes, selected={m.key for m in pending}, applied=applied,
                                options=Options(strict=strict))
    if trace:
        from hrms_pipelines.migrations.trace.check import trace_into

        result = trace_into(report, migrations, target, selected={m.key for m in pending}, timeouts=timeouts)
        log.info(result.to_text())
    if report.findings:
        log.info("migration safety findings:\n" + report.to_text())
    else:
        log.info(f"migration safety: {len(pending)} pending migration(s), no findings")
    refused = list(dict.fromkeys(f.migration for f in report.failing))
    return Verdict(refused=refused, report=report)
