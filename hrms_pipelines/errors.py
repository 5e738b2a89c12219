"""The error boundary: what an exception may say when it leaves this code location for Dagster.

Dagster stores an op's exception, with its whole cause chain, in the event log (and prints it to
the run's compute logs and the console), and the failure-alert sensor forwards it. PostgreSQL's
errors carry row values: in DETAIL (`Key (email)=(ama@nhia.gov.gh) already exists`), in CONTEXT
(`COPY stg_history, line 5, column salary: "4800.00"`), in the primary message (`invalid input
syntax for type numeric: "4,800.00"`), and psycopg's `str(error)` adds the statement around the
error position. So every op, asset, asset check and sensor of the code location runs behind
`error_boundary` (directly, or through `retries.transient_retries`), which lets out only:

- a `dg.Failure` whose description names what failed (the code's own message, and for a database
  error: the masked primary message, SQLSTATE and condition name, schema/table, column, constraint,
  masked DETAIL and CONTEXT), with `privacy.scrub_text` over all of it, raised `from None`: no raw
  driver error anywhere in its chain. Its metadata says the original error class and the SQLSTATE,
  table, column and constraint, for the UI and the alerts;
- Dagster's own control flow unchanged: `RetryRequested` (its cause replaced by a sanitised one),
  `DagsterExecutionInterruptedError` (a BaseException, never caught here), and Dagster's errors;
- a `dg.Failure` the code raised itself, rebuilt with its description and text metadata scrubbed
  and its chain cut.

While the function runs, the current op's `context.log` passes every message through
`privacy.scrub_text` (a logging filter), so a log line that quotes a value by mistake is masked too.
The coverage test (hrms_pipelines_tests/test_leak_scan.py) asserts that every op, check and sensor
of the Definitions is behind the boundary.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from hrms_pipelines import privacy

MARK = "__hrms_error_boundary__"


class SanitisedError(Exception):
    """A stand-in for an error whose text may hold values: only its sanitised message, no chain.
    Used as the cause of a RetryRequested, so the retry event says why without leaking."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and every error behind it (causes, and contexts even when suppressed: we look at them
    to know what to mask, never to show them), SQLAlchemy's wrapped driver errors included."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += [getattr(err, "orig", None), err.__cause__, err.__context__]


def database_errors(exc: BaseException) -> list[psycopg.Error]:
    """The psycopg errors in `exc`'s chain, outermost first."""
    return [err for err in _chain(exc) if isinstance(err, psycopg.Error)]


def _copy_column(err: psycopg.Error) -> str | None:
    """The column a COPY error names in its CONTEXT (`COPY stg, line 5, column salary: ...`)."""
    context = err.diag.context or ""
    marker = ", column "
    if context.startswith("COPY ") and marker in context:
        return context.split(marker, 1)[1].split(":", 1)[0].strip() or None
    return None


def database_facts(err: psycopg.Error) -> dict[str, str]:
    """What a database error says about where it happened, none of it a value."""
    diag = err.diag
    facts = {"sqlstate": err.sqlstate or "", "condition": type(err).__name__}
    if diag.table_name:
        facts["table"] = f"{diag.schema_name}.{diag.table_name}" if diag.schema_name else diag.table_name
    if column := diag.column_name or _copy_column(err):
        facts["column"] = column
    if diag.constraint_name:
        facts["constraint"] = diag.constraint_name
    if diag.datatype_name:
        facts["datatype"] = diag.datatype_name
    return {k: v for k, v in facts.items() if v}


def _primary(err: psycopg.Error) -> str:
    diag = err.diag
    column = diag.column_name or _copy_column(err)
    names = (diag.table_name, diag.column_name, diag.constraint_name, diag.schema_name, diag.datatype_name)
    text = diag.message_primary or str(err).split("\n", 1)[0] or type(err).__name__
    return privacy.mask_database_message(text.strip(), column=column, table=diag.table_name, identifiers=names)


def describe_database_error(err: psycopg.Error) -> str:
    """A database error as it may be shown: masked primary message, then where (SQLSTATE, table,
    column, constraint), then masked DETAIL, HINT and CONTEXT. Never psycopg's `str(err)`, which
    repeats the statement around the error position."""
    diag = err.diag
    facts = database_facts(err)
    where = ", ".join(
        [f"SQLSTATE {facts['sqlstate']} {facts['condition']}" if "sqlstate" in facts else facts["condition"]]
        + [f"{key} {facts[key]}" for key in ("table", "column", "constraint") if key in facts])
    lines = [f"{_primary(err)} ({where})"]
    if diag.message_detail:
        lines.append("DETAIL: " + privacy.mask_database_detail(diag.message_detail.strip(), diag.table_name))
    if diag.message_hint:
        lines.append("HINT: " + privacy.mask_database_message(diag.message_hint.strip(), table=diag.table_name))
    if diag.context:
        lines.append("CONTEXT: " + _mask_context(err))
    return privacy.scrub_text("\n".join(lines))


def _mask_context(err: psycopg.Error) -> str:
    table = err.diag.table_name
    out = []
    for line in (err.diag.context or "").strip().splitlines():
        masked = privacy.mask_database_detail(line, table)
        # a line that is not one of the recognised forms (SQL statement "...", PL/pgSQL ...) may
        # quote anything: every quoted part of it is masked
        out.append(masked if masked != line else privacy.mask_database_message(line, table=table))
    return "\n".join(out)


