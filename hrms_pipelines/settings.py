"""Deployment configuration: where things live, and the environment variables that move them.

Everything here is read from the environment by code, never from run config: whoever can launch a
run (the open-source webserver has no login) must not choose which folder, file or database the
service trusts. Every path has a default inside the project (so a fresh clone works).

Names a run may still choose (an import file, a log file, a backup id) are plain names inside one
of these roots: `plain_name` checks them and `open_regular_file` opens them without following a
symlink and only when they are regular files.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

PACKAGE_DIR = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    candidate = PACKAGE_DIR.parent
    if (candidate / "sql" / "migrations").is_dir():
        return candidate
    return Path.cwd()


PROJECT_ROOT = _project_root()

# Environment variable names, in one place.
DATABASE_URL_ENV = "HRMS_DATABASE_URL"
DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"
HOME_ENV = "HRMS_HOME"
MIGRATIONS_DIR_ENV = "HRMS_MIGRATIONS_DIR"
IMPORT_DIR_ENV = "HRMS_IMPORT_DIR"
BACKUP_DIR_ENV = "HRMS_BACKUP_DIR"
LOGS_DIR_ENV = "HRMS_LOGS_DIR"
REJECTS_DIR_ENV = "HRMS_REJECTS_DIR"
KEYS_DIR_ENV = "HRMS_KEYS_DIR"
ENVIRONMENT_ENV = "HRMS_ENV"
IMPORT_CREATE_USERS_ENV = "HRMS_IMPORT_CREATE_USERS"
AUDIT_DETACH_AFTER_MONTHS_ENV = "HRMS_AUDIT_DETACH_AFTER_MONTHS"
IMPORT_LOCK_WAIT_ENV = "HRMS_IMPORT_LOCK_WAIT"

# The PostgreSQL schema that holds every HR table, and the one that holds the migration ledger.
HR_SCHEMA = "hrms"
META_SCHEMA = "hrms_meta"
# The login role of imports (and seeds and backfills): SELECT, INSERT, UPDATE on the HR tables,
# never DELETE or TRUNCATE. The other duties' roles are in hrms_pipelines.roles.
IMPORT_ROLE = "hrms_importer"


def hrms_home() -> Path:
    """Local state: the embedded PostgreSQL's data, keys, default backups. Git-ignored."""
    return Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".hrms").resolve()


def migrations_dir() -> Path:
    return Path(os.environ.get(MIGRATIONS_DIR_ENV) or PROJECT_ROOT / "sql" / "migrations").resolve()


def import_dir() -> Path:
    return Path(os.environ.get(IMPORT_DIR_ENV) or PROJECT_ROOT / "seeds" / "sample").resolve()


def backup_dir() -> Path:
    return Path(os.environ.get(BACKUP_DIR_ENV) or hrms_home() / "backups").resolve()


def logs_dir() -> Path:
    """Where an import's optional log file goes (a plain name chosen in run config)."""
    return Path(os.environ.get(LOGS_DIR_ENV) or hrms_home() / "logs").resolve()


def rejects_dir() -> Path:
    """Reject reports: the rows an import refused, for the analyst to fix (they hold personal data)."""
    return Path(os.environ.get(REJECTS_DIR_ENV) or hrms_home() / "rejects").resolve()


def keys_dir() -> Path:
    """Keys the service generates for itself in the embedded default (backup signing, encryption)."""
    return Path(os.environ.get(KEYS_DIR_ENV) or hrms_home() / "keys").resolve()


def io_dir() -> Path:
    """Op outputs passed between the steps of a run (Dagster's IO manager): no run config moves it."""
    return hrms_home() / "io"


def environment() -> str:
    """The deployment's environment: development, staging or production."""
    return (os.environ.get(ENVIRONMENT_ENV) or "development").strip().lower()


def audit_detach_after_months() -> int:
    """Retention of the audit log's monthly partitions: detach (never drop) those that ended more than
    this many months ago. 0 (the default) keeps every month attached."""
    raw = (os.environ.get(AUDIT_DETACH_AFTER_MONTHS_ENV) or "0").strip()
    if not raw.isdigit():
        raise ValueError(f"{AUDIT_DETACH_AFTER_MONTHS_ENV}={raw!r}: expected a whole number of months (0 = off)")
    return int(raw)


DEFAULT_IMPORT_LOCK_WAIT = "5min"


