"""The line store's vouching entries of one stage, read once per file and looked up in numpy.

A file's lines are classified against the entries that may vouch (linehash.vouching: written by an
import record no reset took back, with a line hash), read in one statement -- one bytea of
(line_hash || key_hash) pairs, 32 bytes an entry -- instead of an index probe per line. The entries
are sorted on the first 8 bytes of their line hash (as a uint64: a sort of integers, not of strings),
and a line's digest is looked up with np.searchsorted on them; a match is then confirmed on all
16 bytes (the first 8 alone are never trusted: two digests sharing them are told apart, and a run of
entries sharing them is walked). One entry per key (imports/0005), so a line hash found gives the
key of the row it stands for.

Memory: 32 bytes an entry plus the sort's index (8): about 45 MB for a million entries, freed with
the stage's line pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

TABLE = "hrms.imports_linehash"
# big-endian halves of a 16-byte digest: compared as integers they order as the bytes do
_HALVES = np.dtype([("hi", ">u8"), ("lo", ">u8")])
_PAIRS = np.dtype([("hi", ">u8"), ("lo", ">u8"), ("key", "S16")])


@dataclass(eq=False)
class Vouching:
    """Entries sorted by the first 8 bytes of their line hash: hi, lo (the last 8) and the key hash."""

    hi: np.ndarray            # uint64, sorted
    lo: np.ndarray            # uint64
    keys: np.ndarray          # S16 (the row's natural key, md5)

    def __len__(self) -> int:
        return len(self.hi)

    @classmethod
    def from_pairs(cls, blob: bytes | None) -> Vouching:
        """From (line_hash || key_hash) pairs, 32 bytes each, in any order."""
        if not blob:
            return EMPTY
        pairs = np.frombuffer(blob, dtype=_PAIRS)
        hi = pairs["hi"].astype(np.uint64)
        order = np.argsort(hi, kind="stable")
        return cls(hi[order], pairs["lo"].astype(np.uint64)[order], pairs["key"][order])

    def find(self, digests: bytes) -> np.ndarray:
        """The position of each 16-byte digest of `digests` (concatenated) among the entries, -1 for a
        digest no entry has. All 16 bytes must be equal."""
        wanted = np.frombuffer(digests, dtype=_HALVES)
        if not len(self):
            return np.full(len(wanted), -1, dtype=np.int64)
        hi, lo = wanted["hi"].astype(np.uint64), wanted["lo"].astype(np.uint64)
        at = np.minimum(np.searchsorted(self.hi, hi), len(self) - 1).astype(np.int64)
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


EMPTY = Vouching(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, "S16"))


def load(conn: psycopg.Connection, stage: str, floor: int, gone: list[int]) -> Vouching:
    """The entries of `stage` that may vouch for a line: a line hash, written by a record above the
    floor of the newest reset and not undone (linehash.vouching). One statement, one value."""
    blob = conn.execute(f"""
        SELECT string_agg(line_hash || key_hash, ''::bytea) FROM {TABLE}
        WHERE stage = %s AND line_hash IS NOT NULL AND import_record_id > %s AND import_record_id <> ALL(%s::bigint[])""",
        [stage, floor, gone], binary=True).fetchone()[0]
    return Vouching.from_pairs(blob)
