"""The audit log belongs to nobody who logs in.

`hrms.core_auditlog` and its partitions are owned by `hrms_audit_owner`, a NOLOGIN role no duty is a
member of; the `hrms` schema belongs to it too (the owner of a schema may DROP any table in it, so
the migrator, which creates the HR tables, only has CREATE there). Whatever a migration does as the
migrator, PostgreSQL refuses it ALTER, DISABLE TRIGGER, DROP, DETACH, TRUNCATE, UPDATE and DELETE on
the audit log, and GRANTs on it: the migrator owns nothing of it and holds no grant option.

What the migrator still has to do to the audit log goes through three narrow `SECURITY DEFINER`
functions in the `hrms_audit` schema (owned by hrms_audit_owner, so no migration can replace them),
each with a pinned `search_path`, EXECUTE granted to the migrator only:

- `hrms_audit.core_auditlog_take_over()`: hands the audit log, its partitions and its trigger
  functions from the migrator to hrms_audit_owner (migration core/0005 calls it). For that one step
  hrms_audit_owner is a member of hrms_migrator (never the other way round);
- `hrms_audit.core_auditlog_attach_month(start, end, move_default)`: one whole month, attached
  the way hrms_pipelines.audit_partitions always did (CHECK first, no ACCESS EXCLUSIVE on the parent),
  append-only like the months before it;
- `hrms_audit.core_auditlog_detach_month(partition, run_id, retention_months)`: writes the audit row,
  then detaches an attached month; the table stays, owned by hrms_audit_owner, immutable.

They are administrative SQL: `hrms_pipelines.roles` runs them at bootstrap (and prints them in
`python -m hrms_pipelines.roles sql`), never a migration.
"""

from __future__ import annotations

AUDIT_OWNER = "hrms_audit_owner"
AUDIT_SCHEMA = "hrms_audit"

# Every statement runs in a session whose search_path is pg_catalog, pg_temp (roles.pin_search_path);
# the functions pin their own path, and name every table with its schema.
_TAKE_OVER = r"""
CREATE OR REPLACE FUNCTION hrms_audit.core_auditlog_take_over() RETURNS pg_catalog.void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regnamespace('hrms') IS NULL OR NOT pg_catalog.has_schema_privilege('hrms', 'USAGE') THEN
        RETURN;  -- a schema an administrator made (a superuser's test run): the migrator owns nothing in it
    END IF;
    IF pg_catalog.to_regclass('hrms.core_auditlog') IS NULL
       OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('hrms.core_auditlog'))
          OPERATOR(pg_catalog.<>) 'p' THEN
        RAISE EXCEPTION 'hrms.core_auditlog is not the partitioned audit log' USING ERRCODE = 'wrong_object_type';
    END IF;
    FOR r IN SELECT c.oid::pg_catalog.regclass AS rel FROM pg_catalog.pg_class c
             WHERE (c.oid OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass
                    OR c.oid OPERATOR(pg_catalog.=) ANY (SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                                     WHERE i.inhparent OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass))
               AND c.relowner OPERATOR(pg_catalog.=) 'hrms_migrator'::pg_catalog.regrole LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO hrms_audit_owner', r.rel);
    END LOOP;
    FOR r IN SELECT p.oid::pg_catalog.regprocedure AS routine FROM pg_catalog.pg_proc p
             WHERE p.oid OPERATOR(pg_catalog.=) ANY (ARRAY[
                       pg_catalog.to_regprocedure('hrms.core_auditlog_append_only()'),
                       pg_catalog.to_regprocedure('hrms.core_auditlog_moved()')]::pg_catalog.oid[])
               AND p.proowner OPERATOR(pg_catalog.=) 'hrms_migrator'::pg_catalog.regrole LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO hrms_audit_owner', r.routine);
    END LOOP;
    -- What each role may do on it, now granted by its owner: the migrator reads and appends (and has
    -- no grant option; SELECT on each partition too), nobody updates, deletes or truncates (the owner neither: its own functions
    -- only move rows out of the default partition, which the append-only trigger checks).
    IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass)
       OPERATOR(pg_catalog.=) 'hrms_audit_owner'::pg_catalog.regrole THEN
        REVOKE ALL ON hrms.core_auditlog FROM hrms_migrator;
        GRANT SELECT, INSERT ON hrms.core_auditlog TO hrms_migrator;
        FOR r IN SELECT c.oid::pg_catalog.regclass AS rel, c.relname FROM pg_catalog.pg_class c
                 WHERE (c.oid OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass
                        OR c.oid OPERATOR(pg_catalog.=) ANY (SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                                         WHERE i.inhparent OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass))
                   AND c.relowner OPERATOR(pg_catalog.=) 'hrms_audit_owner'::pg_catalog.regrole LOOP
            EXECUTE pg_catalog.format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM PUBLIC, hrms_audit_owner', r.rel);
            IF r.relname OPERATOR(pg_catalog.<>) 'core_auditlog' THEN
                -- SELECT only: pg_dump (trace mode's copy of the schema) locks every partition it dumps
                EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM hrms_migrator', r.rel);
                EXECUTE pg_catalog.format('GRANT SELECT ON %s TO hrms_migrator', r.rel);
            END IF;
        END LOOP;
        IF pg_catalog.to_regclass('hrms.core_auditlog_default') IS NOT NULL THEN
            GRANT DELETE ON hrms.core_auditlog_default TO hrms_audit_owner;  -- the move into a month
        END IF;
    END IF;
END
$fn$"""

