"""hrms_pipelines: an HR system's production data operations on PostgreSQL, as a Dagster code location.

`dagster job execute -m hrms_pipelines -j NAME` finds `defs` here. It is loaded lazily so that light
entry points (the migration analyzer's CLI, the benchmarks) do not import every asset.

Importing the package first makes run config refuse `{env: NAME}` (hrms_pipelines.launch_config):
no launcher reads the worker's environment back.
"""

from hrms_pipelines import launch_config as _launch_config

_launch_config.install()


def __getattr__(name: str):
    if name == "defs":
        from hrms_pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'hrms_pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
