"""Stage 3, users: the employee records, keyed by email (trimmed and lower-cased before compare).

- New emails are inserted; their managers (by email: an existing employee or another row of the
  file) are set once every new row exists, so the order of rows does not matter.
- Existing employees are updated only with `force_update`, and only where values really differ
  (each updated row leaves an audit-log entry with before/after values and the run id).
- Placeholder employees, created by the organisation stage with `create_users` for leaders it did not
  know, are completed by the first users file that contains their email, without `force_update`:
  the row is filled in and stops being a placeholder.
- A blank cell never erases a stored value.
- Rejected rows: duplicate emails or employee numbers, unknown teams, chapters, ladders, levels or
  managers, a user who is their own manager, and management cycles (found set-based with a
  recursive CTE over the managers the import would leave in place).
"""

from __future__ import annotations

from hrms_pipelines import privacy
from hrms_pipelines.imports import appends, changes, formats, linehash, reader, rowhash, schemas
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.imports.stage import Merge, Stage, StageContext, merge, sql_rejects, temp_table, zero
from hrms_pipelines.imports.staging import cell, duplicates, email

NAME = "users"
TABLES = ("hrms.employees_employee", "hrms.imports_importrecord")
COLUMNS = ("employee_number", "first_name", "last_name", "job_title", "status", "hire_date", "termination_date",
           "tenure_years", "department_code", "team_id", "chapter_id", "ladder_id", "level_number")
# A stored employee in the shape of a users file row (rowhash): each column's value as text.
RENDER = ("hrms.employees_employee e ON e.email = {key} LEFT JOIN hrms.org_team rt ON rt.id = e.team_id "
          "LEFT JOIN hrms.org_chapter rc ON rc.id = e.chapter_id LEFT JOIN hrms.employees_employee rm ON rm.id = e.manager_id "
          "LEFT JOIN hrms.ladders_ladder rl ON rl.id = e.ladder_id")
RENDERED = {"email": "e.email", "employee_number": "e.employee_number", "first_name": "e.first_name",
            "last_name": "e.last_name", "job_title": "e.job_title", "status": "e.status", "hire_date": "e.hire_date",
            "termination_date": "e.termination_date", "tenure_years": "e.tenure_years", "department_code": "e.department_code",
            "team_code": "rt.code", "chapter_code": "rc.code", "manager_email": "rm.email", "ladder_code": "rl.code",
            "level_number": "e.level_number"}


def files(options: ImportOptions):
    return [options.file(options.users_file)] if options.users_file else []


def record_options(options: ImportOptions) -> dict:
    return {"force_update": options.force_update}