_ATTACH = r"""
CREATE OR REPLACE FUNCTION hrms_audit.core_auditlog_attach_month(
        p_start pg_catalog.timestamptz, p_end pg_catalog.timestamptz, p_move_default pg_catalog.bool)
    RETURNS pg_catalog.int8
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_name text;
    v_child text;
    v_default text;
    v_in_month bigint := 0;
    v_moved bigint := 0;
BEGIN
    IF p_start IS NULL OR p_end IS NULL OR pg_catalog.date_trunc('month', p_start) OPERATOR(pg_catalog.<>) p_start
       OR p_end OPERATOR(pg_catalog.<>) (p_start OPERATOR(pg_catalog.+) '1 month'::pg_catalog.interval) THEN
        RAISE EXCEPTION 'attach: [%, %) is not one whole month', p_start, p_end USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_name := 'core_auditlog_y' OPERATOR(pg_catalog.||) pg_catalog.to_char(p_start, 'YYYY')
              OPERATOR(pg_catalog.||) 'm' OPERATOR(pg_catalog.||) pg_catalog.to_char(p_start, 'MM');
    v_child := pg_catalog.format('hrms.%I', v_name);
    IF pg_catalog.to_regclass(v_child) IS NOT NULL THEN
        RAISE EXCEPTION 'a table % exists but is not the partition of %; rename it (or attach it yourself) and run again',
            v_child, pg_catalog.to_char(p_start, 'YYYY-MM') USING ERRCODE = 'duplicate_table';
    END IF;
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO v_default
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE i.inhparent OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass
      AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) OPERATOR(pg_catalog.=) 'DEFAULT';
    IF v_default IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE created_at OPERATOR(pg_catalog.>=) $1 '
                                  'AND created_at OPERATOR(pg_catalog.<) $2', v_default)
            INTO v_in_month USING p_start, p_end;
        IF v_in_month OPERATOR(pg_catalog.>) 0 AND NOT p_move_default THEN
            RAISE EXCEPTION '% row(s) of % are in the default partition; the month was skipped (move_default_rows is off)',
                v_in_month, pg_catalog.to_char(p_start, 'YYYY-MM') USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        IF v_in_month OPERATOR(pg_catalog.>) 0 THEN
            -- No new rows may reach the default partition while its rows of this month move.
            EXECUTE pg_catalog.format('LOCK TABLE %s IN EXCLUSIVE MODE', v_default);
        END IF;
    END IF;
    EXECUTE pg_catalog.format('CREATE TABLE %s (LIKE hrms.core_auditlog INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                              'INCLUDING STORAGE INCLUDING COMMENTS)', v_child);
    EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (created_at IS NOT NULL AND '
                              'created_at OPERATOR(pg_catalog.>=) %L::pg_catalog.timestamptz AND '
                              'created_at OPERATOR(pg_catalog.<) %L::pg_catalog.timestamptz)',
                              v_child, v_name OPERATOR(pg_catalog.||) '_bounds', p_start, p_end);
    IF v_in_month OPERATOR(pg_catalog.>) 0 THEN
        EXECUTE pg_catalog.format('WITH moved AS (DELETE FROM %s WHERE created_at OPERATOR(pg_catalog.>=) $1 '
                                  'AND created_at OPERATOR(pg_catalog.<) $2 RETURNING *) INSERT INTO %s SELECT * FROM moved',
                                  v_default, v_child) USING p_start, p_end;
        GET DIAGNOSTICS v_moved := ROW_COUNT;
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE hrms.core_auditlog ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                              v_child, p_start, p_end);
    -- Append-only like every month: the row guard came with the attach, the TRUNCATE guard does not.
    EXECUTE pg_catalog.format('CREATE TRIGGER hrms_guard_auditlog_truncate BEFORE TRUNCATE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION hrms.core_auditlog_append_only()', v_child);
    EXECUTE pg_catalog.format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM PUBLIC, CURRENT_USER', v_child);
    EXECUTE pg_catalog.format('GRANT SELECT ON %s TO hrms_migrator', v_child);  -- as every month (pg_dump)
    -- The partition constraint now says the same; the CHECK was only there to skip the scan.
    EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', v_child, v_name OPERATOR(pg_catalog.||) '_bounds');
    RETURN v_moved;
END
$fn$"""

