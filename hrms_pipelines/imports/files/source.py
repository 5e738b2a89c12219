"""One open file, read by every pass at its own offsets.

An import file is opened ONCE (`settings.open_regular_file`: a plain name, no symlink, only a regular
file) and every pass — sha256 and structure, pandas/Pandera, COPY into staging, the reject file's
full rows — reads that same open inode with `os.pread`, each reader with its own offset (the passes
run in two threads at once). A file renamed, replaced or swapped for a symlink after it was opened is
never followed, and the sha256 recorded is the sha256 of the bytes that were loaded.
"""

from __future__ import annotations

import io
import os
import threading
import weakref

BLOCK = 1 << 20


class OpenFile:
    """An open file descriptor, closed with `close()` or when the last reference goes away."""

    def __init__(self, fd: int, label: str, owner=None):
        """`owner`: a file object that owns `fd` (closed instead of the bare descriptor)."""
        self.fd = fd
        self.label = label
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, owner.close) if owner is not None else weakref.finalize(self, os.close, fd)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def blocks(self, start: int = 0, end: int | None = None, block: int = BLOCK):
        """The bytes from `start` to `end` (or the end of the file) in blocks."""
        offset = start
        while end is None or offset < end:
            want = block if end is None else min(block, end - offset)
            data = os.pread(self.fd, want, offset)
            if not data:
                return
            offset += len(data)
            yield data

    def reader(self, segments: list[tuple[int, int]]) -> io.BufferedReader:
        """A binary stream over byte ranges of the file (e.g. the header, then the rows after an offset)."""
        return io.BufferedReader(_SegmentsRaw(self, segments), buffer_size=BLOCK)

    def filelike(self) -> io.BufferedReader:
        """A seekable binary stream over the whole file (for readers that want read/seek)."""
        return io.BufferedReader(_WholeRaw(self), buffer_size=BLOCK)


class _SegmentsRaw(io.RawIOBase):
    def __init__(self, source: OpenFile, segments: list[tuple[int, int]]):
        self.source = source
        self.segments = [(s, e) for s, e in segments if e > s]
        self.index = 0
        self.offset = self.segments[0][0] if self.segments else 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.index < len(self.segments):
            start, end = self.segments[self.index]
            if self.offset >= end:
                self.index += 1
                if self.index < len(self.segments):
                    self.offset = self.segments[self.index][0]
                continue
            data = self.source.pread(min(len(buffer), end - self.offset), self.offset)
            if not data:          # the file shrank under us: stop here (the row counts will disagree)
                self.index = len(self.segments)
                return 0
            buffer[: len(data)] = data
            self.offset += len(data)
            return len(data)
        return 0


class _WholeRaw(io.RawIOBase):
    def __init__(self, source: OpenFile):
        self.source = source
        self.offset = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.offset, 2: self.source.size()}[whence]
        self.offset = max(0, base + offset)
        return self.offset

    def tell(self) -> int:
        return self.offset

    def readinto(self, buffer) -> int:
        data = self.source.pread(len(buffer), self.offset)
        buffer[: len(data)] = data
        self.offset += len(data)
        return len(data)