def apply(ctx: StageContext, infos: list[reader.FileInfo]) -> None:
    info = infos[0]
    conn = ctx.conn
    reader.check_columns(info, ("email", "first_name", "last_name"), formats.USERS_COLUMNS, ctx.log.warning, rejects=ctx.rejects)
    rows = ctx.load(info, "stg_users", schemas.UsersFile)
    ctx.fail_if_rejected(f"{info.name} cannot be imported")
    c = lambda name: cell(info, name)  # noqa: E731
    f = info.name
    # Repeats inside the file, over every row; then the rows that are the same as the stored employees
    # they name leave (one pass, rowhash.py): the rest go on.
    sql_rejects(ctx, f, duplicates("stg_users", email(info, "email", "stg_users"), "email"))
    number = cell(info, "employee_number", "stg_users")
    sql_rejects(ctx, f, duplicates("stg_users", number, "employee_number", f"{number} IS NOT NULL"))
    ctx.lap("check_duplicates")
    same = rowhash.keep_changed(conn, "stg_users", cells=rowhash.raw_cells(formats.USERS_COLUMNS, info.columns, info.extra),
                                render=RENDER.format(key=email(info, "email")),
                                rendered=[RENDERED[col] for col in formats.USERS_COLUMNS], condition="NOT e.is_placeholder")
    ctx.lap("compare", f"{f}: {same:,} of {rows:,} rows the same as stored (compared whole, as written): not compared further")
    temp_table(conn, "u", f"""
        SELECT s.row_number, {email(info, 'email')} AS email, {c('employee_number')} AS employee_number,
               {c('first_name')} AS first_name, {c('last_name')} AS last_name, {c('job_title')} AS job_title,
               lower({c('status')}) AS status, {c('hire_date')}::date AS hire_date,
               {c('termination_date')}::date AS termination_date, {c('tenure_years')}::numeric(5,2) AS tenure_years,
               {c('department_code')} AS department_code, {c('team_code')} AS team_code, {c('chapter_code')} AS chapter_code,
               {email(info, 'manager_email')} AS manager_email, {c('ladder_code')} AS ladder_code,
               {c('level_number')}::smallint AS level_number,
               t.id AS team_id, ch.id AS chapter_id, l.id AS ladder_id, e.id AS existing_id,
               coalesce(e.is_placeholder, false) AS placeholder
        FROM stg_users s
        LEFT JOIN hrms.org_team t ON t.code = {c('team_code')}
        LEFT JOIN hrms.org_chapter ch ON ch.code = {c('chapter_code')}
        LEFT JOIN hrms.ladders_ladder l ON l.code = {c('ladder_code')}
        LEFT JOIN hrms.employees_employee e ON e.email = {email(info, 'email')}""")
    conn.execute("CREATE INDEX ON u (email)")
    conn.execute("ANALYZE u")
    sql_rejects(ctx, f, """
        SELECT u.row_number, 'employee_number', u.employee_number, 'employee number already belongs to ' || e.email
        FROM u JOIN hrms.employees_employee e ON e.employee_number = u.employee_number AND e.email <> u.email
        ORDER BY u.row_number""")
    for column, resolved, label in (("team_code", "team_id", "team"), ("chapter_code", "chapter_id", "chapter"),
                                    ("ladder_code", "ladder_id", "ladder")):
        sql_rejects(ctx, f, f"SELECT row_number, '{column}', {column}, 'unknown {label}' FROM u "
                            f"WHERE {column} IS NOT NULL AND {resolved} IS NULL ORDER BY row_number")
    sql_rejects(ctx, f, """
        SELECT u.row_number, 'level_number', u.level_number::text, 'unknown level of ladder ' || u.ladder_code
        FROM u WHERE u.ladder_id IS NOT NULL AND u.level_number IS NOT NULL AND NOT EXISTS (
            SELECT FROM hrms.ladders_level v WHERE v.ladder_id = u.ladder_id AND v.level_number = u.level_number)
        ORDER BY u.row_number""")
    sql_rejects(ctx, f, "SELECT row_number, 'manager_email', manager_email, 'a user cannot be their own manager' "
                        "FROM u WHERE manager_email = email ORDER BY row_number")
    sql_rejects(ctx, f, """
        SELECT u.row_number, 'manager_email', u.manager_email, 'unknown manager (no employee and no row of this file has this email)'
        FROM u WHERE u.manager_email IS NOT NULL AND u.manager_email <> u.email
          AND NOT EXISTS (SELECT FROM u m WHERE m.email = u.manager_email)
          AND NOT EXISTS (SELECT FROM hrms.employees_employee e WHERE e.email = u.manager_email)
        ORDER BY u.row_number""")
    ctx.fail_if_rejected(f"{f} cannot be imported")
    ctx.lap("check", "checked keys and references")

    force = ctx.options.force_update
    # The rows whose values this import applies: new users, placeholders, and everyone with force_update.
    conn.execute("ALTER TABLE u ADD COLUMN applies boolean")
    conn.execute("UPDATE u SET applies = existing_id IS NULL OR placeholder OR %s", [force])
    starts = conn.execute(f"SELECT count(*) FROM ({STARTS.format(rows='u.applies')}) s").fetchone()[0]
    if starts:
        sql_rejects(ctx, f, f"""
            SELECT u.row_number, 'manager_email', u.manager_email,
                   'management cycle: ' || array_to_string(c.path || c.start, ' -> ')
            FROM ({cycles_sql("u.applies", bulk=starts > BULK_STARTS)}) c JOIN u ON u.email = c.start ORDER BY u.row_number""")
    ctx.fail_if_rejected(f"{f} cannot be imported")
    ctx.lap("cycles", "looked for management cycles")

    record = str(ctx.record_ids[f])
    new_cols = ("email",) + COLUMNS
    inserted = conn.execute(f"""
        WITH ins AS (
            INSERT INTO hrms.employees_employee ({', '.join(new_cols)}, import_record_id)
            SELECT {', '.join('coalesce(status, %s)' if col == 'status' else col for col in new_cols)}, {record}
            FROM u WHERE existing_id IS NULL ON CONFLICT (email) DO NOTHING RETURNING id
        ), captured AS ({changes.capture_inserted("employees_employee", record)})
        SELECT count(*) FROM ins""", ["active"]).fetchone()[0]
    # managers of the rows just inserted (their undo is their removal: no before-image needed)
    conn.execute("""
        UPDATE hrms.employees_employee e SET manager_id = m.id
        FROM u JOIN hrms.employees_employee m ON m.email = u.manager_email
        WHERE u.existing_id IS NULL AND e.email = u.email""")
    temp_table(conn, "src_users", f"""
        SELECT u.row_number, u.email, {', '.join('u.' + col for col in COLUMNS)}, m.id AS manager_id,
               false AS is_placeholder
        FROM u LEFT JOIN hrms.employees_employee m ON m.email = u.manager_email
        WHERE u.existing_id IS NOT NULL AND u.applies""")
    columns = COLUMNS + ("manager_id", "is_placeholder")
    counts = merge(ctx, Merge("hrms.employees_employee", ("email",), columns, "src_users", "users"),
                   update=True, record_id_sql=record)
    ctx.lap("merge", "inserted new users, compared and updated existing ones")
    skipped = 0
    if not force:
        differs = (f"({', '.join('e.' + col for col in COLUMNS)}, e.manager_id) IS DISTINCT FROM "
                   f"({', '.join(f'coalesce(u.{col}, e.{col})' for col in COLUMNS)}, coalesce(m.id, e.manager_id))")
        skipped = conn.execute(f"""
            SELECT count(*) FROM u JOIN hrms.employees_employee e ON e.id = u.existing_id
            LEFT JOIN hrms.employees_employee m ON m.email = u.manager_email
            WHERE NOT u.applies AND {differs}""").fetchone()[0]
        if skipped:
            ctx.unwritten[f] = f"""
                SELECT u.row_number FROM u JOIN hrms.employees_employee e ON e.id = u.existing_id
                LEFT JOIN hrms.employees_employee m ON m.email = u.manager_email WHERE NOT u.applies AND {differs}"""
            ctx.log.info(f"{f}: {skipped} existing user(s) differ from the file and were left as they are (force_update is off)")
            _warn_cycles_left_unwritten(ctx, info)
    totals = zero()
    totals.update(rows_read=rows, inserted=inserted, updated=counts["updated"], skipped=skipped,
                  unchanged=rows - inserted - counts["updated"] - skipped)
    completed = conn.execute("SELECT count(*) FROM u WHERE placeholder").fetchone()[0]
    ctx.result.entities["users"] = {k: totals[k] for k in ("inserted", "updated", "unchanged", "skipped")}
    if completed:
        ctx.result.entities["users"]["placeholders completed"] = completed
        ctx.log.info(f"{f}: completed {completed} placeholder user(s) created by the organisation stage")
    ctx.file_result(f).counts = totals


