"""Keys, signatures and encryption of backups.

Encryption: every table file is gzip inside age (X25519 recipients, ChaCha20-Poly1305 in 64 KiB
authenticated chunks) through pyrage's streaming `encrypt_io` / `decrypt_io`: memory stays flat
whatever the table size. Writing a backup needs only the public recipient(s); reading one needs the
private identity. By hand: `age -d -i identity.txt FILE.csv.gz.age | gunzip`.

Signatures: HMAC-SHA256 (Python's `hmac`) over the exact bytes of manifest.json, stored in
manifest.sig with the key's id (a hash of the key, never the key). The manifest holds the sha256 of
every encrypted file, so the signature covers all of the backup. A symmetric key is enough here:
the same service writes and restores backups, and the key lives outside the backup root.

Where the keys are (deployment configuration, read from the environment, never run config):

| variable                        | holds                                                         |
|---------------------------------|---------------------------------------------------------------|
| HRMS_BACKUP_RECIPIENT           | age public key(s) `age1…` to encrypt to (comma-separated)      |
| HRMS_BACKUP_RECIPIENTS_FILE     | or a recipients file, one `age1…` a line (age's `-R` format)   |
| HRMS_BACKUP_IDENTITY_FILE       | the private key(s) for restores (age-keygen's output, 0600)   |
| HRMS_BACKUP_SIGNING_KEY_FILE    | the signing key: 64+ hex digits a line, 0600; the first line signs, later lines (older keys) still verify |

With none of them set (the embedded default), the service generates an identity, its recipient and
a signing key once, 0600, under the keys folder (HRMS_KEYS_DIR, default .hrms/keys). With any of
them set, nothing is generated: a key that is needed and not configured is an error naming the
variable. Key files must not be readable or writable by others; no key ever goes into a backup folder,
a log or metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage
from pyrage import x25519

from hrms_pipelines import settings
from hrms_pipelines.backups.manifest import BackupError

RECIPIENT_ENV = "HRMS_BACKUP_RECIPIENT"
RECIPIENTS_FILE_ENV = "HRMS_BACKUP_RECIPIENTS_FILE"
IDENTITY_FILE_ENV = "HRMS_BACKUP_IDENTITY_FILE"
SIGNING_KEY_FILE_ENV = "HRMS_BACKUP_SIGNING_KEY_FILE"
KEY_ENVS = (RECIPIENT_ENV, RECIPIENTS_FILE_ENV, IDENTITY_FILE_ENV, SIGNING_KEY_FILE_ENV)

DEFAULT_IDENTITY = "backup-identity.txt"
DEFAULT_RECIPIENTS = "backup-recipients.txt"
DEFAULT_SIGNING_KEY = "backup-signing.key"

SIGNATURE_ALGORITHM = "HMAC-SHA256"
_SIGNED_CONTEXT = b"hrms_pipelines backup manifest v2\n"
_KEY_ID_CONTEXT = b"hrms_pipelines backup signing key id\n"
CHUNK = 1 << 20
COMPRESS_LEVEL = 3  # zlib level 3 compresses these CSVs almost as well as 6 at about twice the speed


class BackupKeyError(BackupError):
    """A key is missing, unreadable, malformed or kept unsafely; the message names the variable."""


# --------------------------------------------------------------------------------------------------
# Key files


def _configured() -> bool:
    return any(os.environ.get(name) for name in KEY_ENVS)


def _key_path(env: str, default: str) -> tuple[Path | None, str]:
    """The file `env` names, else (embedded default only) the default under the keys folder."""
    value = (os.environ.get(env) or "").strip()
    if value:
        return Path(value).expanduser(), f"{env}={value}"
    if _configured():
        return None, env
    return settings.keys_dir() / default, f"{settings.keys_dir() / default} (the embedded default; set {env} to move it)"


def _read_secret_file(path: Path, source: str) -> str:
    """A key file's text: a regular file (no symlink), no access for others, no group write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BackupKeyError(f"key file {path} ({source}) does not exist") from None
    except OSError as exc:
        raise BackupKeyError(f"key file {path} ({source}) cannot be opened safely: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BackupKeyError(f"key file {path} ({source}) is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o027:
            raise BackupKeyError(f"key file {path} ({source}) is open to others (mode {mode:04o}); a private key must "
                            f"be readable by the service only: chmod 600 {path}")
        if st.st_uid not in (os.geteuid(), 0):
            raise BackupKeyError(f"key file {path} ({source}) belongs to uid {st.st_uid}, not to the service's user")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read(1 << 20)
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise BackupKeyError(f"key file {path} ({source}) is not text") from None


def _key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _create_key_file(path: Path, text: str) -> None:
    """Write a new key file whole, 0600, or leave the one another process wrote first."""
    settings.private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and never replaces an existing key
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


def _ensure_default_keys() -> None:
    """The embedded default: an identity (with its recipient beside it) and a signing key, made once."""
    if _configured():
        return
    keys = settings.keys_dir()
    if not (keys / DEFAULT_IDENTITY).exists():
        identity = x25519.Identity.generate()
        _create_key_file(keys / DEFAULT_IDENTITY,
                         f"# hrms_pipelines backup identity (age X25519), generated by the service\n"
                         f"# public key: {identity.to_public()}\n{identity}\n")
    if not (keys / DEFAULT_RECIPIENTS).exists():
        identities = _parse_identities(_read_secret_file(keys / DEFAULT_IDENTITY, "embedded default"),
                                       keys / DEFAULT_IDENTITY)
        _create_key_file(keys / DEFAULT_RECIPIENTS,
                         "# hrms_pipelines backup recipients (age -R format)\n"
                         + "".join(f"{i.to_public()}\n" for i in identities))
    if not (keys / DEFAULT_SIGNING_KEY).exists():
        _create_key_file(keys / DEFAULT_SIGNING_KEY,
                         f"# hrms_pipelines backup signing key (HMAC-SHA256), generated by the service\n"
                         f"{secrets.token_hex(32)}\n")


def _parse_identities(text: str, path: Path) -> list[x25519.Identity]:
    identities = []
    for number, line in enumerate(_key_lines(text), 1):
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise BackupKeyError(f"identity file {path}: key {number} is not an age X25519 identity "
                            "(AGE-SECRET-KEY-1…, as age-keygen writes)") from None
    if not identities:
        raise BackupKeyError(f"identity file {path} holds no identity (AGE-SECRET-KEY-1…)")
    return identities


def _parse_recipients(values: list[str], where: str) -> list[x25519.Recipient]:
    recipients = []
    for value in values:
        try:
            recipients.append(x25519.Recipient.from_str(value))
        except pyrage.RecipientError:
            raise BackupKeyError(f"{where}: {settings.excerpt(value, 20)} is not an age X25519 recipient (age1…)") from None
    if not recipients:
        raise BackupKeyError(f"{where} holds no recipient (age1…)")
    return recipients


def recipients() -> list[x25519.Recipient]:
    """Who backups are encrypted to: public keys only (what writing a backup needs)."""
    inline = (os.environ.get(RECIPIENT_ENV) or "").strip()
    if inline:
        return _parse_recipients([v for v in inline.replace(",", " ").split() if v], RECIPIENT_ENV)
    listed = (os.environ.get(RECIPIENTS_FILE_ENV) or "").strip()
    if listed:
        path = Path(listed).expanduser()
        try:
            text = path.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupKeyError(f"recipients file {path} ({RECIPIENTS_FILE_ENV}) cannot be read: {exc}") from None
        return _parse_recipients(_key_lines(text), f"recipients file {path} ({RECIPIENTS_FILE_ENV})")
    if os.environ.get(IDENTITY_FILE_ENV):
        return [i.to_public() for i in identities()]
    if _configured():
        raise BackupKeyError(f"no backup recipient configured: set {RECIPIENT_ENV} (age1…) or {RECIPIENTS_FILE_ENV}")
    _ensure_default_keys()
    path = settings.keys_dir() / DEFAULT_RECIPIENTS
    return _parse_recipients(_key_lines(path.read_text("ascii")), f"recipients file {path}")


def identities() -> list[x25519.Identity]:
    """The private keys a restore decrypts with."""
    _ensure_default_keys()
    path, source = _key_path(IDENTITY_FILE_ENV, DEFAULT_IDENTITY)
    if path is None:
        raise BackupKeyError(f"no backup identity configured: a restore needs the private key that backups are "
                        f"encrypted to; set {IDENTITY_FILE_ENV} to an age identity file (0600)")
    return _parse_identities(_read_secret_file(path, source), path)


def _signing_keys() -> tuple[list[bytes], str]:
    _ensure_default_keys()
    path, source = _key_path(SIGNING_KEY_FILE_ENV, DEFAULT_SIGNING_KEY)
    if path is None:
        raise BackupKeyError(f"no backup signing key configured: set {SIGNING_KEY_FILE_ENV} to a file holding 64 hex "
                        "digits (e.g. `openssl rand -hex 32`), 0600, outside the backup folder")
    keys = []
    for number, line in enumerate(_key_lines(_read_secret_file(path, source)), 1):
        try:
            key = bytes.fromhex(line)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise BackupKeyError(f"signing key file {path} ({source}): key {number} is not 64 or more hex digits")
        keys.append(key)
    if not keys:
        raise BackupKeyError(f"signing key file {path} ({source}) holds no key")
    root = settings.backup_dir()
    if path.resolve().is_relative_to(root):
        raise BackupKeyError(f"signing key file {path} is inside the backup folder {root}: keep keys apart from backups")
    return keys, source


def key_id(key: bytes) -> str:
    """A public name for a key (a hash of it), to tell which key signed a backup."""
    return hashlib.sha256(_KEY_ID_CONTEXT + key).hexdigest()[:16]


def _mac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, _SIGNED_CONTEXT + manifest, hashlib.sha256).hexdigest()


