"""`python -m hrms_pipelines.migrations.check [--strict] [--app X] [--json] [paths...]`

Exit status: 0 nothing fails, 1 findings that fail (DANGER; WARNING too with --strict),
2 usage or I/O error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrms_pipelines.migrations.check.analyzer import Options, UsageError, analyze_paths, rules_table
from hrms_pipelines.migrations.check.sizes import SizesError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hrms_pipelines.migrations.check",
        description="Migration safety analyzer: lints SQL migrations on PostgreSQL's own parser.",
    )
    parser.add_argument("paths", nargs="*", help="migration files or folders (default: every migration)")
    parser.add_argument("--strict", action="store_true", help="fail on WARNING findings too")
    parser.add_argument("--app", help="only this app's migrations")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--standalone", action="store_true",
                        help="judge every file as a script run on its own (no runner transaction or timeouts)")
    parser.add_argument("--migrations-dir", type=Path, help="the migrations folder (default sql/migrations or HRMS_MIGRATIONS_DIR)")
    parser.add_argument("--database", metavar="URL",
                        help="read live table sizes (pg_class.reltuples) and the applied-migration ledger from this database")
    parser.add_argument("--threshold", type=int, help="rows from which a table is large (default from sql/table_sizes.yaml: 100000)")
    parser.add_argument("--sizes", type=Path, help="table size reference (default sql/table_sizes.yaml)")
    parser.add_argument("--trace", action="store_true",
                        help="also rehearse the migrations on a scratch PostgreSQL (the bundled one) and report each "
                             "statement's locks, rewrites and duration beside the findings; with --database, on a copy "
                             "of that database's schema (pg_dump --schema-only), never writing to it")
    parser.add_argument("--rules", action="store_true", help="list the rules and exit")
    return parser


def _trace_errors(tracing: bool) -> tuple[type[Exception], ...]:
    if not tracing:
        return ()
    from hrms_pipelines.migrations.files import MigrationError
    from hrms_pipelines.migrations.trace import TraceError

    return (TraceError, MigrationError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rules:
        print(rules_table())
        return 0
    options = Options(strict=args.strict, app=args.app, standalone=args.standalone,
                      threshold=args.threshold, sizes_file=args.sizes)
    analyze = analyze_paths
    extra: dict = {}
    if args.trace:
        from hrms_pipelines.migrations.trace.check import traced_paths
        from hrms_pipelines.resources import redact

        analyze = traced_paths
        if args.database:
            extra = {"dump_url": args.database, "target_display": redact(args.database)}
    try:
        if args.database:
            import psycopg

            try:
                conn = psycopg.connect(args.database, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise UsageError(f"cannot connect to --database: {str(exc).strip().splitlines()[0]}") from exc
            with conn:
                report = analyze(args.paths, migrations_dir=args.migrations_dir, options=options, conn=conn, **extra)
        else:
            report = analyze(args.paths, migrations_dir=args.migrations_dir, options=options)
    except (UsageError, SizesError, *_trace_errors(args.trace)) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
