"""Property: no sequence of imports ever removes or alters a pre-existing row unless the update flag
of that import says so (force_update for users, update_existing for history)."""

import tempfile
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, given, settings, strategies as st

from hrms_pipelines.imports.reader import ImportFileError
from hrms_pipelines.imports.stage import StageFailed

from .import_helpers import BASE, checksums, run_all, run_stage, scalar, write, write_base


POOL = [f"user{i}@nhia.gov.gh" for i in range(6)]
NAMES = ["Ama", "Kofi", "Yaa", "Esi", "=cmd", "O'Brien, Jr"]

user_row = st.tuples(
    st.sampled_from(range(len(POOL))),
    st.sampled_from(NAMES),
    st.sampled_from(["active", "on_leave", ""]),
    st.sampled_from(["", "MOBILE"]),
    st.sampled_from(["", "1", "2", "3"]),
    st.sampled_from([None, 0, 1, 2, 3, 4, 5]),          # manager: index into the pool
)
history_row = st.tuples(
    st.sampled_from(range(len(POOL))),
    st.sampled_from(["hire", "promotion", "salary_change", "note"]),
    st.sampled_from(["2020-01-01", "2021-01-01"]),
    st.sampled_from(["", "3000.00", "4100.50"]),
)
step = st.one_of(
    st.tuples(st.just("users"), st.lists(user_row, min_size=1, max_size=5, unique_by=lambda r: r[0]), st.booleans()),
    st.tuples(st.just("history"), st.lists(history_row, min_size=1, max_size=5, unique_by=lambda r: r[:3]), st.booleans()),
)

SNAPSHOT = {
    "users": "SELECT id, to_jsonb(e) - 'updated_at' FROM hrms.employees_employee e",
    "history": "SELECT ev.id, jsonb_build_object('ev', to_jsonb(ev) - 'updated_at', 'c', to_jsonb(c) - 'updated_at', "
               "'s', to_jsonb(s) - 'updated_at') FROM hrms.history_timelineevent ev "
               "LEFT JOIN hrms.history_compensationsnapshot c ON c.event_id = ev.id "
               "LEFT JOIN hrms.history_senioritysnapshot s ON s.event_id = ev.id",
}


def snapshot(url):
    with psycopg.connect(url) as conn:
        return {name: dict(conn.execute(query).fetchall()) for name, query in SNAPSHOT.items()}


def write_step(directory: Path, kind, rows):
    if kind == "users":
        header = BASE["users.csv"][0]
        # managers rank above (lower index): the hierarchy never has a cycle
        lines = [[POOL[i], name, "Mensah", status, "", team, "", "" if m is None or m >= i else POOL[m], "ENG" if level else "", level]
                 for i, name, status, team, level, m in rows]
        write(directory, "users.csv", [header] + lines)
    else:
        header = ["email", "event_type", "event_date", "salary"]
        write(directory, "history.csv", [header] + [[POOL[i], t, d, s] for i, t, d, s in rows])


def pool_company(hrms_db, prefix: str) -> Path:
    """A fresh folder and company (ladders, org) in which every POOL user exists, active."""
    base = write_base(Path(tempfile.mkdtemp(prefix=prefix)))
    run_all(hrms_db, base, ("ladders", "org"))
    write_step(base, "users", [(i, "Ama", "active", "", "", None) for i in range(len(POOL))])
    run_stage(hrms_db, "users", base)
    return base


def test_imports_never_remove_or_alter_rows_without_the_update_flag(hrms_db, database_url):
    base = pool_company(hrms_db, "hyp-base-")   # every pool user exists: steps are mostly valid, so they exercise the flags
    outcomes = {"applied": 0, "rejected": 0}

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(step, min_size=1, max_size=4))
    def run_sequence(steps):
        directory = Path(tempfile.mkdtemp(prefix="hyp-"))
        for kind, rows, flag in steps:
            write_step(directory, kind, rows)
            before = snapshot(database_url)
            options = {"force_update": flag} if kind == "users" else {"update_existing": flag}
            try:
                run_stage(hrms_db, kind, directory, users_file="users.csv", history_file="history.csv", **options)
            except (ImportFileError, StageFailed):
                assert snapshot(database_url) == before, "a rejected import changed something"
                outcomes["rejected"] += 1
                continue
            outcomes["applied"] += 1
            after = snapshot(database_url)
            for table, rows_before in before.items():
                missing = set(rows_before) - set(after[table])
                assert not missing, f"{table}: rows {missing} disappeared"
                altered = {k for k, v in rows_before.items() if after[table][k] != v}
                if table != kind or not flag:
                    assert not altered, f"{table}: rows {altered} changed without the update flag"

    run_sequence()
    assert outcomes["applied"] > outcomes["rejected"], outcomes