def sign(manifest: bytes) -> bytes:
    """manifest.sig for these manifest bytes, signed with the current (first) key."""
    keys, _ = _signing_keys()
    return json.dumps({"algorithm": SIGNATURE_ALGORITHM, "key_id": key_id(keys[0]),
                       "signature": _mac(keys[0], manifest)}).encode() + b"\n"


def verify(manifest: bytes, signature: bytes, backup_id: str, where: Path) -> None:
    """BackupError naming why, unless `signature` is this service's signature of `manifest`."""
    keys, source = _signing_keys()
    try:
        data = json.loads(signature)
        algorithm, signer, mac = data["algorithm"], data["key_id"], data["signature"]
        if not all(isinstance(v, str) for v in (algorithm, signer, mac)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"backup {backup_id}: its signature {where} is malformed; refusing to restore") from None
    if algorithm != SIGNATURE_ALGORITHM:
        raise BackupError(f"backup {backup_id}: signed with {settings.excerpt(algorithm)}, not {SIGNATURE_ALGORITHM}; "
                          "refusing to restore")
    ours = {key_id(k): k for k in keys}
    if signer not in ours:
        raise BackupError(
            f"backup {backup_id} is signed by another key (key id {settings.excerpt(signer, 16)}; this service's "
            f"key(s): {', '.join(ours)} from {source}): it was not written by this deployment, or its key was "
            "replaced. Refusing to restore; to accept an old key, keep it on a later line of the signing key file."
        )
    if not hmac.compare_digest(_mac(ours[signer], manifest), mac):
        raise BackupError(
            f"backup {backup_id}: the signature in {where} does not match its manifest (key id {signer}): "
            "manifest.json was changed after the backup was written. Refusing to restore."
        )


