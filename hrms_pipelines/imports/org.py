"""Stage 2, organisation: organizations, departments, tribes, chapters and teams files.

Each file's type is detected from its columns (`<type>_code` + `<type>_name`); files are imported
in dependency order whatever their names: organizations -> departments -> tribes -> chapters ->
teams, so a team may name a tribe created by the same import. Leaders (tribe lead, chapter and team
leaders) are referenced by email: an existing employee, or with `create_users` a placeholder
employee (email only, `is_placeholder`) that the users stage completes; without the flag an unknown
leader is a rejected row.
"""

from __future__ import annotations

from hrms_pipelines import settings
from hrms_pipelines.imports import appends, changes, formats, reader, rowhash, schemas
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.imports.stage import Merge, Stage, StageContext, add, merge, sql_rejects, temp_table, zero
from hrms_pipelines.imports.staging import cell, duplicates, email

NAME = "org"
TABLES = ("hrms.org_organization", "hrms.org_department", "hrms.org_tribe", "hrms.org_chapter", "hrms.org_team",
          "hrms.employees_employee", "hrms.imports_importrecord")

# What each kind references: (cell column, table, label)
REFERENCES = {
    "departments": [("organization_code", "hrms.org_organization", "organization")],
    "tribes": [("organization_code", "hrms.org_organization", "organization")],
    "chapters": [("organization_code", "hrms.org_organization", "organization")],
    "teams": [("tribe_code", "hrms.org_tribe", "tribe"), ("department_code", "hrms.org_department", "department")],
}
VALUE_COLUMNS = {
    "organizations": ("name",),
    "departments": ("name", "organization_id"),
    "tribes": ("name", "organization_id", "lead_id"),
    "chapters": ("name", "organization_id", "leader_id"),
    "teams": ("name", "tribe_id", "department_id", "leader_id"),
}
ORDER = [k.kind for k in formats.ORG_KINDS]


def files(options: ImportOptions):
    return [options.file(name) for name in options.org_files]


def record_options(options: ImportOptions) -> dict:
    return {"force_update": options.force_update, "create_users": options.create_users}


def classify(info: reader.FileInfo) -> formats.OrgKind:
    kind = formats.detect_org_kind(info.columns)
    if kind is None:
        raise reader.ImportFileError(
            f"{info.name}: row 1 (header) does not say which organisation file this is; columns found (excerpt): "
            f"{settings.excerpt(', '.join(info.columns), 80)}. A file is recognised by its code and name columns ({formats.org_detection_help()})."
        )
    return kind


def apply(ctx: StageContext, infos: list[reader.FileInfo]) -> None:
    kinds = [(classify(info), info) for info in infos]
    kinds.sort(key=lambda pair: ORDER.index(pair[0].kind))
    for index, (kind, info) in enumerate(kinds):
        ctx.file_result(info.name).kind = kind.kind
        _import_file(ctx, kind, info, f"stg_org_{index}")


