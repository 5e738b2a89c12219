"""Stage 4, history: timeline events with the compensation and seniority details they carry.

One row = one event (employee by email, type, date). A row with a salary also makes a compensation
snapshot; a row with a ladder/level also makes a seniority snapshot; both tied to the event and the
employee. An event that already exists (same employee, type and date) is skipped by default
(`skip_duplicates`); with `update_existing` its summary, details and snapshots are updated where
they really differ, each such event leaving an audit-log entry with the values before and after.

When the file gives no summary, one is written from the row, naming the level, ladder, pay band and
salary change: "Promoted to L4 Senior Engineer (Engineering), pay band P4, salary GHS 8,500.00 ->
GHS 10,200.00 (+20.0%)".
"""

from __future__ import annotations

from hrms_pipelines.imports import appends, changes, formats, linehash, reader, schemas
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.imports.stage import Stage, StageContext, sql_rejects, temp_table, zero
from hrms_pipelines.imports.staging import cell, duplicates, email

NAME = "history"
TABLES = ("hrms.history_timelineevent", "hrms.history_compensationsnapshot", "hrms.history_senioritysnapshot",
          "hrms.imports_importrecord")

HEADLINES = {
    "hire": "Hired", "promotion": "Promoted", "demotion": "Demoted", "level_change": "Level changed",
    "salary_change": "Salary changed", "ladder_change": "Moved ladder", "team_change": "Changed team",
    "title_change": "Title changed", "transfer": "Transferred", "leave": "Went on leave",
    "return": "Returned from leave", "termination": "Left the organisation", "rehire": "Rehired", "note": "Note",
}


def files(options: ImportOptions):
    return [options.file(options.history_file)] if options.history_file else []


def record_options(options: ImportOptions) -> dict:
    return {"update_existing": options.update_existing}


def _money(expr: str, currency: str = "h.currency") -> str:
    return f"({currency} || ' ' || to_char({expr}, 'FM999,999,999,990.00'))"


SUMMARY_SQL = f"""
    coalesce(h.summary,
        (CASE h.event_type {' '.join(f"WHEN '{k}' THEN '{v}'" for k, v in HEADLINES.items())} END)
        || CASE WHEN h.level_number IS NOT NULL THEN
               ' to L' || h.level_number || coalesce(' ' || coalesce(h.title, lv.title), '') || ' (' || l.name || ')'
           WHEN h.title IS NOT NULL THEN ' to ' || h.title ELSE '' END
        || coalesce(', pay band ' || coalesce(h.pay_band, lv.pay_band), '')
        || CASE WHEN h.salary IS NOT NULL AND h.previous_salary IS NOT NULL THEN
               ', salary ' || {_money('h.previous_salary')} || ' -> ' || {_money('h.salary')}
               || CASE WHEN h.previous_salary > 0 THEN
                      ' (' || to_char(round((h.salary - h.previous_salary) * 100 / h.previous_salary, 1), 'FMSG9990.0') || '%)'
                  ELSE '' END
           WHEN h.salary IS NOT NULL THEN ', salary ' || {_money('h.salary')} ELSE '' END
        || coalesce('. ' || h.notes, ''))
"""


