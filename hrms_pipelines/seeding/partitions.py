"""One partition per fixture that the deployment's environment loads.

The partition set is computed from HRMS_ENV when the definitions load, so a production deployment's
UI never offers a staging-only fixture; the asset refuses it again at run time (see assets.py).
"""

from __future__ import annotations

import dagster as dg

from hrms_pipelines import settings
from hrms_pipelines.seeding import fixtures


def seed_partitions(environment: str | None = None) -> dg.StaticPartitionsDefinition:
    chosen = fixtures.for_environment(environment or settings.environment())
    return dg.StaticPartitionsDefinition([f.key for f in chosen])