def _import_file(ctx: StageContext, kind: formats.OrgKind, info: reader.FileInfo, staging: str) -> None:
    conn = ctx.conn
    reader.check_columns(info, kind.required, kind.columns, ctx.log.warning, rejects=ctx.rejects)
    rows = ctx.load(info, staging, schemas.ORG_MODELS[kind.kind])
    ctx.fail_if_rejected(f"{info.name} cannot be imported")
    c = lambda name: cell(info, name)  # noqa: E731
    record = str(ctx.record_ids[info.name])
    sql_rejects(ctx, info.name, duplicates(staging, f"btrim({kind.key})", kind.key))
    # rows that are the same as the stored rows they name leave here (rowhash.py)
    joins = [f"{kind.table} x ON x.code = {c(kind.key)}"]
    rendered = []
    for col in kind.columns:
        if col == kind.key:
            rendered.append("x.code")
        elif col == f"{kind.prefix}_name":
            rendered.append("x.name")
        elif col == kind.leader_column:
            joins.append(f"LEFT JOIN hrms.employees_employee r_{col} ON r_{col}.id = x.{kind.leader_fk}")
            rendered.append(f"r_{col}.email")
        else:   # organization_code, tribe_code, department_code: the code of the row the id names
            referenced = next(t for column, t, _label in REFERENCES[kind.kind] if column == col)
            joins.append(f"LEFT JOIN {referenced} r_{col} ON r_{col}.id = x.{col.removesuffix('_code')}_id")
            rendered.append(f"r_{col}.code")
    same = rowhash.keep_changed(conn, staging, cells=rowhash.raw_cells(kind.columns, info.columns, info.extra),
                                render=" ".join(joins), rendered=rendered, condition="x.id IS NOT NULL")
    if same:
        ctx.log.info(f"{info.name}: {same:,} of {rows:,} rows the same as stored (compared whole, as written): not compared further")
    for column, table, label in REFERENCES.get(kind.kind, []):
        if column in info.columns:
            sql_rejects(ctx, info.name, f"""
                SELECT s.row_number, '{column}', {c(column)}, 'unknown {label} (not in the database nor in an earlier file of this import)'
                FROM {staging} s LEFT JOIN {table} r ON r.code = {c(column)}
                WHERE {c(column)} IS NOT NULL AND r.id IS NULL ORDER BY s.row_number""")
    placeholders = 0
    if kind.leader_column and kind.leader_column in info.columns:
        leader = email(info, kind.leader_column)
        if ctx.options.create_users:
            placeholders = conn.execute(f"""
                WITH ins AS (
                    INSERT INTO hrms.employees_employee (email, is_placeholder, import_record_id)
                    SELECT DISTINCT {leader}, true, {record} FROM {staging} s WHERE {leader} IS NOT NULL
                    ON CONFLICT (email) DO NOTHING RETURNING id
                ), captured AS ({changes.capture_inserted("employees_employee", record)})
                SELECT count(*) FROM ins""").fetchone()[0]
            if placeholders:
                ctx.log.info(f"{info.name}: created {placeholders} placeholder user(s) for unknown leaders (create_users)")
        else:
            sql_rejects(ctx, info.name, f"""
                SELECT s.row_number, '{kind.leader_column}', {leader},
                       'unknown user (no employee has this email; run with create_users to create a placeholder)'
                FROM {staging} s LEFT JOIN hrms.employees_employee e ON e.email = {leader}
                WHERE {leader} IS NOT NULL AND e.id IS NULL ORDER BY s.row_number""")
    ctx.fail_if_rejected(f"{info.name} cannot be imported")

    select = [f"{c(kind.key)} AS code", f"{c(kind.prefix + '_name')} AS name"]
    joins = []
    for column, table, label in REFERENCES.get(kind.kind, []):
        alias = f"r_{label}"
        joins.append(f"LEFT JOIN {table} {alias} ON {alias}.code = {c(column)}")
        select.append(f"{alias}.id AS {label}_id")
    if kind.leader_fk:
        joins.append(f"LEFT JOIN hrms.employees_employee lead ON lead.email = {email(info, kind.leader_column)}")
        select.append(f"lead.id AS {kind.leader_fk}")
    source = f"src_{staging}"
    temp_table(conn, source, f"SELECT s.row_number, {', '.join(select)} FROM {staging} s {' '.join(joins)}")
    counts = merge(ctx, Merge(kind.table, ("code",), VALUE_COLUMNS[kind.kind], source, kind.kind),
                   update=ctx.options.force_update, record_id_sql=record)
    totals = zero()
    totals["rows_read"] = rows
    add(totals, counts)
    totals["unchanged"] += same
    ctx.result.entities[kind.kind]["unchanged"] += same
    ctx.file_result(info.name).counts = totals
    if placeholders:
        ctx.result.entities[f"placeholder users ({kind.kind})"] = {"inserted": placeholders}


def append_guard(ctx: StageContext, info: reader.FileInfo, staging: str) -> str | None:
    """An appended tail is merged alone only when none of its codes exists yet (appends.py)."""
    kind = classify(info)
    return appends.new_keys_guard(f"SELECT count(*) FROM {{staging}} s JOIN {kind.table} t ON t.code = "
                                  f"nullif(btrim(s.{kind.key}), '')")(ctx, info, staging)


STAGE = Stage(NAME, TABLES, files, record_options, apply, append_guard=append_guard)