def import_lock_wait():
    """How long an import stage, an import dry run or a seed waits for another one to finish (the
    `imports` / `seeds` advisory lock) before it fails: e.g. 0, 30s, 5min. Runs launched through
    Dagster's queue never meet one (the hrms_writer pool); `dagster job execute` runs can."""
    from hrms_pipelines.locks import LockWait

    return LockWait((os.environ.get(IMPORT_LOCK_WAIT_ENV) or DEFAULT_IMPORT_LOCK_WAIT).strip(), IMPORT_LOCK_WAIT_ENV)


# Every op or asset that writes to the HR database is in this Dagster concurrency pool; dagster.yaml
# limits it to one run at a time, so a second writer waits in the queue instead of failing.
WRITER_POOL = "hrms_writer"


# --------------------------------------------------------------------------------------------------
# Plain names inside a configured root

MAX_NAME_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeName(ValueError):
    """A name from run config that is not a plain file name inside its configured folder."""


def excerpt(value: object, limit: int = 40) -> str:
    """A short, escaped excerpt of untrusted text, safe to show in a message."""
    text = str(value)
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return repr(shown + ("…" if len(text) > limit else ""))


# The characters a name from run config may hold: letters and digits of any script, space, and
# . _ - + ( ) , # & ' (`#` picks an Excel sheet: users.xlsx#Staff). Anything else (`/`, `:`, `=`, `@`,
# `%`, quotes, `$`...) makes the name refused, and then it is never shown: only its length and a
# short hash are (`shown`). A URL, a DSN, a key or a token pasted into a name field cannot pass.
_PLAIN_CHARS = re.compile(r"[^\W_]|[ ._+(),#&'-]")


def _has_plain_chars(text: str) -> bool:
    return all(_PLAIN_CHARS.fullmatch(char) for char in text)


def fingerprint(value: object) -> str:
    """A value that may not be shown, as its length and a short hash: `<23 characters, sha256 1a2b3c4d>`."""
    import hashlib

    text = value if isinstance(value, str) else repr(value)
    return f"<{len(text)} characters, sha256 {hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:8]}>"


def shown(value: object, *, quoted: bool = True) -> str:
    """A value from run config as a message may show it: as it is (quoted unless `quoted=False`) when it
    is a plain name (allow-listed characters, at most MAX_NAME_LENGTH), else only its length and a
    short hash (`fingerprint`)."""
    if isinstance(value, str) and value and len(value) <= MAX_NAME_LENGTH and _has_plain_chars(value):
        return repr(value) if quoted else value
    return fingerprint(value)


def plain_name(name: str, what: str) -> str:
    """`name` when it is a plain file name (allow-listed characters, no folder, not hidden); else
    UnsafeName, whose message shows the name only by its length and hash."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeName(f"{what}: a file name is needed")
    problem = None
    if "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif name in (".", "..") or name.startswith("."):
        problem = "starts with '.' (hidden files and '..' are not allowed)"
    elif _CONTROL.search(name):
        problem = "holds control characters"
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} characters"
    elif not _has_plain_chars(name):
        problem = "holds characters other than letters, digits, space and . _ - + ( ) , # & '"
    if problem:
        raise UnsafeName(f"{what} {fingerprint(name)} {problem}: give a plain file name inside the configured "
                         "folder, not a path")
    return name


def open_regular_file(root: Path, name: str, what: str) -> BinaryIO:
    """Open `root/name` for reading: a plain name, never through a symlink, only a regular file.

    FIFOs and devices are refused without blocking on them (O_NONBLOCK until the type is known).
    Raises UnsafeName for a bad name, FileNotFoundError when nothing has that name, and
    PermissionError (with the reason) for anything that is not a regular file.
    """
    plain_name(name, what)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: the name is a symlink
                raise PermissionError(f"{what} {shown(name)} in {root} is a symbolic link; "
                                      "only regular files are read") from None
            raise
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise PermissionError(f"{what} {shown(name)} in {root} is {kind}; only regular files are read")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb")


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a folder only this user can enter: 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def create_private_file(path: Path, *, append: bool = False) -> BinaryIO:
    """A file only this user can read (0600), never through a symlink; created when missing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink planted where the file goes
            raise PermissionError(f"{path} is a symbolic link; it is never followed") from None
        if exc.errno == 6:  # ENXIO: a FIFO nobody reads (O_NONBLOCK: we never wait for one)
            raise PermissionError(f"{path} is a named pipe (FIFO), not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PermissionError(f"{path} is not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if not append:
        os.ftruncate(fd, 0)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab" if append else "wb")
