"""Run config never reads the worker's environment: `{env: NAME}` is refused at launch.

Dagster's Pythonic config (`dg.Config`, `dg.ConfigurableResource`) types every `str`, `int` and
`bool` field as `StringSource` / `IntSource` / `BoolSource`, which accept `{env: NAME}` and resolve it
in the process that builds the run's plan and in the run worker, where the service's secrets live
(HRMS_*_PASSWORD, HRMS_DATABASE_URL, the alert webhook...). A launcher who sets a file name to
`{env: HRMS_MIGRATOR_PASSWORD}` would read the password back in a "no such file" message.

`plain_config_types()` makes those fields plain `String` / `Int` / `Bool` for this code location: a
launch with `{env: ...}` anywhere is refused by config validation, in the webserver, before any
process reads the variable (GraphQL answers `RunConfigValidationInvalid`; `dagster job execute`
stops with "invalid config"). Deployment settings come from the environment through
hrms_pipelines.settings, never from run config, so nothing of the project needs `{env: ...}`.

It wraps the one function of Dagster that maps a Pythonic field's Python type to its config type
(dagster._config.pythonic_config.conversion_utils). The package installs it on import (`install`),
before any Config class is turned into a schema: at once when Dagster is loaded, else as soon as
Dagster's config module is (light entry points such as the analyzer's CLI never load Dagster for it).
test_launch_config.py walks every job's run-config schema and fails if a *Source type is left
anywhere (or if Dagster renames the function).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys

_MODULE = "dagster._config.pythonic_config.config"  # it loads conversion_utils, and defines dg.Config
_TARGET = "_config_type_for_type_on_pydantic_field"
_MARK = "__hrms_plain_config__"


def plain_config_types() -> None:
    """Make every Pythonic config field of `str`/`int`/`bool` a plain type (idempotent)."""
    from dagster._config.config_type import ConfigBoolInstance as Bool, ConfigIntInstance as Int
    from dagster._config.config_type import ConfigStringInstance as String
    from dagster._config.pythonic_config import conversion_utils
    from dagster._config.source import BoolSource, IntSource, StringSource

    plain_of = {id(StringSource): String, id(IntSource): Int, id(BoolSource): Bool}
    original = getattr(conversion_utils, _TARGET, None)
    if original is None:  # pragma: no cover - a Dagster upgrade renamed it: fail loudly, never silently
        raise RuntimeError(
            f"dagster._config.pythonic_config.conversion_utils.{_TARGET} is gone: run config could accept "
            "{env: ...} again; adapt hrms_pipelines.launch_config to this Dagster version")
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def plain(potential_dagster_type):
        config_type = original(potential_dagster_type)  # recursion (lists, Optional) comes back through here
        return plain_of.get(id(config_type), config_type)

    setattr(plain, _MARK, True)
    setattr(conversion_utils, _TARGET, plain)
    hide_config_values_in_errors()


def hide_config_values_in_errors() -> None:
    """Pydantic's validation errors of Config classes without `input_value=...`: a validator that
    refuses a value (full_backup: [...]) must not have the value echoed into the event log."""
    from dagster._config.pythonic_config.config import MakeConfigCacheable

    todo = [MakeConfigCacheable]
    while todo:
        cls = todo.pop()
        if "model_config" in cls.__dict__:
            cls.model_config["hide_input_in_errors"] = True
        todo.extend(cls.__subclasses__())


class _AfterDagsterConfig(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs `plain_config_types` right after Dagster's config module (dg.Config) is loaded."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        plain_config_types()


def install() -> None:
    """Refuse `{env: ...}` in this process's run config from now on (see the module's docstring)."""
    if _MODULE in sys.modules:
        plain_config_types()
    elif not any(isinstance(finder, _AfterDagsterConfig) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterDagsterConfig())


def source_fields(config_type, path: str = "") -> list[str]:
    """Paths of the fields of `config_type` (a run-config schema) that still accept `{env: ...}`."""
    from dagster._config.source import BoolSource, IntSource, StringSource

    SOURCE_TYPES = (StringSource, IntSource, BoolSource)
    found: list[str] = []
    seen: set[int] = set()

    def walk(t, where: str) -> None:
        if any(t is s for s in SOURCE_TYPES) or t.key.endswith("SourceType"):
            found.append(where or "<root>")
            return
        if id(t) in seen:
            return
        seen.add(id(t))
        for name, field in (getattr(t, "fields", None) or {}).items():
            walk(field.config_type, f"{where}.{name}" if where else name)
        for attr in ("inner_type", "key_type"):
            inner = getattr(t, attr, None)
            if inner is not None and not isinstance(inner, type):
                walk(inner, f"{where}[]")
        for member in getattr(t, "type_params", None) or ():
            walk(member, f"{where}|")

    walk(config_type, path)
    return found
