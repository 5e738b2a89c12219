"""Retries where they are safe: transient database errors only, with exponential backoff.

Every step that writes to the HR database is idempotent by construction (an import stage or a
migration is one transaction, a seed inserts what is missing, a backfill resumes from its
checkpoint), so re-running it after a transient failure cannot apply anything twice. What is
transient: a lost connection, a serialization failure, a deadlock, a lock timeout, a server
shutting down or starting. Anything else (bad data, a constraint, a syntax error) fails at once.

`transient_retries` is also the error boundary (hrms_pipelines.errors): the retry decision is made
on the raw error, then nothing of it but a sanitised message leaves the step, whether as the cause
of the RetryRequested or as the dg.Failure that ends it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from hrms_pipelines import errors

MAX_RETRIES = 3
BASE_DELAY_SECONDS = 2.0

TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
    "08000", "08001", "08003", "08004", "08006",  # connection exceptions
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_authentication_failure(err: BaseException) -> bool:
    """A login the server refused (SQLSTATE class 28, or the driver's message when the connection
    failed before a SQLSTATE came back): retrying cannot help and would only lock the account."""
    if isinstance(err, psycopg.Error) and err.sqlstate and err.sqlstate.startswith("28"):
        return True
    text = str(err).lower()
    return isinstance(err, psycopg.OperationalError) and any(marker in text for marker in (
        "authentication failed", "password authentication", "no password supplied", "no pg_hba.conf entry",
        "role \"", "does not exist", "permission denied for database", "certificate"))


def is_transient(exc: BaseException) -> bool:
    """True when the error, or one it was raised from, is a transient database error. An
    authentication failure never is, wherever it sits in the chain."""
    chain = [getattr(err, "orig", None) or err for err in _chain(exc)]  # SQLAlchemy wraps the driver's error
    if any(is_authentication_failure(err) for err in chain):
        return False
    for err in chain:
        if isinstance(err, psycopg.Error):
            if err.sqlstate in TRANSIENT_SQLSTATES:
                return True
            if err.sqlstate is None and isinstance(err, psycopg.OperationalError):
                return True  # connection lost before the server could answer
    return False


def backoff_seconds(retry_number: int) -> float:
    return BASE_DELAY_SECONDS * (2**retry_number)


@contextmanager
def retry_transient_errors(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> Iterator[None]:
    """Turn a transient database error into a Dagster retry of the step, with backoff. The retry's
    cause and the warning carry the error's sanitised message only."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc) and context.retry_number < MAX_RETRIES:
            wait = backoff_seconds(context.retry_number)
            reason = errors.safe_message(exc)
            context.log.warning(f"transient database error, retry {context.retry_number + 1}/{MAX_RETRIES} in {wait:.0f}s: {reason}")
            raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from errors.SanitisedError(reason)
        raise


def transient_retries(fn: Callable) -> Callable:
    """Decorator for an op's or asset's function (placed under @dg.op / @dg.asset): transient
    database errors retried, and the whole behind the error boundary."""
    signature = inspect.signature(fn)

    def context_of(args, kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        return bound.arguments.get("context")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            with retry_transient_errors(context_of(args, kwargs)):
                yield from fn(*args, **kwargs)
        return errors.error_boundary(generator_wrapper)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with retry_transient_errors(context_of(args, kwargs)):
            return fn(*args, **kwargs)
    return errors.error_boundary(wrapper)