def apply(ctx: StageContext, infos: list[reader.FileInfo]) -> None:
    info = infos[0]
    conn = ctx.conn
    conn.execute("SELECT set_config('work_mem', '256MB', true)")
    reader.check_columns(info, ("email", "event_type", "event_date"), formats.HISTORY_COLUMNS, ctx.log.warning, rejects=ctx.rejects)
    rows = ctx.load(info, "stg_history", schemas.HistoryFile)
    ctx.fail_if_rejected(f"{info.name} cannot be imported")
    c = lambda name: cell(info, name)  # noqa: E731
    temp_table(conn, "h", f"""
        SELECT s.row_number, {email(info, 'email')} AS email, e.id AS employee_id, lower({c('event_type')}) AS event_type,
               {c('event_date')}::date AS event_date, {c('summary')} AS summary, {c('ladder_code')} AS ladder_code,
               l.id AS ladder_id, {c('level_number')}::smallint AS level_number,
               {c('previous_level_number')}::smallint AS previous_level_number, {c('title')} AS title,
               {c('pay_band')} AS pay_band, {c('salary')}::numeric(12,2) AS salary,
               {c('previous_salary')}::numeric(12,2) AS previous_salary, coalesce({c('currency')}, 'GHS') AS currency,
               {c('notes')} AS notes
        FROM stg_history s
        LEFT JOIN hrms.employees_employee e ON e.email = {email(info, 'email')}
        LEFT JOIN hrms.ladders_ladder l ON l.code = {c('ladder_code')}""")
    conn.execute("ANALYZE h")
    ctx.lap("resolve", "resolved users and ladders")
    f = info.name
    sql_rejects(ctx, f, "SELECT row_number, 'email', email, 'unknown user (no employee has this email; import users first)' "
                        "FROM h WHERE employee_id IS NULL ORDER BY row_number")
    sql_rejects(ctx, f, "SELECT row_number, 'ladder_code', ladder_code, 'unknown ladder' "
                        "FROM h WHERE ladder_code IS NOT NULL AND ladder_id IS NULL ORDER BY row_number")
    for column in ("level_number", "previous_level_number"):
        sql_rejects(ctx, f, f"""
            SELECT h.row_number, '{column}', h.{column}::text, 'unknown level of ladder ' || h.ladder_code
            FROM h WHERE h.ladder_id IS NOT NULL AND h.{column} IS NOT NULL AND NOT EXISTS (
                SELECT FROM hrms.ladders_level v WHERE v.ladder_id = h.ladder_id AND v.level_number = h.{column})
            ORDER BY h.row_number""")
    sql_rejects(ctx, f, duplicates("h", "(email, event_type, event_date)", "event_date"))
    ctx.fail_if_rejected(f"{f} cannot be imported")
    ctx.lap("check", "checked references and duplicates")

    record = str(ctx.record_ids[f])
    # The row as it would be stored: summary written, details, snapshot values.
    temp_table(conn, "hv", f"""
        SELECT h.row_number, h.employee_id, h.event_type, h.event_date, {SUMMARY_SQL} AS summary,
               jsonb_strip_nulls(jsonb_build_object('title', h.title, 'notes', h.notes, 'ladder', h.ladder_code,
                   'level', h.level_number, 'previous_level', h.previous_level_number, 'pay_band', coalesce(h.pay_band, lv.pay_band),
                   'salary', h.salary, 'previous_salary', h.previous_salary, 'currency', h.currency)) AS details,
               h.salary, h.previous_salary, h.currency, coalesce(h.pay_band, lv.pay_band) AS pay_band,
               h.ladder_id, h.level_number, h.previous_level_number, coalesce(h.title, lv.title) AS title
        FROM h LEFT JOIN hrms.ladders_ladder l ON l.id = h.ladder_id
        LEFT JOIN hrms.ladders_level lv ON lv.ladder_id = h.ladder_id AND lv.level_number = h.level_number""")
    differing = _compare_existing(ctx)
    ctx.lap("compare", "wrote summaries, compared with existing events")
    updated = skipped = 0
    if differing:
        if ctx.options.update_existing:
            updated = _update_existing(ctx, record)
        else:
            skipped = differing
            ctx.unwritten[f] = "SELECT row_number FROM hx WHERE before IS DISTINCT FROM after"
            ctx.log.info(f"{f}: {skipped} existing event(s) differ from the file and were left as they are (skip_duplicates)")
    inserted, compensation, seniority = conn.execute(f"""
        WITH ins AS (
            INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary, details, import_record_id)
            SELECT employee_id, event_type, event_date, summary, details, {record} FROM hv
            ON CONFLICT (employee_id, event_type, event_date) DO NOTHING
            RETURNING id, employee_id, event_type, event_date
        ), captured_events AS ({changes.capture_inserted("history_timelineevent", record)}
        ), joined AS (
            SELECT ins.id, hv.* FROM ins JOIN hv USING (employee_id, event_type, event_date)
        ), comp AS (
            INSERT INTO hrms.history_compensationsnapshot
                (event_id, employee_id, effective_date, salary, previous_salary, currency, pay_band, import_record_id)
            SELECT id, employee_id, event_date, salary, previous_salary, currency, pay_band, {record}
            FROM joined WHERE salary IS NOT NULL RETURNING id
        ), captured_comp AS ({changes.capture_inserted("history_compensationsnapshot", record, "comp")}
        ), sen AS (
            INSERT INTO hrms.history_senioritysnapshot
                (event_id, employee_id, effective_date, ladder_id, level_number, previous_level_number, title, import_record_id)
            SELECT id, employee_id, event_date, ladder_id, level_number, previous_level_number, title, {record}
            FROM joined WHERE ladder_id IS NOT NULL RETURNING id
        ), captured_sen AS ({changes.capture_inserted("history_senioritysnapshot", record, "sen")})
        SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM comp), (SELECT count(*) FROM sen)""").fetchone()
    ctx.lap("insert", "inserted events and snapshots")
    totals = zero()
    totals.update(rows_read=rows, inserted=inserted, updated=updated, skipped=skipped,
                  unchanged=rows - inserted - updated - skipped)
    ctx.result.entities["timeline events"] = {k: totals[k] for k in ("inserted", "updated", "unchanged", "skipped")}
    ctx.result.entities["compensation snapshots"] = {"inserted": compensation}
    ctx.result.entities["seniority snapshots"] = {"inserted": seniority}
    ctx.file_result(f).counts = totals


