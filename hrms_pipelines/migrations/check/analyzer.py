"""The analyzer over migration files: which files, in which mode, with what knowledge.

How a file is analyzed depends on how it will run:

| file | mode | transaction | lock/statement timeouts |
|---|---|---|---|
| `sql/migrations/<app>/NNNN_name.up.sql` (and `.down.sql`) | runner, transactional | the whole file is one transaction | set by the runner (`SET LOCAL`) |
| the same with `-- hrms:non-transactional` | runner, non-transactional | none (BEGIN/COMMIT in it open one) | set by the runner before every statement |
| any other `.sql` path, or every file with `--standalone` | standalone script | none until BEGIN | none until `SET lock_timeout` / `SET statement_timeout` |

Migrations are walked in dependency order, so each file is judged with what the earlier ones
created: a table created in the same file, or by a migration that is not applied yet (known only
when a database's ledger is read), is new -- empty, nothing to lock or rewrite. Without a
database every earlier migration counts as applied (the safe assumption in CI).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hrms_pipelines import settings
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.migrations import files
from hrms_pipelines.migrations.check import engine
from hrms_pipelines.migrations.check.model import Finding, Severity
from hrms_pipelines.migrations.check.rules import ALL, engine_rules
from hrms_pipelines.migrations.check.sizes import TableSizes


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2."""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    strict: bool = False
    trace: object | None = None  # trace mode: a hrms_pipelines.migrations.trace.TraceResult

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.fails(self.strict)]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    def counts(self) -> dict[str, int]:
        active = [f for f in self.findings if f.suppressed is None]
        return {
            "files": len(self.files),
            "danger": sum(f.severity is Severity.DANGER for f in active),
            "warning": sum(f.severity is Severity.WARNING for f in active),
            "suppressed": len(self.findings) - len(active),
            "failing": len(self.failing),
        }

    def summary(self) -> str:
        c = self.counts()
        verdict = "FAIL" if c["failing"] else "ok"
        return (f"{verdict}: {c['files']} file(s), {c['danger']} DANGER, {c['warning']} WARNING, "
                f"{c['suppressed']} suppressed; {c['failing']} failing{' (strict)' if self.strict else ''}")

    def to_text(self) -> str:
        out = []
        for f in self.findings:
            status = f" [allowed: {f.suppressed}]" if f.suppressed is not None else ""
            out.append(f"{f.path}:{f.line}:{f.column}: {f.severity.value} {f.rule}{status}: {f.message}")
            if f.suppressed is None:
                if f.statement:
                    out.append(f"    statement: {f.statement}")
                out.append(f"    fix: {f.fix}")
            if f.trace is not None:
                out.append(f"    trace: {f.trace['status']}: {f.trace['observed']}")
        if self.trace is not None:
            out.append(self.trace.to_text())
        out.append(self.summary())
        return "\n".join(out)

    def to_json(self) -> str:
        data = {"strict": self.strict, **self.counts(), "findings": [f.as_dict() for f in self.findings]}
        if self.trace is not None:
            data["trace"] = self.trace.as_dict()
        return json.dumps(data, indent=2, default=str)

    def to_markdown(self, limit: int | None = 200) -> str:
        traced = self.trace is not None
        rows = [[f"{f.path}:{f.line}:{f.column}", f.severity.value + (" (allowed)" if f.suppressed is not None else ""),
                 f.rule, f.message, f.suppressed if f.suppressed is not None else f.fix]
                + ([f"{f.trace['status']}: {f.trace['observed']}" if f.trace else ""] if traced else [])
                for f in self.findings]
        if not rows:
            return "no findings"
        headers = ["where", "severity", "rule", "why", "fix / allowed because"] + (["trace"] if traced else [])
        return markdown_table(headers, rows, limit=limit)


@dataclass
class Options:
    strict: bool = False
    app: str | None = None
    standalone: bool = False  # every file as a script run by psql: no runner transaction or timeouts
    threshold: int | None = None
    sizes_file: Path | None = None


def mode_of(data: bytes, *, standalone: bool = False) -> str:
    """The runner's mode for a migration file, from its header (`-- hrms:non-transactional`)."""
    if standalone:
        return engine.STANDALONE
    text = data.decode("utf-8", "replace")
    for line in text.split("\n", 200):  # the header: comments before the first statement
        stripped = line.strip().lstrip("\ufeff")
        if stripped and not stripped.startswith("--"):
            break
        if files.NON_TRANSACTIONAL_MARKER.match(stripped):
            return engine.RUNNER_NON_TRANSACTIONAL
    return engine.RUNNER_TRANSACTIONAL


def _read(file: files.MigrationFile) -> bytes:
    try:
        return file.data
    except OSError as exc:
        raise UsageError(f"{file.path}: cannot read: {exc.strerror or exc}") from exc


def display_path(path: Path) -> str:
    """The path as a developer types it: relative to the working directory when inside it."""
    text, cwd = os.path.abspath(path), os.getcwd() + os.sep
    return text[len(cwd):] if text.startswith(cwd) else text


_display = display_path


