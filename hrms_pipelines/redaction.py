"""The service's own secrets never leave in a message: their values are replaced by `<secret NAME>`.

`redact_secrets(text)` replaces, wherever they appear, the values of the deployment's secret
settings in this process's environment:

- every duty's password and URL (`HRMS_<DUTY>_PASSWORD`, `HRMS_<DUTY>_URL`), `HRMS_DATABASE_URL`,
  `DAGSTER_PG_URL`, libpq's `PGPASSWORD`, and any other `HRMS_*_PASSWORD`, `HRMS_*_URL`,
  `HRMS_*_TOKEN`, `HRMS_*_SECRET` variable (`HRMS_DAGSTER_URL`, the UI's address that alerts link
  to, is not a secret);
- the alert settings: the webhook URL (`HRMS_ALERT_WEBHOOK_URL`) and the SMTP host, user and
  password (`HRMS_ALERT_SMTP_*`);
- for a URL: the whole URL and its password; for an http(s) URL also its path and query (a chat
  webhook's token is its path), each in raw and percent-decoded form;
- the content of the backup key files (`HRMS_BACKUP_IDENTITY_FILE`, `HRMS_BACKUP_SIGNING_KEY_FILE`,
  or the generated ones under the keys folder): each key line.

`privacy.scrub_text` calls it first, so the error boundary (errors.py), the run logs' filter and
the alerts (alerts.py) all redact. Values shorter than MIN_SECRET_LENGTH are left alone (replacing
every "abc" of a message would garble it and protect nothing).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

MIN_SECRET_LENGTH = 6
_SECRET_NAME = re.compile(r"HRMS_[A-Z0-9_]*_(PASSWORD|URL|TOKEN|SECRET)")
_NOT_SECRET = frozenset({"HRMS_DAGSTER_URL"})
_ALSO_SECRET = ("HRMS_DATABASE_URL", "DAGSTER_PG_URL", "PGPASSWORD", "HRMS_ALERT_WEBHOOK_URL",
                "HRMS_ALERT_SMTP_HOST", "HRMS_ALERT_SMTP_USER", "HRMS_ALERT_SMTP_PASSWORD")
_KEY_FILE_ENVS = ("HRMS_BACKUP_IDENTITY_FILE", "HRMS_BACKUP_SIGNING_KEY_FILE")
_DEFAULT_KEY_FILES = ("backup-identity.txt", "backup-signing.key")

_key_cache: dict[Path, tuple[tuple[int, int], list[str]]] = {}


def secret_names(environ: dict[str, str] | None = None) -> list[str]:
    """The environment variables whose values are secrets, of those that are set."""
    env = os.environ if environ is None else environ
    names = {n for n in env if _SECRET_NAME.fullmatch(n) and n not in _NOT_SECRET}
    names.update(n for n in _ALSO_SECRET if n in env)
    return sorted(names)


def _url_parts(value: str) -> list[str]:
    """A URL's secret parts: password, then path+query (a webhook's token), raw and decoded."""
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return []
    found = []
    if password:
        found += [password, unquote(password)]
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.scheme.startswith("http") and len(tail.strip("/")) >= MIN_SECRET_LENGTH:  # a DSN's path is a database name
        found += [tail, unquote(tail), tail.strip("/")]
        found += [part for part in re.split(r"[/?&=]", tail) if len(part) >= 16]  # a token on its own
    return found


def _key_lines(path: Path) -> list[str]:
    """The key lines of a key file (cached by modification time and size); nothing when unreadable."""
    try:
        st = path.stat()
    except OSError:
        return []
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _key_cache.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        text = path.read_bytes()[: 1 << 20].decode("ascii", "replace")
    except OSError:
        return []
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    _key_cache[path] = (stamp, lines)
    return lines


def _key_files() -> list[Path]:
    paths = [Path(os.environ[e]).expanduser() for e in _KEY_FILE_ENVS if os.environ.get(e, "").strip()]
    if not paths:
        from hrms_pipelines import settings

        paths = [settings.keys_dir() / name for name in _DEFAULT_KEY_FILES]
    return paths


def secret_values() -> list[tuple[str, str]]:
    """(value, the variable it came from) of every secret, longest first."""
    pairs: dict[str, str] = {}
    for name in secret_names():
        value = os.environ.get(name, "")
        for candidate in [value, value.strip(), *_url_parts(value.strip())]:
            if len(candidate) >= MIN_SECRET_LENGTH:
                pairs.setdefault(candidate, name)
    for path in _key_files():
        for line in _key_lines(path):
            if len(line) >= MIN_SECRET_LENGTH:
                pairs.setdefault(line, "backup key")
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def redact_secrets(text: str) -> str:
    """`text` with every secret value in it replaced by `<secret NAME>`."""
    if not text:
        return text
    for value, name in secret_values():
        if value in text:
            text = text.replace(value, f"<secret {name}>")
    return text
