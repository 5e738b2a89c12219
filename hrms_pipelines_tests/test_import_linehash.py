"""Known lines (issue 19): a full export costs what changed, whatever came before it. A line the store
vouches for is skipped before it is parsed; the import must land exactly where the full path lands."""

import datetime
import tempfile
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hrms_pipelines.imports import linehash, undo
from hrms_pipelines.imports.reader import ImportFileError
from hrms_pipelines.imports.stage import StageFailed
from hrms_pipelines.resources import RESTORER, PinnedDatabase

from .conftest import _url, create_database, drop_database
from .import_helpers import BASE, run_all, run_stage, scalar, write, write_base

HEADER = ["email", "event_type", "event_date", "salary", "notes"]
USERS_HEADER = BASE["users.csv"][0]
POOL = [f"user{i}@nhia.gov.gh" for i in range(5)]
NATURAL = """
    SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (
        SELECT (to_jsonb(e) - 'id' - 'import_record_id' - 'created_at' - 'updated_at' - 'manager_id'
                || jsonb_build_object('manager', m.email))::text AS x
        FROM hrms.employees_employee e LEFT JOIN hrms.employees_employee m ON m.id = e.manager_id
        UNION ALL
        SELECT (jsonb_build_object('who', u.email) || (to_jsonb(ev) - 'id' - 'employee_id' - 'import_record_id' - 'created_at'
                - 'updated_at') || jsonb_build_object('c', to_jsonb(c) - 'id' - 'event_id' - 'employee_id' - 'import_record_id'
                - 'created_at' - 'updated_at'))::text
        FROM hrms.history_timelineevent ev JOIN hrms.employees_employee u ON u.id = ev.employee_id
        LEFT JOIN hrms.history_compensationsnapshot c ON c.event_id = ev.id) s"""


