"""The line store's vouching entries of one stage, read once per file and looked up in numpy.

A file's lines are classified against the entries that may vouch (linehash.vouching: written by an
import record no reset took back, with a line hash), read in one statement -- one bytea of their line
hashes, 16 bytes an entry -- instead of an index probe per line. The entries
are sorted on the first 8 bytes of their line hash (as a uint64: a sort of integers, not of strings),
and a line's digest is looked up on them (a bucket index over their top bits: a binary search's
cache misses cost more than the rest of the lookup); a match is then confirmed on all
16 bytes (the first 8 alone are never trusted: two digests sharing them are told apart, and a run of
entries sharing them is walked). One entry per key (imports/0005): a line hash found stands for one
key, which the server knows (the keys are not read: linehash.known_table joins them when asked).

Memory: 16 bytes an entry kept, and while loading the value received (16) and the sort's index (8):
about 16 MB for a million entries, 50 MB at the peak of the load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

TABLE = "hrms.imports_linehash"
# big-endian halves of a 16-byte digest: compared as integers they order as the bytes do
_HALVES = np.dtype([("hi", ">u8"), ("lo", ">u8")])


@dataclass(eq=False)
class Vouching:
    """Line hashes sorted by their first 8 bytes: hi, and lo (the last 8)."""

    hi: np.ndarray            # uint64, sorted
    lo: np.ndarray            # uint64
    starts: np.ndarray | None = None   # int64: where each bucket (the top `bits` bits of hi) starts
    bits: int = 1

    def __post_init__(self) -> None:
        # A bucket per entry or so: a lookup lands next to its entry in one random access, where a
        # binary search over a million entries takes some 20 (most of them cache misses).
        self.bits = min(max(len(self.hi).bit_length(), 1), 26)
        counts = np.bincount((self.hi >> np.uint64(64 - self.bits)).astype(np.int64), minlength=1 << self.bits)
        self.starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.starts[1:])

    def _first_at_least(self, hi: np.ndarray) -> np.ndarray:
        """np.searchsorted(self.hi, hi) (the first entry not below each), through the buckets."""
        bucket = (hi >> np.uint64(64 - self.bits)).astype(np.int64)
        at, end = self.starts[bucket], self.starts[bucket + 1]
        walking = np.flatnonzero(at < end)
        walking = walking[self.hi[at[walking]] < hi[walking]]
        while len(walking):
            at[walking] += 1
            walking = walking[at[walking] < end[walking]]
            walking = walking[self.hi[at[walking]] < hi[walking]]
        return at

    def __len__(self) -> int:
        return len(self.hi)

    @classmethod
    def from_hashes(cls, blob: bytes | None) -> Vouching:
        """From line hashes, 16 bytes each, in any order."""
        if not blob:
            return EMPTY
        halves = np.frombuffer(blob, dtype=_HALVES)
        hi = halves["hi"].astype(np.uint64)
        order = np.argsort(hi, kind="stable")
        hi = hi[order]
        return cls(hi, halves["lo"].astype(np.uint64)[order])

    def hashes(self, at: np.ndarray) -> np.ndarray:
        """The line hashes (S16) of the entries at these positions."""
        halves = np.empty(len(at), dtype=_HALVES)
        halves["hi"], halves["lo"] = self.hi[at], self.lo[at]
        return np.frombuffer(halves.tobytes(), dtype="S16")

    def find(self, digests: bytes) -> np.ndarray:
        """The position of each 16-byte digest of `digests` (concatenated) among the entries, -1 for a
        digest no entry has. All 16 bytes must be equal."""
        wanted = np.frombuffer(digests, dtype=_HALVES)
        if not len(self):
            return np.full(len(wanted), -1, dtype=np.int64)
        hi, lo = wanted["hi"].astype(np.uint64), wanted["lo"].astype(np.uint64)
        at = np.minimum(self._first_at_least(hi), len(self) - 1)
        same_hi = self.hi[at] == hi
        hit = same_hi & (self.lo[at] == lo)
        # the first entry whose first 8 bytes match is not the one: walk the run sharing them (rare)
        for i in np.flatnonzero(same_hi & ~hit).tolist():
            j = int(at[i]) + 1
            while j < len(self) and self.hi[j] == hi[i]:
                if self.lo[j] == lo[i]:
                    at[i], hit[i] = j, True
                    break
                j += 1
        return np.where(hit, at, -1)


EMPTY = Vouching(np.empty(0, np.uint64), np.empty(0, np.uint64))


def load(conn: psycopg.Connection, stage: str, floor: int, gone: list[int]) -> Vouching:
    """The entries of `stage` that may vouch for a line: a line hash, written by a record above the
    floor of the newest reset and not undone (linehash.vouching). One statement, one value."""
    blob = conn.execute(f"""
        SELECT string_agg(line_hash, ''::bytea) FROM {TABLE}
        WHERE stage = %s AND line_hash IS NOT NULL AND import_record_id > %s AND import_record_id <> ALL(%s::bigint[])""",
        [stage, floor, gone], binary=True).fetchone()[0]
    return Vouching.from_hashes(blob)