_DETACH = r"""
CREATE OR REPLACE FUNCTION hrms_audit.core_auditlog_detach_month(
        p_partition pg_catalog.text, p_run_id pg_catalog.text, p_retention_months pg_catalog.int4)
    RETURNS pg_catalog.void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_bound text;
    v_upper timestamptz;
BEGIN
    IF p_retention_months IS NULL OR p_retention_months OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'detach: retention must be at least one month' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) INTO v_bound
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE i.inhparent OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass
      AND n.nspname OPERATOR(pg_catalog.=) 'hrms' AND c.relname OPERATOR(pg_catalog.=) p_partition;
    IF v_bound IS NULL OR v_bound OPERATOR(pg_catalog.=) 'DEFAULT' OR v_bound OPERATOR(pg_catalog.~~) '%MAXVALUE)' THEN
        RAISE EXCEPTION 'detach: % is not an attached month of hrms.core_auditlog', p_partition
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_upper := pg_catalog.btrim((pg_catalog.regexp_match(v_bound, 'TO \((.+)\)$'))[1], '''')::pg_catalog.timestamptz;
    -- The audit row comes first: if the detach fails, the transaction takes both back.
    INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after)
    VALUES (p_run_id, 'audit_log_partitions', 'detach', 'core_auditlog', p_partition,
            pg_catalog.jsonb_build_object('attached', true),
            pg_catalog.jsonb_build_object('attached', false, 'retention_months', p_retention_months,
                                          'ended', v_upper, 'kept_as_table', 'hrms.' OPERATOR(pg_catalog.||) p_partition));
    -- DETACH ... CONCURRENTLY is not allowed while a default partition exists; this is brief.
    EXECUTE pg_catalog.format('ALTER TABLE hrms.core_auditlog DETACH PARTITION hrms.%I', p_partition);
END
$fn$"""

