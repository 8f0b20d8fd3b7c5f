"""requirements.lock (scripts/lock.sh) pins every dependency exactly, with hashes, and is what is installed."""

import os
import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from conftest import REPO


def locked() -> dict[str, tuple[str, int]]:
    """``{name: (version, number of hashes)}`` of requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if found := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line):
            name = canonical(found.group(1))
            pins[name] = (found.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_and_its_dependencies_are_pinned_with_hashes_and_torch_pairs_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    for requirement in wanted:
        name = canonical(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (name, pins[name], str(requirement.specifier))
    assert all(hashes > 0 for _, hashes in pins.values())
    assert pins["torch"][0] == "2.14.1" and pins["torchvision"][0] == "0.29.1"  # the pair pyproject pins


@pytest.mark.skipif(os.environ.get("UNLOCKED") == "1", reason="set up with UNLOCKED=1: the ranges, not the lock")
def test_the_environment_holds_exactly_the_locked_versions():
    differ = {}
    for name, (version, _) in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            differ[name] = (version, None)
            continue
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"installed versions differ from requirements.lock (run scripts/setup.sh): {differ}"