# --------------------------------------------------------------------------------------------------
# Undo: over any sequence of imports, undos (of the newest run not yet undone) and re-imports of
# undone files, every undo lands exactly on the state before its run.

HR_STATE = ["employees_employee", "history_timelineevent", "history_compensationsnapshot", "history_senioritysnapshot"]

undo_step = st.one_of(
    step,
    st.just(("undo",)),
    st.just(("reimport",)),
)


def hr_state(url):
    """Every row of the tables the steps write, whole (updated_at and the import record included)."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM hrms.{t} x").fetchone()[0]
                for t in HR_STATE}


def test_every_undo_lands_on_the_state_before_its_run(hrms_db, database_url):
    from hrms_pipelines.imports import undo
    from hrms_pipelines.resources import RESTORER

    base = pool_company(hrms_db, "hyp-undo-base-")
    counter = iter(range(10**6))
    seen = {"undone": 0}

    def import_file(directory, kind, rows, flag):
        write_step(directory, kind, rows)
        before = hr_state(database_url)
        run_id = f"hyp-{next(counter)}"
        options = {"force_update": flag} if kind == "users" else {"update_existing": flag}
        try:
            result = run_stage(hrms_db, kind, directory, run_id=run_id, users_file="users.csv", history_file="history.csv", **options)
        except (ImportFileError, StageFailed):
            assert hr_state(database_url) == before, "a rejected import changed something"
            return None
        return None if result.unchanged else (run_id, before, (kind, rows, flag))

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(undo_step, min_size=1, max_size=6))
    def run_sequence(steps):
        directory = Path(tempfile.mkdtemp(prefix="hyp-undo-"))
        done, undone = [], []
        for s in steps:
            if s[0] == "undo":
                if not done:
                    continue
                run_id, before, what = done.pop()
                with hrms_db.connection(RESTORER) as conn:
                    undo.undo_run(conn, run_id)
                assert hr_state(database_url) == before, f"undo of {run_id} ({what[0]}) did not land on the state before it"
                undone.append(what)
                seen["undone"] += 1
                continue
            if s[0] == "reimport":
                if not undone:
                    continue
                s = undone.pop()
            landed = import_file(directory, *s)
            if landed:
                done.append(landed)

    run_sequence()
    assert seen["undone"] > 0


# --------------------------------------------------------------------------------------------------
# Undo across stages: runs of the org files and the users file (create_users, as the nightly runs),
# where one org file creates a placeholder leader that another file (teams.csv) or the users stage
# later assigns (to a new team, a new chapter, as a manager); undoing the newest run, any number of
# times, lands exactly on the state before it, and undoing them all on the state before them all.

LEADS = [f"lead{i}@nhia.gov.gh" for i in range(3)]        # unknown to the base: placeholders when named
PEOPLE = LEADS + POOL[:2]
ORG_AND_USERS = ["org_organization", "org_department", "org_tribe", "org_chapter", "org_team", "employees_employee"]


@st.composite
def org_and_users_run(draw):
    leader = st.sampled_from(LEADS + POOL[:1] + [""])
    tribes = draw(st.lists(st.tuples(st.sampled_from(["T1", "T2"]), leader), max_size=2, unique_by=lambda r: r[0]))
    chapters = draw(st.lists(st.tuples(st.sampled_from(["C1", "C2"]), leader), max_size=2, unique_by=lambda r: r[0]))
    teams = draw(st.lists(st.tuples(st.sampled_from(["N1", "N2"]), st.sampled_from(["DIGITAL"] + [t for t, _ in tribes]), leader),
                          max_size=2, unique_by=lambda r: r[0]))
    users = draw(st.lists(st.tuples(st.sampled_from(range(len(PEOPLE))),
                                    st.sampled_from(["", "MOBILE"] + [t[0] for t in teams]),
                                    st.sampled_from(["", "BACKEND"] + [c for c, _ in chapters]),
                                    st.sampled_from([None, 0, 1, 2, 3])),        # manager: index into PEOPLE
                          min_size=1, max_size=4, unique_by=lambda r: r[0]))
    return ("run", tribes, chapters, teams, users, draw(st.booleans()))


def write_org_and_users(directory: Path, tribes, chapters, teams, users) -> None:
    write(directory, "tribes.csv", [BASE["tribes.csv"][0], ["DIGITAL", "Digital Services", "NHIA", ""]]
          + [[code, f"Tribe {code}", "NHIA", lead] for code, lead in tribes])
    write(directory, "chapters.csv", [BASE["chapters.csv"][0], ["BACKEND", "Backend", "NHIA", ""]]
          + [[code, f"Chapter {code}", "NHIA", lead] for code, lead in chapters])
    write(directory, "teams.csv", [BASE["teams.csv"][0], ["MOBILE", "Mobile", "DIGITAL", "ICT", ""]]
          + [[code, f"Team {code}", tribe, "ICT", lead] for code, tribe, lead in teams])
    # managers rank above (lower index): the hierarchy never has a cycle
    write(directory, "users.csv", [BASE["users.csv"][0]] + [
        [PEOPLE[i], "Esi", "Boateng", "active", "2024-01-08", team, chapter, "" if m is None or m >= i else PEOPLE[m], "", ""]
        for i, team, chapter, m in users])


def crossed(url: str, run_id: str) -> int:
    """Rows of the run that point at a row another import record of the same run inserted."""
    return scalar(url, """
        WITH ins AS (SELECT i.import_record_id AS rec, i.table_name, unnest(i.row_ids) AS id FROM hrms.imports_undoinsert i
                     JOIN hrms.imports_importrecord r ON r.id = i.import_record_id WHERE r.run_id = %s)
        SELECT count(*) FROM hrms.employees_employee e
        JOIN ins pe ON pe.table_name = 'employees_employee' AND pe.id = e.id
        JOIN ins pt ON (pt.table_name = 'org_team' AND pt.id = e.team_id) OR (pt.table_name = 'org_chapter' AND pt.id = e.chapter_id)
                    OR (pt.table_name = 'employees_employee' AND pt.id = e.manager_id)
        WHERE pt.rec <> pe.rec""", [run_id])


def test_undo_of_runs_whose_placeholders_other_files_assign(hrms_db, database_url):
    from hypothesis import example

    from hrms_pipelines.imports import undo
    from hrms_pipelines.resources import RESTORER

    base = pool_company(hrms_db, "hyp-cross-base-")
    counter = iter(range(10**6))
    seen = {"undone": 0, "crossed": 0}

    def state():
        return checksums(database_url, ORG_AND_USERS)

    def undo_newest(done):
        run_id, before = done.pop()
        with hrms_db.connection(RESTORER) as conn:
            undo.undo_run(conn, run_id, undo_run_id=f"undo-{run_id}")
        assert state() == before, f"undo of {run_id} did not land on the state before it"
        seen["undone"] += 1

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.one_of(org_and_users_run(), st.just(("undo",))), min_size=1, max_size=4))
    # the sample company's case: the tribes file's placeholder leads a team of teams.csv and is put in it by the users stage
    @example([("run", [("T1", LEADS[0])], [("C1", LEADS[1])], [("N1", "T1", LEADS[0])],
               [(0, "N1", "C1", None), (1, "N1", "", 0), (2, "MOBILE", "C1", 1)], False), ("undo",)])
    def run_sequence(steps):
        directory = Path(tempfile.mkdtemp(prefix="hyp-cross-"))
        for name in ("ladders.csv", "organizations.csv", "departments.csv"):
            (directory / name).write_bytes((base / name).read_bytes())
        start, done = state(), []
        for s in steps:
            if s[0] == "undo":
                if done:
                    undo_newest(done)
                continue
            _, tribes, chapters, teams, users, force = s
            write_org_and_users(directory, tribes, chapters, teams, users)
            before, run_id = state(), f"cross-{next(counter)}"
            for kind in ("org", "users"):
                try:
                    run_stage(hrms_db, kind, directory, run_id=run_id, create_users=True, force_update=force)
                except (ImportFileError, StageFailed):
                    pass
            if scalar(database_url, "SELECT count(*) FROM hrms.imports_importrecord WHERE run_id = %s AND outcome = 'succeeded' "
                                    "AND inserted + updated > 0", [run_id]):
                seen["crossed"] += bool(crossed(database_url, run_id))
                done.append((run_id, before))
            else:
                assert state() == before
        while done:
            undo_newest(done)
        assert state() == start

    run_sequence()
    assert seen["undone"] > 0 and seen["crossed"] > 0, seen


# --------------------------------------------------------------------------------------------------
# Issue 22: undo of a run that is not the latest, then the latest file imported again. Files grow as
# exports do (each holds the rows of the one before it), under one name (the append path) or new
# names; whatever the shortcuts knew, the re-import brings back exactly what the undo removed.

NATURAL = """
    SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
        SELECT concat_ws(',', ev.employee_id, ev.event_type, ev.event_date, ev.summary, ev.details, c.salary,
                         c.previous_salary, s.level_number, s.title) AS x
        FROM hrms.history_timelineevent ev
        LEFT JOIN hrms.history_compensationsnapshot c ON c.event_id = ev.id
        LEFT JOIN hrms.history_senioritysnapshot s ON s.event_id = ev.id) q"""

grown_row = st.tuples(st.sampled_from(range(len(POOL))), st.sampled_from(["note", "salary_change"]), st.integers(0, 59))


def test_undo_of_an_earlier_run_then_the_latest_file_again_brings_every_row_back(hrms_db, database_url):
    import datetime

    from hrms_pipelines.imports import undo
    from hrms_pipelines.resources import RESTORER

    base = pool_company(hrms_db, "hyp-reset-base-")
    counter = iter(range(10**6))
    seen = {"undone": 0, "appended": 0}

    def natural():
        with psycopg.connect(database_url) as conn:
            return conn.execute(NATURAL).fetchone()[0]

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(grown_row, min_size=2, max_size=10, unique_by=lambda r: r), st.data())
    def run_sequence(rows, data):
        example = next(counter)
        start = datetime.date(2000, 1, 1) + datetime.timedelta(days=61 * example)   # rows no other example has
        lines = [[POOL[i], kind, (start + datetime.timedelta(days=d)).isoformat(), "3000.00" if kind == "salary_change" else ""]
                 for i, kind, d in rows]
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(lines) - 1), min_size=1, max_size=3))))
        same_name = data.draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
        directory = Path(tempfile.mkdtemp(prefix="hyp-reset-"))
        runs, name = [], "history.csv"
        for n, end in enumerate([*cuts, len(lines)]):
            name = name if same_name[n] else f"h{example}-{n}.csv"
            write(directory, name, [["email", "event_type", "event_date", "salary"]] + lines[:end])
            run_id = f"hyp-reset-{example}-{n}"
            result = run_stage(hrms_db, "history", directory, run_id=run_id, history_file=name)
            assert result.counts["rejected"] == 0 and not result.unchanged
            seen["appended"] += result.files[0].path == "appended"
            runs.append(run_id)
        imported = natural()
        earlier = data.draw(st.sampled_from(runs[:-1]))          # never the latest run
        with hrms_db.connection(RESTORER) as conn:
            undo.undo_run(conn, earlier, undo_run_id=f"undo-{earlier}")
        seen["undone"] += 1
        removed = natural() != imported
        again = run_stage(hrms_db, "history", directory, run_id=f"hyp-reset-{example}-again", history_file=name)
        assert not again.unchanged and again.files[0].path == "full", "an undo took back every shortcut of history files"
        assert natural() == imported, f"undo of {earlier}, then {name} again, did not bring back every row"
        assert again.counts["inserted"] > 0 or not removed

    run_sequence()
    assert seen["undone"] > 0 and seen["appended"] > 0, seen