_FUNCTIONS = ("core_auditlog_take_over()",
              "core_auditlog_attach_month(pg_catalog.timestamptz, pg_catalog.timestamptz, pg_catalog.bool)",
              "core_auditlog_detach_month(pg_catalog.text, pg_catalog.text, pg_catalog.int4)")


# A role created with no attribute but LOGIN or NOLOGIN (and INHERIT); an existing one loses any
# attribute it must not have. Only what is wrong is altered: PostgreSQL lets only a superuser even
# mention SUPERUSER in ALTER ROLE (15: REPLICATION and BYPASSRLS too; 16+: only a holder of
# REPLICATION / BYPASSRLS / CREATEDB may mention those), so the administrator of a managed service
# (CREATEROLE, CREATEDB: RDS, Cloud SQL, Azure) can run it, and a role that truly holds SUPERUSER
# still fails loudly unless a superuser runs it. Placeholders: {name} (a literal), {role} (an
# identifier), {login} (LOGIN or NOLOGIN), {can_login} (true or false).
ROLE_TEMPLATE = """DO $$
DECLARE
    r record;
BEGIN
    SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolinherit INTO r
    FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) {name};
    IF NOT FOUND THEN
        CREATE ROLE {role} {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
        RETURN;
    END IF;
    IF r.rolsuper THEN ALTER ROLE {role} NOSUPERUSER; END IF;
    IF r.rolreplication THEN ALTER ROLE {role} NOREPLICATION; END IF;
    IF r.rolbypassrls THEN ALTER ROLE {role} NOBYPASSRLS; END IF;
    IF r.rolcreatedb THEN ALTER ROLE {role} NOCREATEDB; END IF;
    IF r.rolcreaterole THEN ALTER ROLE {role} NOCREATEROLE; END IF;
    IF r.rolcanlogin IS DISTINCT FROM {can_login} THEN ALTER ROLE {role} {login}; END IF;
    IF NOT r.rolinherit THEN ALTER ROLE {role} INHERIT; END IF;
END
$$"""


def nologin_role(name: str) -> str:
    """The create-or-fix statement of a NOLOGIN role (`name`: a constant of this code, no quoting needed)."""
    return ROLE_TEMPLATE.format(name=f"'{name}'", role=name, login="NOLOGIN", can_login="false")


def role_statements() -> list[str]:
    """The owner role (after the duty roles exist): NOLOGIN, no attribute, a member of the migrator."""
    return [
        nologin_role(AUDIT_OWNER),
        # Only for core_auditlog_take_over (taking a table from its owner needs the owner's rights).
        "GRANT hrms_migrator TO hrms_audit_owner",
    ]


def statements() -> list[str]:
    """The administrator's part (idempotent; after role_statements, and once the administrator may
    SET ROLE hrms_audit_owner: roles.py grants it for the length of the script): its schema and the
    three functions. What only the owner may do is done as the owner (SET ROLE ... RESET ROLE), so
    the administrator needs no privilege of hrms_audit_owner's, only the right to become it."""
    out = [
        "DO $$ BEGIN IF pg_catalog.to_regnamespace('hrms_audit') IS NULL THEN "
        "CREATE SCHEMA hrms_audit AUTHORIZATION hrms_audit_owner; END IF; END $$",
        "ALTER SCHEMA hrms_audit OWNER TO hrms_audit_owner",
        "SET ROLE hrms_audit_owner",
        "REVOKE ALL ON SCHEMA hrms_audit FROM PUBLIC",
        "GRANT USAGE ON SCHEMA hrms_audit TO hrms_migrator",
    ]
    for body in (_TAKE_OVER, _ATTACH, _DETACH):
        out.append(body.strip())
    for signature in _FUNCTIONS:
        function = f"hrms_audit.{signature}"
        out += [f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
                f"GRANT EXECUTE ON FUNCTION {function} TO hrms_migrator"]
    out.append("RESET ROLE")
    return out