def analyze_migrations(
    migrations: list[files.Migration],
    *,
    sizes: TableSizes,
    selected: set[tuple[str, str]] | None = None,
    applied: set[tuple[str, str]] | None = None,
    options: Options | None = None,
) -> Report:
    """Walk every migration in order (earlier ones teach the catalog); report on the selected ones.

    `applied`: keys in the database's ledger; None when no database was read (then every
    migration before a file counts as applied)."""
    options = options or Options()
    report = Report(strict=options.strict)
    catalog = engine.Catalog()
    pending_tables: set[str] = set()
    for migration in migrations:
        wanted = (selected is None or migration.key in selected) and (options.app is None or migration.app == options.app)
        data = _read(migration.up)
        mode = mode_of(data, standalone=options.standalone)
        new_tables = pending_tables if applied is not None else set()
        result = engine.analyze_text(_display(migration.up.path), data, mode=mode, sizes=sizes, catalog=catalog,
                                     new_tables=new_tables)
        if applied is not None and migration.key not in applied:
            pending_tables |= result.created_tables
        if not wanted:
            continue
        file_findings = []
        if migration.down is None:
            rule = engine_rules.IRREVERSIBLE_MIGRATION
            file_findings.append(Finding(
                path=result.path, line=1, column=1, rule=rule.id, severity=rule.severity,
                message=f"{rule.why} Expected {migration.down_path.name}.", fix=rule.fix,
            ))
        found = engine.finalize(result, file_findings=file_findings, report_unused=applied is None).findings
        if migration.down is not None:
            down_data = _read(migration.down)
            down = engine.analyze_text(_display(migration.down.path), down_data,
                                       mode=mode_of(down_data, standalone=options.standalone), sizes=sizes,
                                       catalog=catalog, new_tables=new_tables | result.created_tables,
                                       down=True, learn=False)
            found += engine.finalize(down, report_unused=applied is None).findings
        for finding in found:
            finding.migration = migration.label
        report.findings.extend(found)
        report.files += [result.path] + ([down.path] if migration.down is not None else [])
    return report


def analyze_script(path: Path, *, sizes: TableSizes, options: Options | None = None) -> Report:
    """A .sql file outside the migrations layout: a standalone script (no runner around it)."""
    options = options or Options()
    result = engine.analyze_text(_display(path), _read(files.MigrationFile(path)), mode=engine.STANDALONE, sizes=sizes)
    return Report(findings=engine.finalize(result).findings, files=[result.path], strict=options.strict)


def analyze_sql(sql: str | bytes, *, path: str = "<sql>", mode: str | None = None, sizes: TableSizes | None = None,
                new_tables: set[str] | None = None, catalog: engine.Catalog | None = None) -> list[Finding]:
    """Findings of one piece of SQL; by default judged as a migration file the runner runs
    (transactional unless its header says `-- hrms:non-transactional`)."""
    data = sql.encode("utf-8", "surrogateescape") if isinstance(sql, str) else sql
    sizes = sizes if sizes is not None else TableSizes.load()
    result = engine.analyze_text(path, data, mode=mode or mode_of(data), sizes=sizes, catalog=catalog,
                                 new_tables=new_tables)
    return engine.finalize(result).findings


def _migration_root(path: Path) -> Path | None:
    """The migrations folder a file or app folder belongs to, when it is laid out as one."""
    if path.is_file():
        if files.FILE_PATTERN.match(path.name):
            return path.parent.parent
        return None
    if path.is_dir() and any(files.FILE_PATTERN.match(p.name) for p in path.glob("*.sql")):
        return path.parent
    return None


def analyze_paths(
    paths: list[str | Path] | None = None,
    *,
    migrations_dir: Path | None = None,
    options: Options | None = None,
    conn=None,
) -> Report:
    """The CLI's and the job's entry point. No paths: every migration under `migrations_dir`.
    `conn` (psycopg, optional): live table sizes and the ledger of applied migrations."""
    options = options or Options()
    migrations_dir = (migrations_dir or settings.migrations_dir()).resolve()
    sizes = TableSizes.load(reference=options.sizes_file, conn=conn, threshold=options.threshold)
    applied = applied_keys(conn) if conn is not None else None

    roots: dict[Path, set[tuple[str, str]] | None] = {}
    scripts: list[Path] = []
    resolved = [(raw, Path(raw).resolve()) for raw in paths or [migrations_dir]]
    for raw, path in resolved:
        if not path.exists():
            raise UsageError(f"{raw}: no such file or folder")
    # The migrations folders: the configured one, and any folder given that is laid out as one. A file or
    # an app folder anywhere else is linted on its own (like squawk): the folders around it are never scanned.
    layouts = {migrations_dir} | {path for _, path in resolved if path.is_dir() and any(
        d.is_dir() and _migration_root(d) == path for d in path.iterdir())}
    for raw, path in resolved:
        if path in layouts:
            roots[path] = None
            continue
        root = _migration_root(path)
        if root not in layouts:
            root = None
        if root is None:
            scripts.extend(sorted(path.rglob("*.sql")) if path.is_dir() else [path])
            continue
        if roots.get(root, set()) is None:
            continue
        keys = roots.setdefault(root, set())
        if path.is_dir():
            roots[root] = keys | {("*app*", path.name)}
        else:
            match = files.FILE_PATTERN.match(path.name)
            keys.add((path.parent.name, match["version"]))

    report = Report(strict=options.strict)
    for root, keys in roots.items():
        try:
            migrations = files.discover(root)
            files.check_app(migrations, options.app)
        except files.MigrationError as exc:
            raise UsageError(str(exc)) from exc
        selected = None
        if keys is not None:
            apps = {name for marker, name in keys if marker == "*app*"}
            selected = {m.key for m in migrations if m.key in keys or m.app in apps}
        part = analyze_migrations(migrations, sizes=sizes, selected=selected, applied=applied, options=options)
        report.findings += part.findings
        report.files += part.files
    for script in scripts:
        part = analyze_script(script, sizes=sizes, options=options)
        report.findings += part.findings
        report.files += part.files
    return report


def applied_keys(conn) -> set[tuple[str, str]]:
    """(app, version) of every migration in the database's ledger."""
    from hrms_pipelines.migrations import runner

    return set(runner.read_ledger(conn))


def rules_table() -> str:
    rows = [[r.id, r.severity.value, r.squawk or "", r.why] for r in ALL.values()]
    return markdown_table(["rule", "severity", "squawk", "why"], rows)
