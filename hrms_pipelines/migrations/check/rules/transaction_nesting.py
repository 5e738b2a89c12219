from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

CONTROL = {
    "TRANS_STMT_BEGIN": "BEGIN", "TRANS_STMT_START": "START TRANSACTION", "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
}


def check(stmt, state):
    what = CONTROL.get(stmt.node.get("kind"))
    if what and state.runner_transaction:
        yield Hit(stmt.start, f"{what} inside a file the runner already runs in one transaction.")
    elif what in ("BEGIN", "START TRANSACTION") and state.in_transaction:
        yield Hit(stmt.start, f"{what} while a transaction is already open.")


RULE = Rule(
    id="transaction-nesting",
    severity=Severity.DANGER,
    squawk="transaction-nesting",
    why="The runner runs a migration file in its own transaction and records it in the ledger in that "
        "same transaction; a BEGIN/COMMIT/ROLLBACK in the file breaks that (a COMMIT makes half a "
        "migration permanent, unrecorded).",
    fix="Remove the transaction control: each file already is one transaction. For statements that "
        "cannot run in a transaction, use a `-- hrms:non-transactional` migration.",
    bad="BEGIN;\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\nCOMMIT;\n",
    good="ALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    node_types=("TransactionStmt",),
    check=check,
    in_down_files=True,
)