# The rows whose manager in the file differs from the stored one (of the rows `{rows}` selects).
STARTS = """
    SELECT u.email, u.manager_email FROM u LEFT JOIN hrms.employees_employee e ON e.id = u.existing_id
    LEFT JOIN hrms.employees_employee m ON m.id = e.manager_id
    WHERE {rows} AND u.manager_email IS NOT NULL AND u.manager_email IS DISTINCT FROM m.email"""
# From this many walks on, each step is one hash join over every edge rather than an index lookup per walk.
BULK_STARTS = 2_000


def cycles_sql(rows: str, *, bulk: bool = False, every_row_applies: bool = False) -> str:
    """The management cycles the import would close, found from the rows of `u` that `rows` selects
    whose manager in the file differs from their stored one (a cycle must contain such an edge: the
    stored hierarchy has none). A walk follows the file's manager for rows the import applies (a
    blank keeps the stored one) and the stored manager for everyone else: an index lookup a step for
    a few walks, one hash join over every edge a step for many (a first import).
    Returns (start, path) per cycle: the walk from `start` came back to it along `path`."""
    applies = "" if every_row_applies else "f.applies AND "
    if bulk:
        step = """
            SELECT w.start, e.manager, w.path || w.current FROM walk w JOIN edges e ON e.email = w.current
            WHERE NOT w.current = ANY (w.path)"""
        edges = f""", edges AS (
            SELECT f.email, f.manager_email AS manager FROM u f WHERE {applies}f.manager_email IS NOT NULL
            UNION ALL
            SELECT e.email, m.email FROM hrms.employees_employee e JOIN hrms.employees_employee m ON m.id = e.manager_id
            WHERE NOT EXISTS (SELECT FROM u f WHERE f.email = e.email AND {applies}f.manager_email IS NOT NULL)
        )"""
    else:
        step = f"""
            SELECT w.start, nxt.manager, w.path || w.current FROM walk w CROSS JOIN LATERAL (
                SELECT coalesce(
                    (SELECT f.manager_email FROM u f WHERE f.email = w.current AND {applies}f.manager_email IS NOT NULL),
                    (SELECT m.email FROM hrms.employees_employee e JOIN hrms.employees_employee m ON m.id = e.manager_id
                     WHERE e.email = w.current)) AS manager) nxt
            WHERE nxt.manager IS NOT NULL AND NOT w.current = ANY (w.path)"""
        edges = ""
    return f"""
        WITH RECURSIVE starts AS ({STARTS.format(rows=rows)}){edges}, walk (start, current, path) AS (
            SELECT email, manager_email, ARRAY[email] FROM starts
            UNION ALL {step}
        )
        SELECT start, path FROM walk WHERE current = start"""


