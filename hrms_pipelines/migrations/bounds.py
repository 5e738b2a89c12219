"""Bounds on the runner's numeric knobs (issue 17 item 7): a UI user sets them at launch, so a value
past its bound is refused, naming the limit, before anything runs.

- lock_timeout: more than 0 (0 is "wait forever" to PostgreSQL), at most 10min: while a migration
  waits for a lock, every session that queues behind it waits too;
- statement_timeout: more than 0 (0 is "no limit"), at most 12h (a concurrent index build on a large
  table; anything longer is a backfill, not a migration);
- runner_wait (how long a run waits for another migration run to finish): 0 to 1h.

Durations are written with their unit (500ms, 30s, 5min, 2h): a bare number is refused, since
PostgreSQL would read it as milliseconds where a reader expects seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


class KnobError(ValueError):
    """A knob's value is unreadable or past its bound; says which, and the limit."""


@dataclass(frozen=True)
class Bound:
    name: str
    low: float  # seconds, exclusive when `positive`
    high: float  # seconds, inclusive
    high_text: str
    positive: bool = True

    def check(self, value: str) -> float:
        text = str(value)
        if not self.positive and text.strip() == "0":
            return 0.0
        match = _DURATION.fullmatch(text)
        if not match:
            raise KnobError(f"{self.name}={text!r} is not a duration: write it with its unit, e.g. 500ms, 30s, 5min "
                            f"(at most {self.high_text})")
        seconds = float(match[1]) * _UNITS[match[2]]
        if self.positive and seconds <= 0:
            raise KnobError(f"{self.name}={text!r}: must be more than 0 (0 would mean no limit at all to PostgreSQL); "
                            f"at most {self.high_text}")
        if seconds > self.high:
            raise KnobError(f"{self.name}={text!r} is past its limit of {self.high_text}")
        return seconds


LOCK_TIMEOUT = Bound("lock_timeout", 0, 600, "10min")
STATEMENT_TIMEOUT = Bound("statement_timeout", 0, 12 * 3600, "12h")
RUNNER_WAIT = Bound("runner_wait", 0, 3600, "1h", positive=False)