@pytest.fixture
def company(hrms_db, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org"))
    write(directory, "users.csv", [USERS_HEADER] + [[e, "Ama", "Mensah", "active", "", "", "", "", "", ""] for e in POOL])
    run_stage(hrms_db, "users", directory)
    return directory


def events(n: int, start: datetime.date = datetime.date(2010, 1, 1), salary: str = "3000.00"):
    return [[POOL[i % len(POOL)], "salary_change", (start + datetime.timedelta(days=i)).isoformat(), salary, ""] for i in range(n)]


def history(hrms_db, directory, rows, name="history.csv", **options):
    write(directory, name, [HEADER] + rows)
    return run_stage(hrms_db, "history", directory, history_file=name, **options)


def natural(url: str) -> str:
    return scalar(url, NATURAL)


def test_a_full_export_after_a_delta_reads_only_what_changed(hrms_db, company):
    full = events(40)
    first = history(hrms_db, company, full)
    assert first.counts["inserted"] == 40 and first.files[0].known_lines == 0
    history(hrms_db, company, events(3, datetime.date(2012, 1, 1)), name="delta.csv")     # night 2: a delta file
    night3 = full + events(3, datetime.date(2012, 1, 1)) + events(2, datetime.date(2013, 1, 1))
    result = history(hrms_db, company, night3)
    assert result.files[0].known_lines == 43          # the delta's lines too: the store is per file kind, not per name
    assert result.counts | {} == {"rows_read": 45, "inserted": 2, "updated": 0, "unchanged": 43, "skipped": 0, "rejected": 0}
    assert result.entities["timeline events"]["unchanged"] == 43
    again = history(hrms_db, company, events(1, datetime.date(2014, 1, 1)) + night3)     # not an append: a new first row
    assert again.files[0].known_lines == 45 and again.counts["inserted"] == 1


def test_a_changed_old_line_is_never_skipped(hrms_db, database_url, company):
    full = events(20)
    history(hrms_db, company, full)
    edited = [r[:] for r in full]
    edited[7][3] = "3100.00"
    left = history(hrms_db, company, edited)                               # without update_existing: skipped, as before
    assert left.files[0].known_lines == 19 and left.counts["skipped"] == 1 and left.counts["unchanged"] == 19
    applied = history(hrms_db, company, edited, update_existing=True)      # other options: other hashes, read in full
    assert applied.files[0].known_lines == 0 and applied.counts["updated"] == 1
    # the old line again, with the same options: its key was written since by another line, it is read
    back = history(hrms_db, company, full, update_existing=True)
    assert back.files[0].known_lines == 19 and back.counts["updated"] == 1
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_compensationsnapshot WHERE salary = 3100") == 0


def test_a_row_changed_by_someone_else_is_not_vouched_for(hrms_db, database_url, company):
    full = events(10)
    history(hrms_db, company, full, update_existing=True)
    with psycopg.connect(database_url) as conn:     # an administrator's UPDATE, not an import
        conn.execute("UPDATE hrms.history_timelineevent SET summary = 'edited by hand' WHERE event_date = '2010-01-03'")
    # a file with one more row first (neither unchanged nor appended: those shortcuts answer to undo and restore only)
    grown = events(1, datetime.date(2015, 1, 1)) + full
    result = history(hrms_db, company, grown, update_existing=True)
    assert result.files[0].known_lines == 0 and result.counts["updated"] == 1 and result.counts["inserted"] == 1
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_timelineevent WHERE summary = 'edited by hand'") == 0
    assert history(hrms_db, company, events(1, datetime.date(2016, 1, 1)) + grown,
                   update_existing=True).files[0].known_lines == 11


def test_a_row_the_import_role_changed_outside_a_stage_is_not_vouched_for(hrms_db, database_url, company):
    """A backfill (and its undo) writes as the import role, outside any import stage: its writes make
    the known lines of that table unknown, as an administrator's do."""
    from hrms_pipelines.resources import IMPORTER

    full = events(10)
    history(hrms_db, company, full, update_existing=True)
    with hrms_db.transaction(IMPORTER) as conn:     # as a backfill batch writes: the import role, no stage
        conn.execute("UPDATE hrms.history_timelineevent SET summary = 'backfilled' WHERE event_date = '2010-01-03'")
    grown = events(1, datetime.date(2015, 1, 1)) + full
    result = history(hrms_db, company, grown, update_existing=True)
    assert result.files[0].known_lines == 0 and result.counts["updated"] == 1 and result.counts["inserted"] == 1
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_timelineevent WHERE summary = 'backfilled'") == 0


def test_undo_then_the_file_again_brings_the_rows_back(hrms_db, database_url, company):
    a = events(10)
    history(hrms_db, company, a, name="a.csv", run_id="run-a")
    b = a + events(4, datetime.date(2011, 1, 1))
    history(hrms_db, company, b, name="b.csv", run_id="run-b")
    imported = natural(database_url)
    with hrms_db.connection(RESTORER) as conn:
        undo.undo_run(conn, "run-b", undo_run_id="undo-b")
    assert scalar(database_url, "SELECT count(*) FROM hrms.imports_shortcutreset WHERE stage = 'history'") == 1
    again = history(hrms_db, company, b + events(1, datetime.date(2016, 1, 1)), name="c.csv", run_id="run-c")
    assert again.files[0].known_lines == 0 and again.counts["inserted"] == 5     # the 4 undone rows and the new one
    assert natural(database_url) != imported
    later = history(hrms_db, company, b + events(1, datetime.date(2016, 1, 1)), name="c.csv", run_id="run-d")
    assert later.unchanged                                                     # the unchanged-file shortcut vouches again
    d = history(hrms_db, company, b + events(2, datetime.date(2016, 1, 1)), name="d.csv", run_id="run-e")
    assert d.files[0].known_lines == 15 and d.counts["inserted"] == 1          # and the lines of run-c vouch again


def test_a_known_line_repeated_in_the_file_is_rejected_as_on_the_full_path(hrms_db, company, monkeypatch):
    full = events(8)
    history(hrms_db, company, full)
    outcomes = []
    for enabled in (True, False):
        monkeypatch.setattr(linehash, "ENABLED", enabled)
        with pytest.raises(ImportFileError) as raised:
            history(hrms_db, company, full + [full[2]])
        outcomes.append(sorted((r.row, r.column, r.rule) for r in raised.value.rejects.first))
        other = [full[3][0], full[3][1], full[3][2], "3999.00", ""]           # the same key, another line
        with pytest.raises(ImportFileError) as raised:
            history(hrms_db, company, full + [other])
        outcomes.append(sorted((r.row, r.column, r.rule) for r in raised.value.rejects.first))
    assert outcomes[:2] == outcomes[2:] and outcomes[0]


# -- property: the skipped-line path imports exactly what the full path imports ------------------------

edit = st.tuples(st.integers(0, 10**6), st.sampled_from(["3100.00", "3000.00", " 3000.00", "", "4000.5"]),
                 st.sampled_from(["", "moved", "a, b"]))
night = st.one_of(
    st.tuples(st.just("full"), st.integers(0, 4), st.booleans(), st.booleans()),      # new rows, update_existing, shuffled
    st.tuples(st.just("delta"), st.integers(1, 3), st.booleans(), st.just(False)),
    st.tuples(st.just("edit"), edit),
    st.tuples(st.just("revert"), st.integers(0, 10**6), st.booleans()),    # an edited line back as first exported
    st.tuples(st.just("users"), st.integers(0, len(POOL) - 1), st.sampled_from(["Ama", "Kofi", "Esi"]), st.booleans()),
    st.tuples(st.just("repeat"), st.integers(0, 10**6)),
    st.tuples(st.just("foreign"), st.integers(0, 10**6)),
    st.tuples(st.just("undo"), st.integers(0, 10**6)),
)


def test_the_known_line_path_imports_exactly_what_the_full_path_imports(hrms_db, database_url, pg_admin_url,
                                                                         migrated_template, monkeypatch, tmp_path):
    """Two databases get the same nights; one skips known lines, the other reads every line. After every
    night both hold the same rows and the runs report the same counts (or the same failure)."""
    other_name = create_database(pg_admin_url, template=migrated_template)
    other_url = _url(pg_admin_url, other_name)
    other_db = PinnedDatabase(location=other_url)
    databases = [(True, hrms_db, database_url), (False, other_db, other_url)]
    users = [[e, "Ama", "Mensah", "active", "", "", "", "", "", ""] for e in POOL]
    base = write_base(tmp_path / "base")
    write(base, "users.csv", [USERS_HEADER] + users)
    for _, db, _ in databases:
        run_all(db, base, ("ladders", "org", "users"))
    counter = iter(range(10**6))
    seen = {"known": 0, "examples": 0}

    def both(kind, rows, name, **options):
        """Import the file into both databases; the outcomes (counts or failure) and contents."""
        directory = Path(tempfile.mkdtemp(prefix="hyp-lines-"))
        outcomes = []
        for enabled, db, url in databases:
            monkeypatch.setattr(linehash, "ENABLED", enabled)
            run_id = f"hyp-lines-{next(counter)}"
            write(directory, name, [USERS_HEADER if kind == "users" else HEADER] + rows)
            try:
                result = run_stage(db, kind, directory, run_id=run_id, **({"users_file": name} if kind == "users" else
                                                                           {"history_file": name}), **options)
                outcomes.append(("ok", result.counts | {}, result.unchanged))
                if enabled:
                    seen["known"] += result.files[0].known_lines
            except (ImportFileError, StageFailed) as exc:
                rejects = getattr(exc, "rejects", None)
                outcomes.append(("failed", type(exc).__name__, rejects.count if rejects else None))
            runs[enabled].append(run_id)
        assert outcomes[0] == outcomes[1], (kind, name, options, outcomes)
        assert natural(databases[0][2]) == natural(databases[1][2]), (kind, name, options)

    runs: dict[bool, list[str]] = {True: [], False: []}

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(night, min_size=4, max_size=9))
    def run_sequence(nights):
        example = next(counter)
        start = datetime.date(2000, 1, 1) + datetime.timedelta(days=400 * example)
        made = iter(range(10**6))
        export = events(6, start)                                  # the HR system's full history of this example
        original = [r[:] for r in export]

        def new(n):
            return [[POOL[(k := next(made)) % len(POOL)], "note", (start + datetime.timedelta(days=200 + k)).isoformat(), "",
                     f"n{k}"] for _ in range(n)]

        both("history", export, "history.csv")
        for step in nights:
            kind = step[0]
            if kind == "full":
                export = export + new(step[1])
                rows = list(reversed(export)) if step[3] else export
                both("history", rows, "history.csv", update_existing=step[2])
            elif kind == "delta":
                added = new(step[1])
                export = export + added
                both("history", added, f"delta-{example}.csv")
            elif kind == "edit":
                (index, salary, notes) = step[1]
                row = export[index % len(export)]
                export[index % len(export)] = [row[0], row[1], row[2], salary if row[1] != "note" else "", notes]
            elif kind == "revert":
                k = step[1] % len(original)
                export[k] = original[k][:]
                both("history", export, "history.csv", update_existing=step[2])
            elif kind == "users":
                _, who, name, force = step
                users[who] = [users[who][0], name] + users[who][2:]
                both("users", users, "users.csv", force_update=force)
            elif kind == "repeat":
                both("history", export + [export[step[1] % len(export)]], "history.csv")
            elif kind == "foreign":
                date = export[step[1] % len(export)][2]
                for _, _, url in databases:
                    with psycopg.connect(url) as conn:
                        conn.execute("UPDATE hrms.history_timelineevent SET summary = summary || ' (by hand)' "
                                     "WHERE event_date = %s", [date])
            elif kind == "undo" and runs[True]:
                k = step[1] % len(runs[True])
                for enabled, db, _ in databases:
                    with db.connection(RESTORER) as conn:
                        try:
                            undo.undo_run(conn, runs[enabled][k], undo_run_id=f"undo-{runs[enabled][k]}")
                        except undo.UndoRefused:
                            pass
                assert natural(databases[0][2]) == natural(databases[1][2])
        both("history", export, "history.csv", update_existing=True)     # the last night: every edit applied
        seen["examples"] += 1

    try:
        run_sequence()
    finally:
        drop_database(pg_admin_url, other_name)
    assert seen["known"] > 0, seen