def _warn_cycles_left_unwritten(ctx: StageContext, info: reader.FileInfo) -> None:
    """Rows of existing employees are not written without force_update; if their managers in the file
    would make employees each other's managers, say so (a warning in the run's metadata, users masked):
    the same file with force_update is rejected for it."""
    # as if every row applied: the same walk, following the file's manager for the rows left unwritten too
    starts = ctx.conn.execute(f"SELECT count(*) FROM ({STARTS.format(rows='NOT u.applies')}) s").fetchone()[0]
    if not starts:
        return
    query = cycles_sql("NOT u.applies", bulk=starts > BULK_STARTS, every_row_applies=True)
    # the file's rows by key: those staged, and the lines skipped as known (linehash.py)
    lines = ctx.lines.get(info.name)
    known = (f"UNION ALL SELECT row_number, key_hash FROM {linehash.known_table(ctx.conn, lines)}"
             if lines is not None and lines.known else "")
    rows = ctx.conn.execute(f"""
        SELECT c.path || c.start, array_agg(f.row_number + 1 ORDER BY f.row_number)
        FROM ({query}) c JOIN (SELECT s.row_number, decode(md5({email(info, 'email')}), 'hex') AS k FROM stg_users_all s
                               {known}) f
        ON f.k = ANY (ARRAY(SELECT decode(md5(p), 'hex') FROM unnest(c.path) p)) GROUP BY c.path, c.start ORDER BY 2 LIMIT 20""").fetchall()
    seen = set()
    for path, row_numbers in rows:
        cycle = frozenset(path)
        if cycle in seen:
            continue
        seen.add(cycle)
        shown = " -> ".join(str(privacy.mask_cell("email", e)) for e in path)
        ctx.warn(f"{info.name}: its managers would make existing employees each other's managers (a management cycle: {shown}; "
                 f"rows {', '.join(map(str, row_numbers))}). Those rows were not written (force_update is off); "
                 "with force_update the file is rejected for it. Fix manager_email in those rows.")


# An appended tail is merged alone only when none of its emails is an employee yet (appends.py).
APPEND_GUARD = appends.new_keys_guard("""
    SELECT count(*) FROM {staging} s JOIN hrms.employees_employee e ON e.email = lower(nullif(btrim(s.email), ''))
    WHERE NOT e.is_placeholder""")

STAGE = Stage(NAME, TABLES, files, record_options, apply, append_guard=APPEND_GUARD,
              line_keys=linehash.LineKeys(lambda info: email(info, "email"), "users"))
