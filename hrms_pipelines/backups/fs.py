"""Every file operation on the backup root, in one module (pathlib paths, POSIX semantics).

Trust: a restore reads only folders and files that this service's OS user owns and that no one else
may write (not group- or world-writable), never through a symlink. Publication: a backup is written
in a hidden `.pending-<id>` folder and renamed to `<id>` when complete, so a folder named like a
backup is always a whole one. Locks: `flock` on a backup folder; a restore holds it shared while it
reads, a writer holds it exclusive while it writes, and pruning takes it exclusive without waiting
(a folder someone holds is never removed).

For object storage in a multi-machine deployment, this is the module to port (universal_pathlib):
the guarantees then become the store's (write-once keys, object locks, bucket policies).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from hrms_pipelines.backups.manifest import BackupError

PENDING_PREFIX = ".pending-"
REMOVING_PREFIX = ".removing-"
# errno values that mean "the disk (or a quota, or a size limit) under the backup folder is full"
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _service_user() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def untrusted_reason(st: os.stat_result, what: str) -> str | None:
    """Why a folder or file with these stat results cannot be trusted, or None."""
    if st.st_uid != os.geteuid():
        return (f"{what} is owned by uid {st.st_uid}, not by the service's user {_service_user()}: "
                "only backups this service wrote are restored")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        who = " and ".join(w for bit, w in ((0o020, "its group"), (0o002, "everyone")) if mode & bit)
        return (f"{what} is writable by {who} (mode {mode:04o}): anyone who can write there could plant a backup; "
                f"make it private (chmod go-w, or 0700) and check what is inside")
    return None


def check_trusted_dir(path: Path, what: str) -> None:
    """`path` is a real folder (not a symlink), owned by this service's user, not group/world-writable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BackupError(f"{what} {path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise BackupError(f"{what} {path} is {kind}; refusing to use it")
    if reason := untrusted_reason(st, f"{what} {path}"):
        raise BackupError(reason)


def make_root(root: Path) -> None:
    """The backup root, created 0700 when missing; an existing one must be trusted."""
    if not os.path.lexists(root):
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
    check_trusted_dir(root, "the backup root")


def make_private_dir(path: Path) -> bool:
    """Create `path` (0700); False when something by that name exists already."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    os.chmod(path, 0o700)  # whatever the umask
    return True


def is_dir(path: Path) -> bool:
    """A real folder, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def exists(path: Path) -> bool:
    return os.path.lexists(path)


def list_dirs(root: Path) -> list[Path]:
    if not is_dir(root):
        return []
    return sorted(p for p in root.iterdir() if is_dir(p))


@contextmanager
def create(path: Path) -> Iterator[BinaryIO]:
    """A new file, 0600, never following a symlink and never replacing anything; fsynced on close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def open_trusted(path: Path) -> Iterator[BinaryIO]:
    """An existing regular file for reading, owned by the service and writable by no one else; a
    symlink (to anything) is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackupError(f"{path} is missing") from None
    except OSError as exc:  # ELOOP: the name is a symlink
        raise BackupError(f"{path} cannot be opened safely ({exc.strerror}); a backup never holds symlinks") from None
    st = os.fstat(fd)
    problem = None if stat.S_ISREG(st.st_mode) else f"{path} is not a regular file"
    problem = problem or untrusted_reason(st, str(path))
    if problem:
        os.close(fd)
        raise BackupError(problem)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        yield handle


def fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_new(path: Path, data: bytes) -> None:
    with create(path) as handle:
        handle.write(data)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def size_of(path: Path) -> int:
    total = 0
    for child in path.iterdir() if is_dir(path) else []:
        try:
            total += os.lstat(child).st_size
        except FileNotFoundError:
            pass
    return total


# --------------------------------------------------------------------------------------------------
# Locks on backup folders (fcntl.flock: released by the kernel when the holder dies, kill -9 included)


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


@contextmanager
def locked(path: Path, *, shared: bool) -> Iterator[None]:
    """Hold `path`'s lock (waiting for it) and make sure the folder is still the one at `path`."""
    try:
        fd = _open_dir(path)
    except FileNotFoundError:
        raise BackupError(f"{path} disappeared (removed by pruning?)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise BackupError(f"{path} was removed or replaced while waiting for it")
        yield
    finally:
        os.close(fd)  # releases the lock


def try_lock(path: Path) -> int | None:
    """The exclusive lock of `path` without waiting: an open descriptor (close it to release), or
    None when someone holds it (a restore reading it, a writer writing it) or it is gone."""
    try:
        fd = _open_dir(path)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_locked(path: Path, fd: int) -> None:
    """Remove the folder whose lock `fd` holds: renamed to a hidden name first (so it is never seen
    half-removed under its backup id), then deleted, then the lock released."""
    try:
        doomed = path.with_name(REMOVING_PREFIX + path.name.removeprefix(PENDING_PREFIX))
        os.rename(path, doomed)
        fsync_dir(path.parent)
        remove_tree(doomed)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Writing a backup: reserve a pending folder, publish it whole


def reserve(root: Path, base: str) -> tuple[str, Path]:
    """A free backup id from `base` (a suffix when taken) and its new, empty pending folder."""
    for attempt in range(1, 1000):
        backup_id = base if attempt == 1 else f"{base}-{attempt}"
        pending = root / f"{PENDING_PREFIX}{backup_id}"
        if exists(root / backup_id):
            continue
        if make_private_dir(pending):
            if exists(root / backup_id):  # published by someone else meanwhile
                os.rmdir(pending)
                continue
            return backup_id, pending
    raise BackupError(f"cannot create a backup folder under {root}: {base} and its suffixes are taken")


def publish(pending: Path, backup_id: str) -> Path:
    """Rename a complete pending folder to its backup id (atomic), and make the rename durable."""
    final = pending.with_name(backup_id)
    if exists(final):
        raise BackupError(f"cannot publish {pending}: {final} exists")
    os.rename(pending, final)
    fsync_dir(final.parent)
    return final


def pending_dirs(root: Path) -> list[Path]:
    """Folders a writer started and did not publish (or is still writing), and half-removed ones."""
    if not is_dir(root):
        return []
    return sorted(p for p in root.iterdir()
                  if p.name.startswith((PENDING_PREFIX, REMOVING_PREFIX)) and is_dir(p))
