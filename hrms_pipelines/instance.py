"""Dagster's own storage: dagster-postgres, on DAGSTER_PG_URL or else the embedded server.

`dagster.yaml` names this class so that every way of running the project stores runs, event logs
and schedules in PostgreSQL, including a bare `dagster job execute -m hrms_pipelines -j NAME` in a
fresh clone with nothing set: then the `dagster` database of the embedded server under .hrms/ serves.

It is dagster-postgres's own `DagsterPostgresStorage`; only the URL's source differs. The parts it
hands to other processes (run workers, the daemon) carry `postgres_url` as an `env:` reference when
the URL came from the environment (so no password is written down), else the embedded server's
socket URL, which holds none.
"""

import os

import yaml
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from hrms_pipelines import settings


class HrmsPostgresStorage(DagsterPostgresStorage):
    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        if os.environ.get(settings.DAGSTER_PG_URL_ENV):
            url = os.environ[settings.DAGSTER_PG_URL_ENV]
            portable = {"postgres_url": {"env": settings.DAGSTER_PG_URL_ENV}}
        else:
            from hrms_pipelines import embedded

            url = embedded.dagster_storage_url()
            portable = {"postgres_url": url}
        storage = cls(postgres_url=url, inst_data=inst_data)
        storage._portable_config_yaml = yaml.safe_dump(portable)
        return storage

    def _part(self, class_name: str) -> ConfigurableClassData:
        return ConfigurableClassData("dagster_postgres", class_name, self._portable_config_yaml)

    @property
    def event_storage_data(self):
        return self._part("PostgresEventLogStorage")

    @property
    def run_storage_data(self):
        return self._part("PostgresRunStorage")

    @property
    def schedule_storage_data(self):
        return self._part("PostgresScheduleStorage")
