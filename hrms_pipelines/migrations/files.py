"""Migration files on disk: `sql/migrations/<app>/NNNN_name.up.sql` and optional `.down.sql`.

A migration without a down file is irreversible. Header comments (before the first statement):

    -- hrms:non-transactional        run statement by statement outside a transaction
                                     (needed for CREATE INDEX CONCURRENTLY)
    -- hrms:depends-on: org/0001     must be applied after that migration of another app
    -- hrms:supersedes-checksum: <sha256>
                                     an earlier content of this file, applied somewhere already,
                                     that the ledger may still name (an edit reviewed as harmless
                                     to databases that ran the earlier one)

Within an app each migration depends on the one before it.
"""

from __future__ import annotations

import bisect
import heapq
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pglast import parser as pg_parser

from hrms_pipelines import settings

FILE_PATTERN = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
NON_TRANSACTIONAL_MARKER = re.compile(r"^\s*--\s*hrms:non-transactional\b", re.IGNORECASE)
DEPENDS_ON_MARKER = re.compile(r"^\s*--\s*hrms:depends-on:\s*(?P<refs>.+)$", re.IGNORECASE)
SUPERSEDES_MARKER = re.compile(r"^\s*--\s*hrms:supersedes-checksum:\s*(?P<shas>[0-9a-f,\s]+)$", re.IGNORECASE)


class MigrationError(Exception):
    """A migration problem a user has to act on; the message names the file."""


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line of the statement's first character in its file


@dataclass(frozen=True)
class MigrationFile:
    path: Path

    @cached_property
    def data(self) -> bytes:
        """The file's bytes, read once: the checksum, the text and the analyzer see the same ones."""
        return self.path.read_bytes()

    @cached_property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{self.path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc

    @cached_property
    def checksum(self) -> str:
        import hashlib  # here, not at the top: the analyzer's CLI never needs it

        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def transactional(self) -> bool:
        """False when the header says `-- hrms:non-transactional`."""
        return not any(NON_TRANSACTIONAL_MARKER.match(line) for line in self.header_lines())

    @cached_property
    def superseded_checksums(self) -> frozenset[str]:
        """Earlier contents of this file that a ledger may name (`-- hrms:supersedes-checksum:`)."""
        found: set[str] = set()
        for line in self.header_lines():
            if match := SUPERSEDES_MARKER.match(line):
                found.update(s.lower() for s in re.split(r"[,\s]+", match["shas"].strip()) if len(s) == 64)
        return frozenset(found)

    def accepts_checksum(self, checksum: str) -> bool:
        """The ledger's checksum is this file's, or one it declares it supersedes."""
        return checksum == self.checksum or checksum in self.superseded_checksums

    def header_lines(self) -> list[str]:
        lines = []
        for line in self.text.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("--"):
                break
            lines.append(line)
        return lines

    def statements(self) -> list[Statement]:
        """Every statement with its line number; a syntax error raises naming file and line."""
        text = self.text
        try:
            slices = pg_parser.split(text, with_parser=True, only_slices=True)
        except pg_parser.ParseError as exc:
            location = exc.args[1] if len(exc.args) > 1 else None  # character offset in the file
            line = text.count("\n", 0, location) + 1 if isinstance(location, int) else "?"
            raise MigrationError(f"{self.path}:{line}: syntax error: {exc.args[0]}") from exc
        return [Statement(text[s], text.count("\n", 0, s.start) + 1) for s in slices]


@dataclass
class Migration:
    app: str
    version: str  # "0001"
    name: str  # "initial"
    up: MigrationFile
    down: MigrationFile | None = None
    depends_on: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.version)

    @property
    def label(self) -> str:
        return f"{self.app}/{self.version}_{self.name}"

    @property
    def reversible(self) -> bool:
        return self.down is not None

    @property
    def transactional(self) -> bool:
        return self.up.transactional

    @property
    def down_path(self) -> Path:
        """Where the down file is, or would be."""
        return self.up.path.with_name(self.up.path.name.replace(".up.sql", ".down.sql"))


