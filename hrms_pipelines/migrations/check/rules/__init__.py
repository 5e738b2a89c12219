"""Every rule of the analyzer, one module each (modelled on sbdchd/squawk): its id, severity, why
the statement is dangerous, the safe alternative from the large-table playbook, and a bad and a
good example that the tests run."""

from __future__ import annotations

from hrms_pipelines.migrations.check.model import Rule
from hrms_pipelines.migrations.check.rules import (
    adding_field_with_default,
    adding_not_nullable_field,
    adding_required_field,
    adding_serial_primary_key_field,
    ban_alter_domain_with_add_constraint,
    ban_alter_system,
    ban_concurrent_index_creation_in_transaction,
    ban_copy_program,
    ban_create_operator,
    ban_create_schema,
    ban_create_domain_with_constraint,
    ban_disabling_protected_triggers,
    ban_drop_column,
    ban_drop_database,
    ban_drop_not_null,
    ban_drop_table,
    ban_grant_on_audit_log,
    ban_grant_role_membership,
    ban_grant_to_public,
    ban_role_escalation,
    ban_session_replication_role,
    ban_sql_in_strings,
    ban_truncate,
    ban_truncate_cascade,
    ban_unlisted_extension,
    ban_update_or_delete_without_where,
    ban_vacuum_full,
    changing_column_type,
    constraint_missing_not_valid,
    ban_widening_default_privileges,
    disallowed_unique_constraint,
    dynamic_sql,
    engine_rules,
    import_role_never_deletes,
    prefer_robust_stmts,
    renaming_column,
    renaming_table,
    require_concurrent_index_creation,
    require_concurrent_index_deletion,
    require_concurrent_partition_detach,
    require_concurrent_reindex,
    require_lock_timeout,
    require_security_definer_search_path,
    require_statement_timeout,
    trace_failed,
    trace_locked_scan,
    trace_rewrite,
    transaction_nesting,
)

STATEMENT_RULES: list[Rule] = [
    module.RULE
    for module in (
        adding_required_field, ban_drop_column, renaming_column, ban_drop_table, renaming_table,
        require_concurrent_index_creation, changing_column_type, ban_truncate, adding_field_with_default,
        constraint_missing_not_valid, adding_not_nullable_field, disallowed_unique_constraint,
        adding_serial_primary_key_field, require_concurrent_index_deletion,
        ban_concurrent_index_creation_in_transaction, ban_vacuum_full, require_lock_timeout,
        require_statement_timeout, ban_update_or_delete_without_where, transaction_nesting,
        ban_drop_not_null, ban_drop_database, import_role_never_deletes,
        # squawk's lock-safety rules added with trace mode (issue 13)
        require_concurrent_reindex, require_concurrent_partition_detach, ban_alter_domain_with_add_constraint,
        ban_create_domain_with_constraint, prefer_robust_stmts, ban_truncate_cascade,
        # privilege escalation (issue 10): never suppressible, also looked for inside DO blocks and functions
        ban_copy_program, ban_role_escalation, ban_grant_role_membership, ban_grant_to_public, ban_alter_system,
        require_security_definer_search_path, ban_unlisted_extension, ban_widening_default_privileges,
        dynamic_sql,
        # issue 17: shadowing pg_catalog, unreadable dynamic SQL (above, now DANGER), the audit log's guards
        ban_create_schema, ban_create_operator, ban_disabling_protected_triggers, ban_session_replication_role,
        ban_grant_on_audit_log, ban_sql_in_strings,
    )
]
# Found by rehearsing migrations on a real PostgreSQL (trace mode), not by parsing: no static check.
TRACE_RULES: list[Rule] = [trace_rewrite.RULE, trace_locked_scan.RULE, trace_failed.RULE]
ALL: dict[str, Rule] = {rule.id: rule for rule in (*STATEMENT_RULES, *engine_rules.RULES, *TRACE_RULES)}
FILE_LEVEL = {engine_rules.IRREVERSIBLE_MIGRATION.id}

BY_NODE_TYPE: dict[str, tuple[Rule, ...]] = {}
for _rule in STATEMENT_RULES:
    for _kind in _rule.node_types:
        BY_NODE_TYPE[_kind] = (*BY_NODE_TYPE.get(_kind, ()), _rule)
EVERY_STATEMENT: tuple[Rule, ...] = tuple(r for r in STATEMENT_RULES if not r.node_types)
ESCALATION_BY_NODE_TYPE: dict[str, tuple[Rule, ...]] = {
    kind: tuple(r for r in rules if r.escalation) for kind, rules in BY_NODE_TYPE.items()
    if any(r.escalation for r in rules)
}
WITH_BODIES = ("DoStmt", "CreateFunctionStmt")  # statements whose body holds statements (rules._plpgsql)