# --------------------------------------------------------------------------------------------------
# Streaming: COPY -> gzip -> age -> file, and file -> age -> gunzip -> COPY


class _Stash:
    """An exception raised inside a callback pyrage made is kept here and raised again afterwards
    (pyrage turns it into a string)."""

    error: BaseException | None = None

    def keep(self, exc: BaseException) -> BaseException:
        if self.error is None:
            self.error = exc
        return exc


class GzipSource(_Stash):
    """A readable stream of the gzip of what `chunks` yields (pulled as pyrage reads)."""

    def __init__(self, chunks, level: int = COMPRESS_LEVEL) -> None:
        self._chunks = iter(chunks)
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip header and trailer, mtime 0
        self._out = bytearray()
        self._done = False
        self.plain_bytes = 0

    def _fill(self, wanted: int) -> None:
        pending = bytearray()
        while len(self._out) < wanted and not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._out += self._zip.compress(bytes(pending)) + self._zip.flush()
                self._done = True
                pending.clear()
                break
            pending += chunk
            self.plain_bytes += len(chunk)
            if len(pending) >= CHUNK:
                self._out += self._zip.compress(bytes(pending))
                pending.clear()
        if pending:
            self._out += self._zip.compress(bytes(pending))

    def read(self, size: int = -1) -> bytes:
        try:
            size = size if size and size > 0 else CHUNK
            if len(self._out) < size:
                self._fill(size)
            data = bytes(self._out[:size])
            del self._out[:size]
            return data
        except BaseException as exc:
            raise self.keep(exc)


