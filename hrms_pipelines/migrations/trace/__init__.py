"""Trace mode (issue 13): every pending migration rehearsed on a scratch copy of the target's schema,
on a private PostgreSQL cluster, as the runner would run it; each statement's locks, rewrites,
scans, created indexes and constraints, and duration recorded, and set beside the static findings.

    rehearse()  the rehearsal (rehearse.py), never touching the target
    merge()     the static report judged by the trace, plus the trace's own findings (compare.py)
"""

from hrms_pipelines.migrations.trace.compare import merge
from hrms_pipelines.migrations.trace.model import HeldLock, StatementTrace, TraceResult
from hrms_pipelines.migrations.trace.rehearse import rehearse
from hrms_pipelines.migrations.trace.schema import Target, TraceError, read_target, reference_stats

__all__ = ["HeldLock", "StatementTrace", "Target", "TraceError", "TraceResult", "merge", "read_target", "rehearse",
           "reference_stats"]
