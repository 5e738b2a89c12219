"""The seed's post-import validations, as SQL over the HR tables, each in two sizes.

- **Scoped** (`Validation.scoped`): the rows a stage inserted or updated and their direct
  relations -- all that the stage can have broken. A stage runs these inside its own transaction
  before commit (a failing blocking one rolls it back), over its touched keys (the change capture's
  temporary tables, hrms_pipelines.imports.changes). The asset checks of an `hrms_import` run
  report what the stage found; nothing is validated twice in one run.
- **Whole tables** (`Validation.query`): every row. The `validate_hr_data` job runs them (the same
  asset checks, tagged `hrms/validation_scope: whole_tables`), when asked or on its schedule.

Scoped queries name their scope with placeholders: `{touched:TABLE}`, the ids of the changed rows
of TABLE, and `{before:TABLE}`, those rows as they were before the change (to follow a relation
the change moved away from). A `Scope` turns them into SQL: the stage's temporary tables, or the
undo store's rows of a run's import records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from hrms_pipelines import privacy
from hrms_pipelines.imports import changes, formats

LIMIT = 50
_PLACEHOLDER = re.compile(r"\{(touched|before):(\w+)\}")


class Scope:
    """Where the touched keys come from."""

    label = "whole tables"

    def touched(self, table: str) -> str:
        raise NotImplementedError

    def before(self, table: str) -> str:
        raise NotImplementedError

    def render(self, template: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.touched(m[2]) if m[1] == "touched" else self.before(m[2]), template)


class StageScope(Scope):
    """Inside a stage's transaction: its change-capture tables."""

    label = "rows this stage inserted or updated, and their direct relations"

    def touched(self, table: str) -> str:
        return changes.touched_sql(table)

    def before(self, table: str) -> str:
        return changes.before_rows_sql(table)


class RecordsScope(Scope):
    """After the fact: what the undo store holds for some import records (a run's)."""

    def __init__(self, record_ids: list[int]):
        self.records = "ARRAY[" + ", ".join(str(int(r)) for r in record_ids) + "]::bigint[]"
        self.label = f"rows import record(s) {', '.join(f'#{r}' for r in record_ids)} inserted or updated, and their direct relations"

    def touched(self, table: str) -> str:
        name = changes.bare(table)
        return (f"(SELECT unnest(row_ids) FROM hrms.imports_undoinsert WHERE import_record_id = ANY({self.records}) "
                f"AND table_name = '{name}' UNION ALL SELECT row_id FROM hrms.imports_undoupdate "
                f"WHERE import_record_id = ANY({self.records}) AND table_name = '{name}')")

    def before(self, table: str) -> str:
        name = changes.bare(table)
        return (f"(SELECT (u.before::hrms.{name}).* FROM hrms.imports_undoupdate u "
                f"WHERE u.import_record_id = ANY({self.records}) AND u.table_name = '{name}')")


@dataclass(frozen=True)
class Validation:
    name: str
    stage: str
    description: str
    headers: tuple[str, ...]
    query: str              # whole tables: returns the offending rows (any number); run with a LIMIT
    scoped: str             # the same over {touched:...} / {before:...} rows
    blocking: bool = False  # ERROR severity and stops the next stage
    table: str | None = None  # the table whose columns the headers name (for masking)

    def offending(self, conn: psycopg.Connection, limit: int = LIMIT, scope: Scope | None = None) -> tuple[int, list[tuple]]:
        """(how many rows offend, the first `limit` of them) -- over whole tables, or over `scope`."""
        if scope is not None:
            query = scope.render(self.scoped)
            count = conn.execute(f"SELECT count(*) FROM ({query}) q").fetchone()[0]
            rows = conn.execute(f"SELECT * FROM ({query}) q LIMIT {int(limit)}").fetchall() if count else []
            return count, rows
        # Whole-table checks, for which a hash join is always the right plan. The planner can think
        # otherwise when the statistics are from before this import: autovacuum having analyzed a
        # table after a rolled-back import (many pages, no live rows) makes a million new rows look
        # like none, and a nested loop over them runs for hours.
        with conn.transaction():
            previous = conn.execute("SELECT current_setting('enable_nestloop')").fetchone()[0]
            conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
            count = conn.execute(f"SELECT count(*) FROM ({self.query}) q").fetchone()[0]
            rows = conn.execute(f"SELECT * FROM ({self.query}) q LIMIT {int(limit)}").fetchall() if count else []
            conn.execute("SELECT set_config('enable_nestloop', %s, true)", [previous])
        return count, rows

    def masked(self, rows: list[tuple]) -> list[list]:
        """Offending rows as they may be shown (logs, metadata, failure messages): personal data masked."""
        masked = privacy.mask_rows(self.headers, rows, self.table)
        # free text of a row ("manager k.owusu@... is terminated") can quote an email too
        return [[privacy.scrub_text(v) if isinstance(v, str) else v for v in row] for row in masked]