def test_a_reset_alone_takes_back_every_known_line(hrms_db, company):
    """An undo also moves the counter of writes by others; the reset (imports/0003) takes back the
    lines on its own too."""
    from hrms_pipelines.imports import shortcuts

    full = events(10)
    history(hrms_db, company, full)
    with hrms_db.transaction(RESTORER) as conn:
        shortcuts.reset(conn, ["history"], reason="test", run_id=None)
    result = history(hrms_db, company, events(1, datetime.date(2015, 1, 1)) + full)
    assert result.files[0].known_lines == 0 and result.counts["unchanged"] == 10
    assert history(hrms_db, company, events(1, datetime.date(2016, 1, 1)) + full).files[0].known_lines == 10


# -- the store: one entry per key (imports/0005), looked up in numpy (linestore) -----------------------

STORE = "SELECT count(*), count(DISTINCT key_hash), count(line_hash) FROM hrms.imports_linehash WHERE stage = 'history'"


def test_the_store_holds_one_entry_per_key_after_many_nights(hrms_db, database_url, company):
    full = events(12)
    history(hrms_db, company, full)
    history(hrms_db, company, events(3, datetime.date(2012, 1, 1)), name="delta.csv")
    export = full + events(3, datetime.date(2012, 1, 1)) + events(2, datetime.date(2013, 1, 1))
    history(hrms_db, company, export)
    history(hrms_db, company, export, update_existing=True)          # other options: every line read and recorded again
    history(hrms_db, company, list(reversed(export)), update_existing=True)
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_timelineevent") == 17
    with psycopg.connect(database_url) as conn:
        assert conn.execute(STORE).fetchone() == (17, 17, 17)      # five nights, 17 keys: 17 entries


