"""What `make demo` prints after the seed step: rows per reference table."""

from __future__ import annotations

import psycopg
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.seeding import fixtures


def print_seed_summary(url: str, environment: str | None = None) -> None:
    chosen = fixtures.for_environment(environment or settings.environment())
    print(f"\nSeed data ({settings.ENVIRONMENT_ENV}={environment or settings.environment()}):")
    with psycopg.connect(url) as conn:
        for fixture in chosen:
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(settings.HR_SCHEMA, fixture.table))).fetchone()[0]
            print(f"  {fixture.title:<36} {settings.HR_SCHEMA}.{fixture.table:<32} {rows:>4} rows")