def check_app(migrations: list[Migration], app: str | None) -> None:
    """Refuse an app name that no migration belongs to, naming the apps there are."""
    apps = {m.app for m in migrations}
    if app is not None and app not in apps:
        raise MigrationError(f"unknown app {settings.shown(app)}; apps: {', '.join(sorted(apps))}")


def _parse_refs(migration_path: Path, raw: str) -> list[tuple[str, str]]:
    refs = []
    for ref in re.split(r"[,\s]+", raw.strip()):
        if not ref:
            continue
        match = re.fullmatch(r"(?P<app>[a-z0-9_]+)/(?P<version>\d{4})(?:_[a-z0-9_]+)?", ref)
        if not match:
            raise MigrationError(f"{migration_path}: bad hrms:depends-on reference {ref!r} (expected app/NNNN)")
        refs.append((match["app"], match["version"]))
    return refs


def discover(root: Path) -> list[Migration]:
    """Every migration under `root`, in dependency order (see `order`)."""
    if not root.is_dir():
        raise MigrationError(f"migrations folder not found: {root}")
    migrations: dict[tuple[str, str], Migration] = {}
    downs: dict[tuple[str, str], Path] = {}
    for app_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for path in sorted(app_dir.iterdir()):
            if path.suffix != ".sql":
                continue
            match = FILE_PATTERN.match(path.name)
            if not match:
                raise MigrationError(f"{path}: file name must look like NNNN_name.up.sql or NNNN_name.down.sql")
            key = (app_dir.name, match["version"])
            if match["direction"] == "down":
                downs[key] = path
                continue
            if key in migrations:
                raise MigrationError(f"{path}: version {match['version']} is used twice in app {app_dir.name}")
            migrations[key] = Migration(app=app_dir.name, version=match["version"], name=match["name"], up=MigrationFile(path))
    for key, path in downs.items():
        if key not in migrations:
            raise MigrationError(f"{path}: down file without its up file")
        migrations[key].down = MigrationFile(path)
    for migration in migrations.values():
        for line in migration.up.header_lines():
            if match := DEPENDS_ON_MARKER.match(line):
                migration.depends_on.extend(_parse_refs(migration.up.path, match["refs"]))
    return order(list(migrations.values()))


def order(migrations: list[Migration]) -> list[Migration]:
    """Dependency order: each app's migrations by version, cross-app `depends-on` respected.

    Among the migrations that are ready, the smallest (version, app) goes first, so the order is
    stable and interleaves apps the way their numbers suggest.
    """
    by_key = {m.key: m for m in migrations}
    versions_by_app: dict[str, list[str]] = {}
    for m in migrations:
        versions_by_app.setdefault(m.app, []).append(m.version)
    for versions in versions_by_app.values():
        versions.sort()
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for m in migrations:
        versions = versions_by_app[m.app]
        index = bisect.bisect_left(versions, m.version)
        wanted = set(m.depends_on) | ({(m.app, versions[index - 1])} if index else set())
        for ref in m.depends_on:
            if ref not in by_key:
                raise MigrationError(f"{m.up.path}: depends on {ref[0]}/{ref[1]}, which does not exist")
        deps[m.key] = wanted
    # Kahn's algorithm with a heap on (version, app): the same order as picking the smallest ready
    # migration each time, without rescanning every migration at each step.
    dependents: dict[tuple[str, str], list[tuple[str, str]]] = {k: [] for k in deps}
    waiting = {k: len(d) for k, d in deps.items()}
    for key, wanted in deps.items():
        for dep in wanted:
            dependents[dep].append(key)
    ready = [(k[1], k[0]) for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[Migration] = []
    while ready:
        version, app = heapq.heappop(ready)
        ordered.append(by_key[(app, version)])
        for later in dependents[(app, version)]:
            waiting[later] -= 1
            if waiting[later] == 0:
                heapq.heappush(ready, (later[1], later[0]))
    if len(ordered) < len(migrations):
        done = {m.key for m in ordered}
        cycle = sorted(f"{a}/{v}" for a, v in deps if (a, v) not in done)
        raise MigrationError(f"dependency cycle among migrations: {', '.join(cycle)}")
    return ordered