def _compare_existing(ctx: StageContext) -> int:
    """Events of the file that already exist, with their stored values and the file's (temp table
    hx); returns how many of them differ."""
    temp_table(ctx.conn, "hx", """
        SELECT hv.row_number, ev.id AS event_id,
               jsonb_build_object('summary', ev.summary, 'details', ev.details, 'salary', c.salary,
                   'previous_salary', c.previous_salary, 'currency', c.currency, 'pay_band', c.pay_band,
                   'ladder_id', s.ladder_id, 'level_number', s.level_number,
                   'previous_level_number', s.previous_level_number, 'title', s.title) AS before,
               jsonb_build_object('summary', hv.summary, 'details', hv.details,
                   'salary', coalesce(hv.salary, c.salary), 'previous_salary', coalesce(hv.previous_salary, c.previous_salary),
                   'currency', CASE WHEN hv.salary IS NULL THEN c.currency ELSE hv.currency END,
                   'pay_band', coalesce(hv.pay_band, c.pay_band), 'ladder_id', coalesce(hv.ladder_id, s.ladder_id),
                   'level_number', coalesce(hv.level_number, s.level_number),
                   'previous_level_number', coalesce(hv.previous_level_number, s.previous_level_number),
                   'title', CASE WHEN hv.ladder_id IS NULL THEN s.title ELSE coalesce(hv.title, s.title) END) AS after
        FROM hv JOIN hrms.history_timelineevent ev
             ON ev.employee_id = hv.employee_id AND ev.event_type = hv.event_type AND ev.event_date = hv.event_date
        LEFT JOIN hrms.history_compensationsnapshot c ON c.event_id = ev.id
        LEFT JOIN hrms.history_senioritysnapshot s ON s.event_id = ev.id""")
    return ctx.conn.execute("SELECT count(*) FROM hx WHERE before IS DISTINCT FROM after").fetchone()[0]


