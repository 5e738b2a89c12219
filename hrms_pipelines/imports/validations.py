"""The seed's post-import validations, as SQL over the HR tables.

Each one returns the offending rows. A stage runs its blocking ones inside its own transaction
before commit (a failure rolls the stage back); the asset checks run all of them after
materialization and show the offending rows in their metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from hrms_pipelines.imports import formats

LIMIT = 50


@dataclass(frozen=True)
class Validation:
    name: str
    stage: str
    description: str
    headers: tuple[str, ...]
    query: str              # returns the offending rows (any number); run with a LIMIT
    blocking: bool = False  # ERROR severity and stops the next stage

    def offending(self, conn: psycopg.Connection, limit: int = LIMIT) -> tuple[int, list[tuple]]:
        # These are whole-table checks, for which a hash join is always the right plan. The planner
        # can think otherwise when the statistics are from before this import: autovacuum having
        # analyzed a table after a rolled-back import (many pages, no live rows) makes a million new
        # rows look like none, and a nested loop over them runs for hours.
        with conn.transaction():
            previous = conn.execute("SELECT current_setting('enable_nestloop')").fetchone()[0]
            conn.execute("SELECT set_config('enable_nestloop', 'off', true)")
            count = conn.execute(f"SELECT count(*) FROM ({self.query}) q").fetchone()[0]
            rows = conn.execute(f"SELECT * FROM ({self.query}) q LIMIT {int(limit)}").fetchall() if count else []
            conn.execute("SELECT set_config('enable_nestloop', %s, true)", [previous])
        return count, rows


VALIDATIONS: tuple[Validation, ...] = (
    # ladders
    Validation("ladders_without_aspects", "ladders", "Ladders that have no aspects.", ("ladder",),
               "SELECT l.code FROM hrms.ladders_ladder l WHERE NOT EXISTS "
               "(SELECT FROM hrms.ladders_aspect a WHERE a.ladder_id = l.id) ORDER BY l.code"),
    Validation("aspects_without_ladders", "ladders", "Aspects whose ladder does not exist.", ("aspect id", "aspect", "ladder id"),
               "SELECT a.id, a.code, a.ladder_id FROM hrms.ladders_aspect a LEFT JOIN hrms.ladders_ladder l "
               "ON l.id = a.ladder_id WHERE l.id IS NULL ORDER BY a.id", blocking=True),
    Validation("ladders_without_levels", "ladders", "Missing ladder relationships: ladders that have no levels.", ("ladder",),
               "SELECT l.code FROM hrms.ladders_ladder l WHERE NOT EXISTS "
               "(SELECT FROM hrms.ladders_level v WHERE v.ladder_id = l.id) ORDER BY l.code"),
    Validation("invalid_level_numbers", "ladders",
               "Level numbers outside 1..20, or a gap in a ladder's numbering (levels must run 1, 2, 3, ...).",
               ("ladder", "level", "problem"),
               "SELECT l.code, v.level_number, CASE WHEN v.level_number NOT BETWEEN 1 AND 20 THEN 'outside 1..20' "
               "ELSE 'level ' || (v.level_number - 1) || ' is missing' END "
               "FROM hrms.ladders_level v JOIN hrms.ladders_ladder l ON l.id = v.ladder_id "
               "WHERE v.level_number NOT BETWEEN 1 AND 20 OR (v.level_number > 1 AND NOT EXISTS "
               "(SELECT FROM hrms.ladders_level p WHERE p.ladder_id = v.ladder_id AND p.level_number = v.level_number - 1)) "
               "ORDER BY l.code, v.level_number", blocking=True),
    # organisation
    Validation("teams_without_tribes", "org", "Teams that belong to no tribe.", ("team", "name"),
               "SELECT code, name FROM hrms.org_team WHERE tribe_id IS NULL ORDER BY code"),
    Validation("invalid_leader_references", "org",
               "Tribe, chapter and team leaders who are terminated or inactive employees.",
               ("entity", "code", "leader", "status"),
               "SELECT x.kind, x.code, e.email, e.status FROM ("
               " SELECT 'tribe' kind, code, lead_id leader FROM hrms.org_tribe"
               " UNION ALL SELECT 'chapter', code, leader_id FROM hrms.org_chapter"
               " UNION ALL SELECT 'team', code, leader_id FROM hrms.org_team) x "
               "JOIN hrms.employees_employee e ON e.id = x.leader "
               "WHERE e.status IN ('terminated', 'inactive') ORDER BY 1, 2", blocking=True),
    Validation("missing_departments", "org", "Teams without a department.", ("team", "name"),
               "SELECT code, name FROM hrms.org_team WHERE department_id IS NULL ORDER BY code"),
    Validation("orphaned_org_entities", "org",
               "Organisation entities that hang loose: tribes without teams, organizations without departments.",
               ("entity", "code"),
               "SELECT 'tribe', t.code FROM hrms.org_tribe t WHERE NOT EXISTS (SELECT FROM hrms.org_team m WHERE m.tribe_id = t.id) "
               "UNION ALL SELECT 'organization', o.code FROM hrms.org_organization o "
               "WHERE NOT EXISTS (SELECT FROM hrms.org_department d WHERE d.organization_id = o.id) ORDER BY 1, 2"),
    # users
    Validation("users_without_required_fields", "users",
               "Employees (not placeholders) without first name, last name or status.",
               ("email", "first_name", "last_name", "status"),
               "SELECT email, first_name, last_name, status FROM hrms.employees_employee WHERE NOT is_placeholder AND "
               "(coalesce(btrim(first_name), '') = '' OR coalesce(btrim(last_name), '') = '' OR status IS NULL) ORDER BY email",
               blocking=True),
    Validation("duplicate_emails", "users", "Email addresses held by more than one employee (after trim and lower case).",
               ("email", "employees"),
               "SELECT lower(btrim(email)), count(*) FROM hrms.employees_employee GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
               blocking=True),
    Validation("orphaned_relationships", "users",
               "Placeholder leaders no users file has completed yet, and employees managed by a terminated employee.",
               ("email", "problem"),
               "SELECT email, 'placeholder never completed by a users file' FROM hrms.employees_employee WHERE is_placeholder "
               "UNION ALL SELECT e.email, 'manager ' || m.email || ' is terminated' FROM hrms.employees_employee e "
               "JOIN hrms.employees_employee m ON m.id = e.manager_id WHERE m.status = 'terminated' "
               "AND coalesce(e.status, '') <> 'terminated' ORDER BY 1"),
    Validation("invalid_team_references", "users",
               "Employees whose team belongs to another department than their department code.",
               ("email", "team", "employee department", "team department"),
               "SELECT e.email, t.code, e.department_code, d.code FROM hrms.employees_employee e "
               "JOIN hrms.org_team t ON t.id = e.team_id JOIN hrms.org_department d ON d.id = t.department_id "
               "WHERE e.department_code IS NOT NULL AND e.department_code <> d.code ORDER BY e.email"),
    # history
    Validation("events_without_users", "history", "Timeline events whose employee does not exist.", ("event id", "employee id"),
               "SELECT ev.id, ev.employee_id FROM hrms.history_timelineevent ev LEFT JOIN hrms.employees_employee e "
               "ON e.id = ev.employee_id WHERE e.id IS NULL ORDER BY ev.id", blocking=True),
    Validation("snapshots_without_users", "history",
               "Compensation or seniority snapshots whose employee is missing or differs from their event's.",
               ("snapshot", "id", "employee id", "event employee id"),
               "SELECT 'compensation', s.id, s.employee_id, ev.employee_id FROM hrms.history_compensationsnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id WHERE ev.employee_id IS DISTINCT FROM s.employee_id "
               "UNION ALL SELECT 'seniority', s.id, s.employee_id, ev.employee_id FROM hrms.history_senioritysnapshot s "
               "LEFT JOIN hrms.history_timelineevent ev ON ev.id = s.event_id WHERE ev.employee_id IS DISTINCT FROM s.employee_id",
               blocking=True),
    Validation("invalid_event_types", "history", "Timeline events with an event type outside the known list.",
               ("event id", "event type"),
               "SELECT id, event_type FROM hrms.history_timelineevent WHERE event_type NOT IN ("
               + ", ".join(f"'{t}'" for t in formats.EVENT_TYPES) + ") ORDER BY id", blocking=True),
    Validation("events_missing_relationships", "history",
               "Promotions, demotions and level changes without a seniority snapshot; salary changes without a compensation snapshot.",
               ("event id", "email", "type", "date"),
               "SELECT ev.id, e.email, ev.event_type, ev.event_date FROM hrms.history_timelineevent ev "
               "JOIN hrms.employees_employee e ON e.id = ev.employee_id WHERE "
               "(ev.event_type IN ('promotion', 'demotion', 'level_change') AND NOT EXISTS "
               "(SELECT FROM hrms.history_senioritysnapshot s WHERE s.event_id = ev.id)) OR "
               "(ev.event_type = 'salary_change' AND NOT EXISTS "
               "(SELECT FROM hrms.history_compensationsnapshot c WHERE c.event_id = ev.id)) ORDER BY ev.id"),
)

BY_STAGE: dict[str, list[Validation]] = {}
for _v in VALIDATIONS:
    BY_STAGE.setdefault(_v.stage, []).append(_v)
