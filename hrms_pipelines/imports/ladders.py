"""Stage 1, ladders: one file whose rows are ladders, aspects or levels.

The row type is the `row_type` cell when filled, else detected per row: a row with a level_number
is a level, else one with an aspect_code is an aspect, else it is a ladder. `ladders_only`,
`aspects_only` and `levels_only` import only those sections (several may be combined); the other
rows are counted as skipped. Aspects and levels name their ladder by `ladder_code`: a ladder row of
the same import or one already in the database.
"""

from __future__ import annotations

import pandas as pd

from hrms_pipelines.imports import formats, reader, schemas
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.imports.stage import Merge, Stage, StageContext, add, merge, sql_rejects, temp_table, zero
from hrms_pipelines.imports.staging import cell, duplicates

NAME = "ladders"
TABLES = ("hrms.ladders_ladder", "hrms.ladders_aspect", "hrms.ladders_level", "hrms.imports_importrecord")


def files(options: ImportOptions):
    return [options.file(options.ladders_file)] if options.ladders_file else []


def sections(options: ImportOptions) -> list[str]:
    chosen = [t for t, flag in (("ladder", options.ladders_only), ("aspect", options.aspects_only),
                                ("level", options.levels_only)) if flag]
    return chosen or list(formats.LADDER_ROW_TYPES)


def record_options(options: ImportOptions) -> dict:
    return {"force_update": options.force_update, "sections": sections(options)}


def detect_row_type(chunk: pd.DataFrame) -> pd.DataFrame:
    """Fill row_type per row the way the SQL below does (for the Pandera rules that depend on it)."""
    def col(name):
        return chunk[name].str.strip() if name in chunk.columns else pd.Series("", index=chunk.index)

    given = col("row_type").str.lower()
    detected = pd.Series("ladder", index=chunk.index).mask(col("aspect_code").ne(""), "aspect").mask(col("level_number").ne(""), "level")
    chunk = chunk.copy()
    chunk["row_type"] = given.where(given.ne(""), detected)
    return chunk


def apply(ctx: StageContext, infos: list[reader.FileInfo]) -> None:
    info = infos[0]
    conn = ctx.conn
    reader.check_columns(info, ("ladder_code",), formats.LADDERS_COLUMNS, ctx.log.warning, rejects=ctx.rejects)
    rows = ctx.load(info, "stg_ladders", schemas.LaddersFile, prepare=detect_row_type)
    ctx.fail_if_rejected(f"{info.name} cannot be imported")
    c = lambda name: cell(info, name)  # noqa: E731
    row_type = (f"coalesce(lower({c('row_type')}), CASE WHEN {c('level_number')} IS NOT NULL THEN 'level' "
                f"WHEN {c('aspect_code')} IS NOT NULL THEN 'aspect' ELSE 'ladder' END)")
    temp_table(conn, "ld", f"""
        SELECT s.row_number, {row_type} AS row_type, {c('ladder_code')} AS ladder_code, {c('ladder_name')} AS ladder_name,
               {c('aspect_code')} AS aspect_code, {c('aspect_name')} AS aspect_name, {c('position')}::smallint AS position,
               {c('level_number')}::smallint AS level_number, {c('level_title')} AS level_title, {c('pay_band')} AS pay_band,
               {c('salary_min')}::numeric(12,2) AS salary_min, {c('salary_max')}::numeric(12,2) AS salary_max,
               {c('currency')} AS currency, {c('description')} AS description
        FROM stg_ladders s""")
    wanted = sections(ctx.options)
    for kind, key, label in (("ladder", "ladder_code", "ladder_code"),
                             ("aspect", "ladder_code || '/' || aspect_code", "aspect_code"),
                             ("level", "ladder_code || '/' || level_number", "level_number")):
        sql_rejects(ctx, info.name, duplicates("ld", key, label, f"row_type = '{kind}'"))
    ctx.fail_if_rejected(f"{info.name} cannot be imported")

    record = str(ctx.record_ids[info.name])
    update = ctx.options.force_update
    totals = zero()
    totals["rows_read"] = rows
    if "ladder" in wanted:
        temp_table(conn, "src_ladder", "SELECT row_number, ladder_code AS code, ladder_name AS name, description "
                                       "FROM ld WHERE row_type = 'ladder'")
        add(totals, merge(ctx, Merge("hrms.ladders_ladder", ("code",), ("name", "description"), "src_ladder", "ladders"),
                           update=update, record_id_sql=record))
    for kind in ("aspect", "level"):
        if kind not in wanted:
            continue
        sql_rejects(ctx, info.name, """
            SELECT d.row_number, 'ladder_code', d.ladder_code,
                   'unknown ladder (not in the database' || CASE WHEN %s THEN ' nor among this file''s ladder rows' ELSE
                   '; ladder rows of this file are not imported with this section selection' END || ')'
            FROM ld d LEFT JOIN hrms.ladders_ladder l ON l.code = d.ladder_code
            WHERE d.row_type = %s AND l.id IS NULL ORDER BY d.row_number""", ["ladder" in wanted, kind])
    ctx.fail_if_rejected(f"{info.name} cannot be imported")
    if "aspect" in wanted:
        temp_table(conn, "src_aspect", """
            SELECT d.row_number, l.id AS ladder_id, d.aspect_code AS code, d.aspect_name AS name, d.description, d.position
            FROM ld d JOIN hrms.ladders_ladder l ON l.code = d.ladder_code WHERE d.row_type = 'aspect'""")
        add(totals, merge(ctx, Merge("hrms.ladders_aspect", ("ladder_id", "code"), ("name", "description", "position"),
                                      "src_aspect", "aspects"), update=update, record_id_sql=record))
    if "level" in wanted:
        temp_table(conn, "src_level", """
            SELECT d.row_number, l.id AS ladder_id, d.level_number, d.level_title AS title, d.pay_band,
                   d.salary_min, d.salary_max, coalesce(d.currency, 'GHS') AS currency
            FROM ld d JOIN hrms.ladders_ladder l ON l.code = d.ladder_code WHERE d.row_type = 'level'""")
        add(totals, merge(ctx, Merge("hrms.ladders_level", ("ladder_id", "level_number"),
                                      ("title", "pay_band", "salary_min", "salary_max", "currency"), "src_level", "levels"),
                           update=update, record_id_sql=record))
    not_selected = conn.execute("SELECT count(*) FROM ld WHERE NOT (row_type = ANY(%s))", [wanted]).fetchone()[0]
    totals["skipped"] += not_selected
    ctx.file_result(info.name).counts = totals
    if not_selected:
        ctx.log.info(f"{info.name}: {not_selected} row(s) of unselected sections skipped (importing {', '.join(wanted)} rows)")


STAGE = Stage(NAME, TABLES, files, record_options, apply)