_LEADERS = ("SELECT 'tribe' kind, id, code, lead_id leader FROM hrms.org_tribe"
            " UNION ALL SELECT 'chapter', id, code, leader_id FROM hrms.org_chapter"
            " UNION ALL SELECT 'team', id, code, leader_id FROM hrms.org_team")
_LEADERS_TOUCHED = ("SELECT 'tribe' kind, id, code, lead_id leader FROM hrms.org_tribe WHERE id IN {touched:org_tribe} "
                    "OR lead_id IN {touched:employees_employee}"
                    " UNION ALL SELECT 'chapter', id, code, leader_id FROM hrms.org_chapter WHERE id IN {touched:org_chapter} "
                    "OR leader_id IN {touched:employees_employee}"
                    " UNION ALL SELECT 'team', id, code, leader_id FROM hrms.org_team WHERE id IN {touched:org_team} "
                    "OR leader_id IN {touched:employees_employee}")
_GAP = ("CASE WHEN v.level_number NOT BETWEEN 1 AND 20 THEN 'outside 1..20' ELSE 'level ' || (v.level_number - 1) || ' is missing' END")
_GAP_WHERE = ("(v.level_number NOT BETWEEN 1 AND 20 OR (v.level_number > 1 AND NOT EXISTS "
              "(SELECT FROM hrms.ladders_level p WHERE p.ladder_id = v.ladder_id AND p.level_number = v.level_number - 1)))")
_MISSING_RELATIONSHIP = ("((ev.event_type IN ('promotion', 'demotion', 'level_change') AND NOT EXISTS "
                         "(SELECT FROM hrms.history_senioritysnapshot s WHERE s.event_id = ev.id)) OR "
                         "(ev.event_type = 'salary_change' AND NOT EXISTS "
                         "(SELECT FROM hrms.history_compensationsnapshot c WHERE c.event_id = ev.id)))")
_EVENT_TYPES = "(" + ", ".join(f"'{t}'" for t in formats.EVENT_TYPES) + ")"