class CountingWriter(_Stash):
    """Writes to `raw`, hashing and counting (sha256 and size of the file as stored)."""

    def __init__(self, raw: BinaryIO, progress) -> None:
        self.raw, self.sha256, self.bytes, self.progress = raw, hashlib.sha256(), 0, progress

    def write(self, data: bytes) -> int:
        try:
            written = self.raw.write(data)
        except BaseException as exc:
            raise self.keep(exc)
        self.sha256.update(data)
        self.bytes += len(data)
        self.progress.written += len(data)
        return written

    def flush(self) -> None:
        try:
            self.raw.flush()
        except BaseException as exc:
            raise self.keep(exc)


def encrypt_stream(source: GzipSource, writer: CountingWriter, to: list[x25519.Recipient]) -> None:
    """Stream `source` through age into `writer`; a failure on either side is raised as itself."""
    try:
        pyrage.encrypt_io(source, writer, to)
    except pyrage.EncryptError as exc:
        raise (source.error or writer.error or BackupError(f"encryption failed: {exc}")) from None


class _KeyWorks(Exception):
    pass


class _FirstChunk(_Stash):
    def write(self, data: bytes) -> int:
        raise self.keep(_KeyWorks())

    def flush(self) -> None:
        pass


def check_can_decrypt(handle: BinaryIO, keys: list[x25519.Identity], path: Path, backup_id: str) -> None:
    """Decrypt the header and the first chunk of one file (64 KiB at most): BackupError when the keys
    cannot, before anything is staged."""
    sink = _FirstChunk()
    try:
        pyrage.decrypt_io(handle, sink, keys)
    except _KeyWorks:
        return
    except pyrage.DecryptError as exc:
        if isinstance(sink.error, _KeyWorks):
            return
        raise BackupError(
            f"backup {backup_id}: {path} cannot be decrypted with the configured identity "
            f"({IDENTITY_FILE_ENV} or the embedded default): {exc}. Its recipient(s) are in the manifest; restore "
            "needs the matching private key. Nothing was changed."
        ) from None


def decrypt_stream(handle, sink, keys: list[x25519.Identity]) -> None:
    """Stream `handle` through age into `sink`; a failure in `handle` or `sink` is raised as itself."""
    try:
        pyrage.decrypt_io(handle, sink, keys)
    except Exception as exc:
        kept = getattr(sink, "error", None) or getattr(handle, "error", None)
        if kept is not None:
            raise kept from None
        if isinstance(exc, pyrage.DecryptError):
            raise BackupError(f"decryption failed: {exc}") from None
        raise


@dataclass
class Progress:
    """Bytes written to the backup folder so far (for a disk-full message)."""

    written: int = 0
