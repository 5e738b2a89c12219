"""What a dry run shows (django-import-export's preview): per table, the first rows a stage would
insert and, for each row it would update, every changed field as before -> after, with the totals.

Built from the change capture of the rolled-back transaction (hrms_pipelines.imports.changes), so it
shows exactly what the stage wrote before the rollback. Personal and pay values are masked
(hrms_pipelines.privacy) keeping their shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from hrms_pipelines import privacy
from hrms_pipelines.imports import changes
from hrms_pipelines.metadata import markdown_table

SHOWN_INSERTS = 10
SHOWN_UPDATES = 20
HIDDEN = ("id", "created_at", "updated_at", "import_record_id")


@dataclass
class TablePreview:
    table: str
    inserted: int = 0
    updated: int = 0
    insert_headers: list[str] = field(default_factory=list)
    insert_rows: list[list] = field(default_factory=list)      # masked
    changes: list[list] = field(default_factory=list)          # [row, field, before, after], masked

    def markdown(self) -> str:
        parts = [f"**{self.table}**: would insert {self.inserted:,}, would update {self.updated:,}"]
        if self.insert_rows:
            parts.append(f"first {len(self.insert_rows)} of {self.inserted:,} inserts:\n\n"
                         + markdown_table(self.insert_headers, self.insert_rows))
        if self.changes:
            rows = len({c[0] for c in self.changes})
            parts.append(f"changed fields of the first {rows} of {self.updated:,} updates (before -> after):\n\n"
                         + markdown_table(["row", "field", "before", "after"], self.changes))
        return "\n\n".join(parts)


def _show(table: str, row: dict) -> str:
    """A row named by its natural key (masked), e.g. 'k***@nhia.gov.gh' or 'MOBILE'."""
    keys = changes.NATURAL_KEYS[table]
    return " / ".join(str(privacy.mask_cell(k, row.get(k), table)) for k in keys)


def build(conn: psycopg.Connection) -> list[TablePreview]:
    """The preview of everything captured so far in this transaction."""
    changes.pin_settings(conn)
    found = dict(conn.execute(
        "SELECT table_name, count(*) FROM _cc_inserted GROUP BY 1").fetchall())
    updated = dict(conn.execute(
        "SELECT b.table_name, count(*) FROM _cc_before b WHERE NOT EXISTS "
        "(SELECT FROM _cc_inserted i WHERE i.table_name = b.table_name AND i.id = b.id) GROUP BY 1").fetchall())
    previews = []
    for table in changes.TABLES:
        if not found.get(table) and not updated.get(table):
            continue
        p = TablePreview(table, inserted=found.get(table, 0), updated=updated.get(table, 0))
        if p.inserted:
            cur = conn.execute(f"SELECT t.* FROM hrms.{table} t WHERE t.id IN "
                               f"(SELECT id FROM _cc_inserted WHERE table_name = %s ORDER BY id LIMIT {SHOWN_INSERTS}) ORDER BY t.id",
                               [table])
            names = [d.name for d in cur.description]
            shown = [i for i, n in enumerate(names) if n not in HIDDEN]
            p.insert_headers = [names[i] for i in shown]
            p.insert_rows = privacy.mask_rows(p.insert_headers, [[r[i] for i in shown] for r in cur.fetchall()], table)
        if p.updated:
            rows = conn.execute(f"""
                SELECT {changes.as_text(f'b.before::hrms.{table}')}, {changes.as_text('t')} FROM _cc_before b JOIN hrms.{table} t ON t.id = b.id
                WHERE b.table_name = %s AND NOT EXISTS (SELECT FROM _cc_inserted i WHERE i.table_name = b.table_name AND i.id = b.id)
                ORDER BY b.id LIMIT {SHOWN_UPDATES}""", [table]).fetchall()
            for before, after in rows:
                for column in after:
                    if column in HIDDEN or before.get(column) == after.get(column):
                        continue
                    p.changes.append([_show(table, after), column, privacy.mask_cell(column, before.get(column), table),
                                      privacy.mask_cell(column, after.get(column), table)])
        previews.append(p)
    return previews


def markdown(previews: list[TablePreview]) -> str:
    if not previews:
        return "nothing would be inserted or updated"
    return "\n\n".join(p.markdown() for p in previews)