def _update_existing(ctx: StageContext, record: str) -> int:
    """Existing events whose stored values differ from the file's: audit, then update the event and
    upsert its snapshots, each row's before-image captured for undo first."""
    conn = ctx.conn
    conn.execute(f"""
        INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id)
        SELECT %s, %s, 'update', 'history_timelineevent', event_id::text, before, after, {record}
        FROM hx WHERE before IS DISTINCT FROM after""", [ctx.run_id, ctx.audit_source()])
    differing = "SELECT hx.event_id FROM hx WHERE hx.before IS DISTINCT FROM hx.after"
    changes.record_before(conn, "history_timelineevent", record,
                          f"SELECT ev.* FROM hrms.history_timelineevent ev WHERE ev.id IN ({differing})")
    updated = conn.execute("""
        UPDATE hrms.history_timelineevent ev SET summary = hv.summary, details = hv.details, updated_at = now()
        FROM hx JOIN hv USING (row_number)
        WHERE ev.id = hx.event_id AND hx.before IS DISTINCT FROM hx.after""").rowcount
    for table, condition in (("history_compensationsnapshot", "hv.salary IS NOT NULL"),
                             ("history_senioritysnapshot", "hv.ladder_id IS NOT NULL")):
        changes.record_before(conn, table, record, f"""
            SELECT s.* FROM hrms.{table} s JOIN hx ON hx.event_id = s.event_id JOIN hv USING (row_number)
            WHERE hx.before IS DISTINCT FROM hx.after AND {condition}""")
    conn.execute(f"""
        WITH up AS (
            INSERT INTO hrms.history_compensationsnapshot
                (event_id, employee_id, effective_date, salary, previous_salary, currency, pay_band, import_record_id)
            SELECT hx.event_id, hv.employee_id, hv.event_date, hv.salary, hv.previous_salary, hv.currency, hv.pay_band, {record}
            FROM hx JOIN hv USING (row_number) WHERE hx.before IS DISTINCT FROM hx.after AND hv.salary IS NOT NULL
            ON CONFLICT (event_id) DO UPDATE SET salary = excluded.salary,
                previous_salary = coalesce(excluded.previous_salary, hrms.history_compensationsnapshot.previous_salary),
                currency = excluded.currency,
                pay_band = coalesce(excluded.pay_band, hrms.history_compensationsnapshot.pay_band), updated_at = now()
            RETURNING id
        ), ins AS (SELECT id FROM up WHERE id NOT IN (SELECT id FROM _cc_before WHERE table_name = 'history_compensationsnapshot'))
        {changes.capture_inserted("history_compensationsnapshot", record)}""")
    conn.execute(f"""
        WITH up AS (
            INSERT INTO hrms.history_senioritysnapshot
                (event_id, employee_id, effective_date, ladder_id, level_number, previous_level_number, title, import_record_id)
            SELECT hx.event_id, hv.employee_id, hv.event_date, hv.ladder_id, hv.level_number, hv.previous_level_number, hv.title, {record}
            FROM hx JOIN hv USING (row_number) WHERE hx.before IS DISTINCT FROM hx.after AND hv.ladder_id IS NOT NULL
            ON CONFLICT (event_id) DO UPDATE SET ladder_id = excluded.ladder_id,
                level_number = coalesce(excluded.level_number, hrms.history_senioritysnapshot.level_number),
                previous_level_number = coalesce(excluded.previous_level_number, hrms.history_senioritysnapshot.previous_level_number),
                title = coalesce(excluded.title, hrms.history_senioritysnapshot.title), updated_at = now()
            RETURNING id
        ), ins AS (SELECT id FROM up WHERE id NOT IN (SELECT id FROM _cc_before WHERE table_name = 'history_senioritysnapshot'))
        {changes.capture_inserted("history_senioritysnapshot", record)}""")
    return updated


# An appended tail is merged alone only when none of its events exists yet (appends.py).
APPEND_GUARD = appends.new_keys_guard("""
    SELECT count(*) FROM {staging} s JOIN hrms.employees_employee e ON e.email = lower(nullif(btrim(s.email), ''))
    JOIN hrms.history_timelineevent ev ON ev.employee_id = e.id AND ev.event_type = lower(nullif(btrim(s.event_type), ''))
     AND ev.event_date::text = btrim(s.event_date)""")


def line_key(info: reader.FileInfo) -> str:
    """An event's natural key over a staging row, as the stage resolves it (email, type, date)."""
    return (f"{email(info, 'email')} || '|' || lower({cell(info, 'event_type')}) || '|' || "
            f"({cell(info, 'event_date')})::date::text")


STAGE = Stage(NAME, TABLES, files, record_options, apply, append_guard=APPEND_GUARD,
              line_keys=linehash.LineKeys(line_key, "timeline events"))
