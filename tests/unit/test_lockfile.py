"""uv.lock, and the environment installed from it (`make install`: `uv sync --locked --extra dev`).

- The lock is up to date with pyproject.toml (`uv lock --check --offline`: no network).
- Every package it takes from a registry is pinned with hashes.
- The environment running these tests holds exactly the lock's dev install: the same
  distributions at the same versions, nothing more and nothing less (the acceptance line
  "pip freeze equals the lock", read with importlib.metadata). Two aside: the project
  itself, and pip, the venv's own installer (``python -m venv`` seeds it, ``uv sync``
  leaves it, and ``pip freeze`` does not list it either).
- uv itself is bootstrapped from its own entry in uv.lock, hash-checked, by the same
  snippet in the Makefile and in deploy/Dockerfile.

uv is a locked dev dependency, so it is in any environment `make install` built; these
tests fail (not skip) without it, since such an environment did not come from the lock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"
PROJECT = "creditgate"
SEEDED = {"pip"}  # by `python -m venv`: not a dependency, not locked, kept by `uv sync`
UV = Path(sysconfig.get_path("scripts"), "uv")
# The uv bootstrap: `python -c '<this>'` (`$(PY) -c` in the Makefile) prints uv's requirement with its hashes.
BOOTSTRAP = re.compile(r"(?:python|\$\(PY\)) -c '(import tomllib;[^']*)' >\S*uv-requirement\.txt")


def _lock() -> dict[str, Any]:
    return tomllib.loads(LOCK.read_text(encoding="utf-8"))


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    if not UV.exists():
        pytest.fail(
            f"{UV} is missing: uv is a locked dev dependency, so this environment was not built by `make install`"
        )
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    return subprocess.run([str(UV), *args, "--offline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def locked_requirements(*extra_args: str) -> dict[str, Version]:
    """Name -> version of what the lock installs on this interpreter and platform
    (``uv export`` of the lock alone, markers evaluated here)."""
    proc = uv(
        "export",
        "--frozen",
        "--no-emit-project",
        "--no-hashes",
        "--no-header",
        "--no-annotate",
        "--format",
        "requirements-txt",
        *extra_args,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Version] = {}
    for line in proc.stdout.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        (pin,) = req.specifier
        assert pin.operator == "==", line
        out[canonicalize_name(req.name)] = Version(pin.version)
    return out


def test_lock_is_up_to_date_with_pyproject() -> None:
    proc = uv("lock", "--check")
    assert proc.returncode == 0, f"uv.lock does not match pyproject.toml: run `make lock`\n{proc.stderr}"


def test_every_locked_package_is_pinned_with_hashes() -> None:
    packages = _lock()["package"]
    assert {p["name"] for p in packages} >= {PROJECT, "uv", "grpcio", "pytest"}
    for package in packages:
        if "registry" not in package["source"]:
            assert package["name"] == PROJECT, package["source"]  # only the project is not from a registry
            continue
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, package["name"]
        for f in files:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", f.get("hash", "")), f"{package['name']}: {f.get('url')}"


def test_installed_distributions_are_exactly_the_locked_dev_install() -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip(f"not in a virtual environment ({sys.executable}): the check is for .venv, built by make install")
    site = list(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))
    installed: dict[str, list[Version]] = {}
    for dist in metadata.distributions(path=site):
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), []).append(Version(dist.version))
    assert PROJECT in installed, f"the project is not installed in {site}"
    for name in (PROJECT, *SEEDED):
        installed.pop(name, None)
    locked = locked_requirements("--extra", "dev")

    problems = [f"{name}: installed twice ({versions})" for name, versions in installed.items() if len(versions) > 1]
    problems += [f"{name}=={v}: locked, not installed" for name, v in locked.items() if name not in installed]
    problems += [f"{name}=={vs[0]}: installed, not in the lock" for name, vs in installed.items() if name not in locked]
    problems += [
        f"{name}: installed {installed[name][0]}, locked {v}"
        for name, v in locked.items()
        if name in installed and installed[name][0] != v
    ]
    assert not problems, (
        "this environment is not uv.lock's dev install (`rm .venv/.installed; make install` syncs it):\n"
        + "\n".join(sorted(problems))
    )


def test_uv_is_bootstrapped_from_its_own_lock_entry_the_same_way_everywhere() -> None:
    snippets = {
        name: BOOTSTRAP.findall((ROOT / name).read_text(encoding="utf-8")) for name in ("Makefile", "deploy/Dockerfile")
    }
    assert all(len(found) == 1 for found in snippets.values()), snippets
    (code,) = {found[0] for found in snippets.values()}  # one snippet, the same in both
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    (entry,) = [p for p in _lock()["package"] if p["name"] == "uv"]
    pin, *hashes = proc.stdout.split()
    assert pin == f"uv=={entry['version']}"
    files = [*entry.get("wheels", []), *([entry["sdist"]] if "sdist" in entry else [])]
    assert hashes and hashes == [f"--hash={f['hash']}" for f in files]
