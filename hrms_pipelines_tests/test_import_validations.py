"""The stage validations stay set-based even when the planner's statistics are stale.

After a rolled-back import (a dry run, a failed stage) autovacuum's ANALYZE records the history tables
as many pages holding no live rows; the next import's rows then look like none to the planner, which
picks a nested loop for the whole-table validations: quadratic, hours on a million rows (seen in the
import benchmark). `Validation.offending` runs them with nested loops off.
"""

from hrms_pipelines.imports import validations
from hrms_pipelines.resources import MIGRATOR

FILL = """
    INSERT INTO hrms.employees_employee (email, first_name, last_name)
    SELECT 'staff' || g || '@nhia.gov.gh', 'Staff', g::text FROM generate_series(1, 500) g;
    WITH ev AS (
        INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary)
        SELECT e.id, 'salary_change', date '2000-01-01' + d, 'Salary changed'
        FROM hrms.employees_employee e CROSS JOIN generate_series(1, 60) d
        RETURNING id, employee_id, event_date
    )
    INSERT INTO hrms.history_compensationsnapshot (event_id, employee_id, effective_date, salary)
    SELECT id, employee_id, event_date, 5000 FROM ev;
"""


def test_whole_table_validations_survive_statistics_of_a_rolled_back_import(hrms_db):
    snapshots = next(v for v in validations.VALIDATIONS if v.name == "snapshots_without_users")
    with hrms_db.connection(MIGRATOR) as conn:
        conn.execute(FILL)
        conn.rollback()  # a dry run, or a stage that failed
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        # what autovacuum does next: many pages, no live rows
        conn.execute("ANALYZE hrms.history_timelineevent, hrms.history_compensationsnapshot, hrms.history_senioritysnapshot")
        stats = conn.execute("SELECT reltuples, relpages FROM pg_class WHERE oid = 'hrms.history_timelineevent'::regclass").fetchone()
    assert stats[0] == 0 and stats[1] > 0

    with hrms_db.connection(MIGRATOR) as conn:
        conn.execute(FILL)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + snapshots.query).fetchall())
        assert "Nested Loop" in plan, "the hazard this test guards against is no longer there:\n" + plan
        conn.execute("SET LOCAL statement_timeout = '20s'")  # a nested loop here takes minutes
        assert snapshots.offending(conn) == (0, [])
        assert conn.execute("SHOW enable_nestloop").fetchone()[0] == "on", "the setting is put back"
        events = next(v for v in validations.VALIDATIONS if v.name == "events_without_users")
        assert events.offending(conn) == (0, [])
        conn.rollback()