def _raw_pieces(err: psycopg.Error) -> list[tuple[str, str]]:
    """(raw text, its sanitised form) for each part of a database error that other messages quote."""
    diag = err.diag
    pieces = [(str(err), describe_database_error(err)), (str(err).strip(), describe_database_error(err))]
    if diag.message_primary:
        pieces.append((diag.message_primary, _primary(err)))
    if diag.message_detail:
        pieces.append((diag.message_detail, privacy.mask_database_detail(diag.message_detail, diag.table_name)))
    if diag.message_hint:
        pieces.append((diag.message_hint, privacy.mask_database_message(diag.message_hint, table=diag.table_name)))
    if diag.context:
        pieces.append((diag.context, _mask_context(err)))
        pieces.append((diag.context.strip(), _mask_context(err)))
    return sorted({raw: safe for raw, safe in pieces if raw}.items(), key=lambda p: -len(p[0]))


def _replace_database_text(text: str, exc: BaseException) -> str:
    """`text` with whatever it quotes of the database errors behind `exc` replaced by their masked form."""
    for err in database_errors(exc):
        for raw, safe in _raw_pieces(err):
            text = text.replace(raw, safe)
    return text


def safe_message(exc: BaseException) -> str:
    """What `exc` may say outside the code location: the code's own message with any database text it
    quotes masked, the database error behind it described (masked) when the message does not already
    say it, and `privacy.scrub_text` over the whole."""
    errors = database_errors(exc)
    if errors and (exc is errors[0] or getattr(exc, "orig", None) is errors[0]):
        return describe_database_error(errors[0])
    if isinstance(exc, dg.Failure):
        text = exc.description or "failed"
    else:
        text = str(exc).strip() or type(exc).__name__
    text = privacy.scrub_text(_replace_database_text(text, exc))
    if errors and _primary(errors[0]) not in text:
        text += "\nPostgreSQL: " + describe_database_error(errors[0])
    return text


def _scrub_metadata_value(value):
    if isinstance(value, str):
        return privacy.scrub_text(value)
    if isinstance(value, dg.TextMetadataValue):
        return dg.MetadataValue.text(privacy.scrub_text(value.text))
    if isinstance(value, dg.MarkdownMetadataValue):
        return dg.MetadataValue.md(privacy.scrub_text(value.md_str or ""))
    if isinstance(value, dg.JsonMetadataValue):
        return dg.MetadataValue.json(json.loads(privacy.scrub_text(json.dumps(value.data))))
    if isinstance(value, dg.TableMetadataValue):
        records = [dg.TableRecord({k: privacy.scrub_text(v) if isinstance(v, str) else v for k, v in r.data.items()})
                   for r in value.records]
        return dg.MetadataValue.table(records, schema=value.schema)
    return value


def sanitised_failure(exc: BaseException) -> dg.Failure:
    """The dg.Failure that stands for `exc` outside the code location (raise it `from None`)."""
    metadata: dict = {}
    allow_retries = True
    if isinstance(exc, dg.Failure):
        metadata.update({key: _scrub_metadata_value(value) for key, value in (exc.metadata or {}).items()})
        allow_retries = exc.allow_retries
    else:
        metadata["error_class"] = type(exc).__name__
    errors = database_errors(exc)
    if errors:
        for key, value in database_facts(errors[0]).items():
            metadata.setdefault(f"database_{key}", value)
    return dg.Failure(description=safe_message(exc), metadata=metadata, allow_retries=allow_retries)


def _scrub_current_log() -> None:
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterError:
        return  # a sensor, or a function called outside a run
    privacy.scrub_logger(context.log)


@contextmanager
def boundary() -> Iterator[None]:
    """The error boundary as a context manager (the decorator below is what ops and assets use)."""
    _scrub_current_log()
    try:
        yield
    except dg.RetryRequested as retry:
        cause = retry.__cause__
        if cause is not None and not isinstance(cause, SanitisedError):
            retry.__cause__ = SanitisedError(safe_message(cause))
        retry.__suppress_context__ = True
        raise
    except dg.Failure as failure:
        raise sanitised_failure(failure) from None
    except dg.DagsterError:
        raise  # Dagster's own (invalid config, invariant violations, ...): framework text, not HR values
    except Exception as exc:  # noqa: BLE001 - this is the boundary
        raise sanitised_failure(exc) from None


def error_boundary(fn: Callable) -> Callable:
    """Decorator for an op's, asset's, asset check's or sensor's function (under @dg.op, @dg.asset,
    @dg.asset_check, @dg.sensor ...): exceptions leave it only as described in this module."""
    if getattr(fn, MARK, False):
        return fn

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            with boundary():
                yield from fn(*args, **kwargs)
        wrapper = generator_wrapper
    else:
        @functools.wraps(fn)
        def function_wrapper(*args, **kwargs):
            with boundary():
                return fn(*args, **kwargs)
        wrapper = function_wrapper
    setattr(wrapper, MARK, True)
    return wrapper


def is_guarded(fn: Callable | None) -> bool:
    """True when `fn` (or a function it wraps) is behind the error boundary."""
    while fn is not None:
        if getattr(fn, MARK, False):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False
