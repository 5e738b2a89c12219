"""Install into this virtual environment the uv that uv.lock pins, hash-checked, unless it is there.

Run with the virtual environment's own Python (`.venv/bin/python tools/bootstrap_uv.py`), before
any package of the project is installed: standard library only. uv.lock is the one place uv's
version lives (the `dev` dependency group of pyproject.toml); its wheels' sha256 come from there too,
so pip installs exactly the locked uv (`--require-hashes`) from the package index.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def locked_uv(lock: Path = ROOT / "uv.lock") -> tuple[str, list[str]]:
    """(version, sha256 hashes of every wheel and the sdist) of uv in the lock."""
    packages = [p for p in tomllib.loads(lock.read_text())["package"] if p["name"] == "uv"]
    if len(packages) != 1:
        sys.exit(f"{lock}: expected exactly one locked uv, found {len(packages)}; run `make lock`")
    package = packages[0]
    files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
    return package["version"], [f["hash"] for f in files]


def installed_uv(bin_dir: Path) -> str | None:
    uv = bin_dir / "uv"
    if not uv.exists():
        return None
    out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=False).stdout.split()
    return out[1] if len(out) >= 2 else None


def main() -> int:
    if sys.prefix == sys.base_prefix:
        sys.exit("run this with the virtual environment's Python (.venv/bin/python), not the system one")
    version, hashes = locked_uv()
    bin_dir = Path(sys.executable).parent
    if installed_uv(bin_dir) == version:
        return 0
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False).returncode:
        subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "uv.txt"
        requirements.write_text(f"uv=={version} " + " ".join(f"--hash={h}" for h in hashes) + "\n")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes", "--only-binary", ":all:",
                        "-r", str(requirements)], check=True, env=env)
    print(f"uv {version} installed in {bin_dir} (hash-checked against uv.lock)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