def test_a_superseded_entry_is_gone_and_the_changed_line_is_imported(hrms_db, database_url, company):
    full = events(10)
    history(hrms_db, company, full, update_existing=True)
    entry = ("SELECT l.line_hash, l.import_record_id FROM hrms.imports_linehash l WHERE l.stage = 'history' "
             "AND l.key_hash = decode(md5(%s), 'hex')")
    key = f"{full[4][0]}|salary_change|{full[4][2]}"
    with psycopg.connect(database_url) as conn:
        (old_hash, old_record), = conn.execute(entry, [key]).fetchall()
    edited = [r[:] for r in full]
    edited[4][3] = "3500.00"
    result = history(hrms_db, company, edited, update_existing=True)
    assert result.files[0].known_lines == 9 and result.counts["updated"] == 1     # the changed line was read
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_compensationsnapshot WHERE salary = 3500") == 1
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(entry, [key]).fetchall()
        assert len(rows) == 1 and rows[0][0] != old_hash and rows[0][1] > old_record      # replaced, not added
        assert conn.execute("SELECT count(*) FROM hrms.imports_linehash WHERE line_hash = %s", [old_hash]).fetchone()[0] == 0
        assert conn.execute(STORE).fetchone() == (10, 10, 10)
    # the old line again (one more row: not the very file imported first): it is read and puts the row back
    back = history(hrms_db, company, full + events(1, datetime.date(2015, 1, 1)), update_existing=True)
    assert back.files[0].known_lines == 9 and back.counts["updated"] == 1 and back.counts["inserted"] == 1
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_compensationsnapshot WHERE salary = 3500") == 0


