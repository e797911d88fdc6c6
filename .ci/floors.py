"""The declared lower bounds of pyproject.toml, as pins: what .ci/lowest-deps installs.

    python3 .ci/floors.py            print `name==floor` for every requirement of the project
                                     (build-system, dependencies, every extra): a constraints file
    python .ci/floors.py --check     in the venv under test: fail unless each is installed at
                                     exactly its floor

Each requirement must have the form `name>=X.Y.Z` with X.Y.Z a release that exists (pinning
`==X.Y` would ask for X.Y.0): a requirement without a floor, or with another shape, is an error,
so no floor goes untested. Needs only the standard library (Python >= 3.11).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*$")


def requirements() -> dict[str, list[str]]:
    """Every requirement string of the project, by where it is declared."""
    data = tomllib.loads(PYPROJECT.read_text())
    found = {
        "build-system.requires": list(data["build-system"]["requires"]),
        "project.dependencies": list(data["project"].get("dependencies", [])),
    }
    for extra, reqs in data["project"].get("optional-dependencies", {}).items():
        found[f"extra {extra!r}"] = list(reqs)
    return found


def floors() -> dict[str, str]:
    """``{normalized name: floor}``; exits with a message on a requirement without a floor."""
    out: dict[str, str] = {}
    bad: list[str] = []
    for where, reqs in requirements().items():
        for req in reqs:
            m = FLOOR.match(req)
            if m is None:
                bad.append(f"{where}: {req!r} is not of the form 'name>=X.Y.Z'")
                continue
            name = re.sub(r"[-_.]+", "-", m[1]).lower()
            if out.setdefault(name, m[2]) != m[2]:
                bad.append(f"{where}: {req!r} disagrees with another floor ({out[name]})")
    if bad:
        sys.exit("pyproject.toml:\n  " + "\n  ".join(bad))
    return out


def check() -> None:
    wrong = []
    for name, floor in floors().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if have != floor:
            wrong.append(f"{name}: declared floor {floor}, installed {have}")
        else:
            print(f"{name}=={have}")
    if wrong:
        sys.exit("not at the declared floors:\n  " + "\n  ".join(wrong))


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        check()
    elif not sys.argv[1:]:
        print("\n".join(f"{name}=={floor}" for name, floor in sorted(floors().items())))
    else:
        sys.exit(__doc__)
