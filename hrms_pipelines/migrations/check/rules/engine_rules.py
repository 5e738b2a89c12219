"""Rules the engine itself reports: about the file as a whole, its transaction structure, and the
suppression comments in it (their checks live in engine.py and analyzer.py)."""

from hrms_pipelines.migrations.check.model import Rule, Severity

SYNTAX_ERROR = Rule(
    id="syntax-error",
    severity=Severity.DANGER,
    why="PostgreSQL's parser rejects this file, so the runner would fail on it and nothing in it was checked.",
    fix="Fix the SQL at the position shown (try it with psql against a scratch database).",
    bad="ALTER TABLE hrms.org_team ADD COLUMN;\n",
    good="ALTER TABLE hrms.org_team ADD COLUMN note text;\n",
)
INVALID_ENCODING = Rule(
    id="invalid-encoding",
    severity=Severity.DANGER,
    why="The file cannot be read as UTF-8, so it was not checked (and the runner would refuse it).",
    fix="Save the file as UTF-8.",
    bad="SELECT '\udcff';\n",
    good="SELECT 'é';\n",
)
BAN_UNCOMMITTED_TRANSACTION = Rule(
    id="ban-uncommitted-transaction",
    severity=Severity.DANGER,
    squawk="ban-uncommitted-transaction",
    why="The file opens a transaction it never commits: its changes are rolled back when the session "
        "ends, or the open transaction holds its locks until someone notices.",
    fix="End the transaction with COMMIT (or, under sql/migrations, drop BEGIN/COMMIT and let the runner "
        "manage the transaction).",
    bad="-- hrms:non-transactional\nBEGIN;\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    good="-- hrms:non-transactional\nBEGIN;\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\nCOMMIT;\n",
    in_down_files=True,
)
IRREVERSIBLE_MIGRATION = Rule(
    id="irreversible-migration",
    severity=Severity.WARNING,
    why="The migration has no down file, so revert_migrations cannot undo it: a bad deploy then needs a "
        "point-in-time recovery or a backup restore.",
    fix="Add NNNN_name.down.sql beside the up file, undoing it (DROP ... IF EXISTS, CONCURRENTLY where the "
        "up file was non-transactional); if nothing can undo it, say so with "
        "`-- hrms:allow irreversible-migration reason: <why>` at the top of the up file.",
    bad="",
    good="",
)
SUPPRESSION_WITHOUT_REASON = Rule(
    id="suppression-without-reason",
    severity=Severity.WARNING,
    why="A suppression must say why the finding is acceptable.",
    fix="Write it as `-- hrms:allow <rule-id> reason: <why this is safe here>`.",
    bad="DROP TABLE hrms.leave_leaverequest; -- hrms:allow ban-drop-table\n",
    good="DROP TABLE hrms.leave_leaverequest; -- hrms:allow ban-drop-table reason: replaced by leave_request in leave/0007, data copied and verified\n",
)
UNUSED_SUPPRESSION = Rule(
    id="unused-suppression",
    severity=Severity.WARNING,
    why="This suppression does not suppress anything.",
    fix="Put the comment on (or just above) the statement with the finding, name an existing rule id, or "
        "remove it.",
    bad="-- hrms:allow ban-drop-table reason: old\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    good="ALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
)

SUPPRESSED_ESCALATION = Rule(
    id="suppressed-escalation",
    severity=Severity.DANGER,
    why="A migration cannot allow its own privilege escalation: the file is what is under review, so an "
        "`-- hrms:allow` for a privilege-escalation rule in it is ignored (the finding stays DANGER) and the "
        "attempt is reported here.",
    fix="Remove the suppression and the statement. What it does is an administrator's job outside the "
        "migrations (reviewed SQL run by hand; `python -m hrms_pipelines.roles sql` for the duty roles).",
    bad="GRANT SELECT ON hrms.org_team TO PUBLIC; -- hrms:allow ban-grant-to-public reason: reports need it\n",
    good="GRANT SELECT ON hrms.org_team TO hrms_reader;\n",
)

RULES = [SYNTAX_ERROR, INVALID_ENCODING, BAN_UNCOMMITTED_TRANSACTION, IRREVERSIBLE_MIGRATION,
         SUPPRESSION_WITHOUT_REASON, UNUSED_SUPPRESSION, SUPPRESSED_ESCALATION]
