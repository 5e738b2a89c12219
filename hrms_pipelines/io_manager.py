"""The IO manager of every job: op outputs between the steps of a run, pickled under .hrms/io
(HRMS_HOME), 0700. It has no config: Dagster's default one takes `base_dir` from run config, which
would let whoever launches a run choose where the service writes."""

import dagster as dg
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager

from hrms_pipelines import settings


@dg.io_manager(config_schema={}, description="Op outputs of a run, pickled under the deployment's HRMS_HOME/io (0700); no config.")
def hrms_io_manager(_context: dg.InitResourceContext) -> PickledObjectFilesystemIOManager:
    return PickledObjectFilesystemIOManager(base_dir=str(settings.private_dir(settings.io_dir())))