def test_the_first_file_again_after_an_edit_puts_the_row_back_not_unchanged(hrms_db, database_url, company):
    """File A, then B (one salary edited), then A byte for byte again: A's own earlier success no longer
    vouches once B updated rows, so the third import reads the edited line and restores A's salary."""
    full = events(10)
    history(hrms_db, company, full, update_existing=True)
    edited = [r[:] for r in full]
    edited[4][3] = "3500.00"
    assert history(hrms_db, company, edited, update_existing=True).counts["updated"] == 1
    again = history(hrms_db, company, full, update_existing=True)
    assert again.counts["updated"] == 1 and again.files[0].known_lines == 9
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_compensationsnapshot WHERE salary = 3500") == 0
    # and the same file a fourth time, nothing having changed since, is unchanged as a whole file
    fourth = history(hrms_db, company, full, update_existing=True)
    assert fourth.counts.get("updated", 0) == 0 and fourth.counts.get("inserted", 0) == 0
    assert scalar(database_url, "SELECT outcome || ':' || coalesce(message, '') FROM hrms.imports_importrecord "
                                "ORDER BY id DESC LIMIT 1").startswith("succeeded")


def test_the_import_role_may_replace_entries_but_never_delete_them(hrms_db, company):
    from hrms_pipelines.resources import IMPORTER

    history(hrms_db, company, events(3))
    with pytest.raises(psycopg.errors.InsufficientPrivilege), hrms_db.transaction(IMPORTER) as conn:
        conn.execute("DELETE FROM hrms.imports_linehash WHERE stage = 'history'")


def _digest(first8: bytes, last8: bytes) -> bytes:
    return first8 + last8


def test_digests_sharing_their_first_8_bytes_are_told_apart():
    """The lookup sorts and searches on the first 8 bytes, but never trusts them alone: a line whose
    digest shares them with a stored one (a hostile near-collision) is not known, and a run of stored
    digests sharing them is walked to the one that is equal in all 16 bytes."""
    from hrms_pipelines.imports import linestore

    prefix = bytes.fromhex("00ff00ff00ff00ff")
    stored = [_digest(prefix, bytes([0, 0, 0, 0, 0, 0, 0, i])) for i in (9, 3, 7)] + [_digest(b"\x01" * 8, b"\x02" * 8)]
    store = linestore.Vouching.from_hashes(b"".join(stored))
    asked = stored + [_digest(prefix, bytes(8)), _digest(prefix, bytes([0, 0, 0, 0, 0, 0, 1, 9])),
                      _digest(b"\x01" * 8, b"\x02" * 7 + b"\x03"), _digest(b"\x00" * 8, b"\x02" * 8)]
    at = store.find(b"".join(asked))
    assert [store.hashes(at[k:k + 1])[0] if at[k] >= 0 else None for k in range(len(asked))] == stored + [None] * 4
    assert linestore.EMPTY.find(b"".join(asked)).tolist() == [-1] * 8


def test_the_migration_keeps_the_newest_entry_of_each_key(hrms_db, database_url, company):
    """imports/0005 on a store imports/0004 filled (several entries per key): the newest one stays;
    its down file puts back the 0004 indexes."""
    from hrms_pipelines.migrations.jobs import apply_migrations, revert_migrations

    def migrate_to(target):
        if target:
            result = revert_migrations.execute_in_process(
                run_config={"ops": {"revert_to_target": {"config": {"app": "imports", "target": target}}}},
                resources={"hrms_db": hrms_db})
        else:
            result = apply_migrations.execute_in_process(resources={"hrms_db": hrms_db})
        assert result.success

    history(hrms_db, company, events(4))
    migrate_to("0004")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('hrms.imports_linehash_line_idx')").fetchone()[0] is not None
        conn.execute("INSERT INTO hrms.imports_linehash (stage, import_record_id, key_hash, line_hash) "
                     "SELECT stage, import_record_id - 1, key_hash, '\\x00000000000000000000000000000001' FROM hrms.imports_linehash")
    migrate_to(None)
    with psycopg.connect(database_url) as conn:
        assert conn.execute(STORE).fetchone() == (4, 4, 4)
        assert conn.execute("SELECT count(*) FROM hrms.imports_linehash WHERE line_hash = "
                            "'\\x00000000000000000000000000000001'").fetchone()[0] == 0
    again = history(hrms_db, company, events(1, datetime.date(2012, 1, 1)) + events(4))     # not an append
    assert again.files[0].known_lines == 4 and again.counts["inserted"] == 1