VALIDATIONS: tuple[Validation, ...] = (
    # ladders
    Validation("ladders_without_aspects", "ladders", "Ladders that have no aspects.", ("ladder",),
               "SELECT l.code FROM hrms.ladders_ladder l WHERE NOT EXISTS "
               "(SELECT FROM hrms.ladders_aspect a WHERE a.ladder_id = l.id) ORDER BY l.code",
               "SELECT l.code FROM hrms.ladders_ladder l WHERE l.id IN {touched:ladders_ladder} AND NOT EXISTS "
               "(SELECT FROM hrms.ladders_aspect a WHERE a.ladder_id = l.id) ORDER BY l.code"),
    Validation("aspects_without_ladders", "ladders", "Aspects whose ladder does not exist.", ("aspect id", "aspect", "ladder id"),
               "SELECT a.id, a.code, a.ladder_id FROM hrms.ladders_aspect a LEFT JOIN hrms.ladders_ladder l "
               "ON l.id = a.ladder_id WHERE l.id IS NULL ORDER BY a.id",
               "SELECT a.id, a.code, a.ladder_id FROM hrms.ladders_aspect a LEFT JOIN hrms.ladders_ladder l "
               "ON l.id = a.ladder_id WHERE a.id IN {touched:ladders_aspect} AND l.id IS NULL ORDER BY a.id", blocking=True),
    Validation("ladders_without_levels", "ladders", "Missing ladder relationships: ladders that have no levels.", ("ladder",),
               "SELECT l.code FROM hrms.ladders_ladder l WHERE NOT EXISTS "
               "(SELECT FROM hrms.ladders_level v WHERE v.ladder_id = l.id) ORDER BY l.code",
               "SELECT l.code FROM hrms.ladders_ladder l WHERE l.id IN {touched:ladders_ladder} AND NOT EXISTS "
               "(SELECT FROM hrms.ladders_level v WHERE v.ladder_id = l.id) ORDER BY l.code"),
    Validation("invalid_level_numbers", "ladders",
               "Level numbers outside 1..20, or a gap in a ladder's numbering (levels must run 1, 2, 3, ...).",
               ("ladder", "level", "problem"),
               f"SELECT l.code, v.level_number, {_GAP} FROM hrms.ladders_level v JOIN hrms.ladders_ladder l ON l.id = v.ladder_id "
               f"WHERE {_GAP_WHERE} ORDER BY l.code, v.level_number",
               f"SELECT l.code, v.level_number, {_GAP} FROM hrms.ladders_level v JOIN hrms.ladders_ladder l ON l.id = v.ladder_id "
               "WHERE v.ladder_id IN (SELECT t.ladder_id FROM hrms.ladders_level t WHERE t.id IN {touched:ladders_level}) "
               f"AND {_GAP_WHERE} ORDER BY l.code, v.level_number", blocking=True),
    # organisation
    Validation("teams_without_tribes", "org", "Teams that belong to no tribe.", ("team", "name"),
               "SELECT code, name FROM hrms.org_team WHERE tribe_id IS NULL ORDER BY code",
               "SELECT code, name FROM hrms.org_team WHERE id IN {touched:org_team} AND tribe_id IS NULL ORDER BY code"),
    Validation("invalid_leader_references", "org",
               "Tribe, chapter and team leaders who are terminated or inactive employees.",
               ("entity", "code", "leader_email", "status"),
               f"SELECT x.kind, x.code, e.email, e.status FROM ({_LEADERS}) x JOIN hrms.employees_employee e ON e.id = x.leader "
               "WHERE e.status IN ('terminated', 'inactive') ORDER BY 1, 2",
               f"SELECT x.kind, x.code, e.email, e.status FROM ({_LEADERS_TOUCHED}) x JOIN hrms.employees_employee e ON e.id = x.leader "
               "WHERE e.status IN ('terminated', 'inactive') ORDER BY 1, 2", blocking=True,
               table="employees_employee"),
    Validation("missing_departments", "org", "Teams without a department.", ("team", "name"),
               "SELECT code, name FROM hrms.org_team WHERE department_id IS NULL ORDER BY code",
               "SELECT code, name FROM hrms.org_team WHERE id IN {touched:org_team} AND department_id IS NULL ORDER BY code"),
    Validation("orphaned_org_entities", "org",
               "Organisation entities that hang loose: tribes without teams, organizations without departments.",
               ("entity", "code"),
               "SELECT 'tribe', t.code FROM hrms.org_tribe t WHERE NOT EXISTS (SELECT FROM hrms.org_team m WHERE m.tribe_id = t.id) "
               "UNION ALL SELECT 'organization', o.code FROM hrms.org_organization o "
               "WHERE NOT EXISTS (SELECT FROM hrms.org_department d WHERE d.organization_id = o.id) ORDER BY 1, 2",
               # the tribes and organizations a changed team or department belongs to, or belonged to before
               "SELECT 'tribe', t.code FROM hrms.org_tribe t WHERE t.id IN "
               "(SELECT id FROM {touched:org_tribe} x(id) UNION ALL SELECT b.tribe_id FROM {before:org_team} b) "
               "AND NOT EXISTS (SELECT FROM hrms.org_team m WHERE m.tribe_id = t.id) "
               "UNION ALL SELECT 'organization', o.code FROM hrms.org_organization o WHERE o.id IN "
               "(SELECT id FROM {touched:org_organization} x(id) UNION ALL SELECT b.organization_id FROM {before:org_department} b) "
               "AND NOT EXISTS (SELECT FROM hrms.org_department d WHERE d.organization_id = o.id) ORDER BY 1, 2"),
    # users
    Validation("users_without_required_fields", "users",
               "Employees (not placeholders) without first name, last name or status.",
               ("email", "first_name", "last_name", "status"),
               "SELECT email, first_name, last_name, status FROM hrms.employees_employee WHERE NOT is_placeholder AND "
               "(coalesce(btrim(first_name), '') = '' OR coalesce(btrim(last_name), '') = '' OR status IS NULL) ORDER BY email",
               "SELECT email, first_name, last_name, status FROM hrms.employees_employee WHERE id IN {touched:employees_employee} "
               "AND NOT is_placeholder AND "
               "(coalesce(btrim(first_name), '') = '' OR coalesce(btrim(last_name), '') = '' OR status IS NULL) ORDER BY email",
               blocking=True, table="employees_employee"),
    Validation("duplicate_emails", "users", "Email addresses held by more than one employee (after trim and lower case).",
               ("email", "employees"),
               "SELECT lower(btrim(email)), count(*) FROM hrms.employees_employee GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
               # emails are stored trimmed and lower case (a CHECK), so the unique index finds the namesakes
               "SELECT lower(btrim(email)), count(*) FROM hrms.employees_employee WHERE email IN "
               "(SELECT lower(btrim(c.email)) FROM hrms.employees_employee c WHERE c.id IN {touched:employees_employee}) "
               "GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
               blocking=True, table="employees_employee"),
    Validation("orphaned_relationships", "users",
               "Placeholder leaders no users file has completed yet, and employees managed by a terminated employee.",
               ("email", "problem"),
               "SELECT email, 'placeholder never completed by a users file' FROM hrms.employees_employee WHERE is_placeholder "
               "UNION ALL SELECT e.email, 'manager ' || m.email || ' is terminated' FROM hrms.employees_employee e "
               "JOIN hrms.employees_employee m ON m.id = e.manager_id WHERE m.status = 'terminated' "
               "AND coalesce(e.status, '') <> 'terminated' ORDER BY 1",
               # the touched employees, and the employees a touched employee manages (manager_id is indexed)
               "SELECT email, 'placeholder never completed by a users file' FROM hrms.employees_employee "
               "WHERE id IN {touched:employees_employee} AND is_placeholder "
               "UNION ALL SELECT e.email, 'manager ' || m.email || ' is terminated' FROM hrms.employees_employee e "
               "JOIN hrms.employees_employee m ON m.id = e.manager_id WHERE m.status = 'terminated' "
               "AND coalesce(e.status, '') <> 'terminated' AND e.id IN (SELECT id FROM {touched:employees_employee} x(id) "
               "UNION SELECT r.id FROM hrms.employees_employee r WHERE r.manager_id IN {touched:employees_employee}) ORDER BY 1",
               table="employees_employee"),
    Validation("invalid_team_references", "users",
               "Employees whose team belongs to another department than their department code.",
               ("email", "team", "employee department", "team department"),
               "SELECT e.email, t.code, e.department_code, d.code FROM hrms.employees_employee e "
               "JOIN hrms.org_team t ON t.id = e.team_id JOIN hrms.org_department d ON d.id = t.department_id "
               "WHERE e.department_code IS NOT NULL AND e.department_code <> d.code ORDER BY e.email",
               "SELECT e.email, t.code, e.department_code, d.code FROM hrms.employees_employee e "
               "JOIN hrms.org_team t ON t.id = e.team_id JOIN hrms.org_department d ON d.id = t.department_id "
               "WHERE e.id IN {touched:employees_employee} "
               "AND e.department_code IS NOT NULL AND e.department_code <> d.code ORDER BY e.email",
               table="employees_employee"),
    # history
    Validation("events_without_users", "history", "Timeline events whose employee does not exist.", ("event id", "employee id"),
               "SELECT ev.id, ev.employee_id FROM hrms.history_timelineevent ev LEFT JOIN hrms.employees_employee e "
               "ON e.id = ev.employee_id WHERE e.id IS NULL ORDER BY ev.id",
               "SELECT ev.id, ev.employee_id FROM hrms.history_timelineevent ev LEFT JOIN hrms.employees_employee e "
               "ON e.id = ev.employee_id WHERE ev.id IN {touched:history_timelineevent} AND e.id IS NULL ORDER BY ev.id",
               blocking=True),
    Validation("snapshots_without_users", "history",
               "Compensation or seniority snapshots whose employee is missing or differs from their event's.",
               ("snapshot", "id", "employee id", "event employee id"),
               "SELECT 'compensation', s.id, s.employee_id, ev.employee_id FROM hrms.history_compensationsnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id WHERE ev.employee_id IS DISTINCT FROM s.employee_id "
               "UNION ALL SELECT 'seniority', s.id, s.employee_id, ev.employee_id FROM hrms.history_senioritysnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id WHERE ev.employee_id IS DISTINCT FROM s.employee_id",
               # the touched snapshots and the snapshots of touched events (event_id is unique, so indexed)
               "SELECT 'compensation', s.id, s.employee_id, ev.employee_id FROM hrms.history_compensationsnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id "
               "WHERE s.id IN (SELECT id FROM {touched:history_compensationsnapshot} x(id) UNION SELECT c.id "
               "FROM hrms.history_compensationsnapshot c WHERE c.event_id IN {touched:history_timelineevent}) "
               "AND ev.employee_id IS DISTINCT FROM s.employee_id "
               "UNION ALL SELECT 'seniority', s.id, s.employee_id, ev.employee_id FROM hrms.history_senioritysnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id "
               "WHERE s.id IN (SELECT id FROM {touched:history_senioritysnapshot} x(id) UNION SELECT c.id "
               "FROM hrms.history_senioritysnapshot c WHERE c.event_id IN {touched:history_timelineevent}) "
               "AND ev.employee_id IS DISTINCT FROM s.employee_id",
               blocking=True),
    Validation("invalid_event_types", "history", "Timeline events with an event type outside the known list.",
               ("event id", "event type"),
               f"SELECT id, event_type FROM hrms.history_timelineevent WHERE event_type NOT IN {_EVENT_TYPES} ORDER BY id",
               "SELECT id, event_type FROM hrms.history_timelineevent WHERE id IN {touched:history_timelineevent} "
               f"AND event_type NOT IN {_EVENT_TYPES} ORDER BY id", blocking=True),
    Validation("events_missing_relationships", "history",
               "Promotions, demotions and level changes without a seniority snapshot; salary changes without a compensation snapshot.",
               ("event id", "email", "type", "date"),
               "SELECT ev.id, e.email, ev.event_type, ev.event_date FROM hrms.history_timelineevent ev "
               f"JOIN hrms.employees_employee e ON e.id = ev.employee_id WHERE {_MISSING_RELATIONSHIP} ORDER BY ev.id",
               "SELECT ev.id, e.email, ev.event_type, ev.event_date FROM hrms.history_timelineevent ev "
               "JOIN hrms.employees_employee e ON e.id = ev.employee_id WHERE ev.id IN {touched:history_timelineevent} "
               f"AND {_MISSING_RELATIONSHIP} ORDER BY ev.id", table="employees_employee"),
)

BY_STAGE: dict[str, list[Validation]] = {}
for _v in VALIDATIONS:
    BY_STAGE.setdefault(_v.stage, []).append(_v)
BY_NAME: dict[str, Validation] = {v.name: v for v in VALIDATIONS}
