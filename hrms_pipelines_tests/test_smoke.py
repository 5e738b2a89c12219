from hrms_pipelines.resources import READER


def test_template_has_every_table(hrms_db, migrations):
    from hrms_pipelines.migrations import runner
    from hrms_pipelines.resources import READER

    with hrms_db.connection(READER) as conn:
        missing = [t for t in runner.expected_tables(migrations)
                   if conn.execute("SELECT to_regclass(%s) IS NULL", [t]).fetchone()[0]]
    assert missing == []
