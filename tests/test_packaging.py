"""The distribution, its two environment descriptions and the command line agree."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# PyPI name -> conda-forge name, where they differ.
CONDA_NAME = {"torch": "pytorch"}
# conda-forge packages that stand in for a pip extra ("moto[server]" needs flask on conda).
CONDA_ONLY = {"python", "pip", "flask", "flask-cors"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].strip().lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _environment() -> tuple[set[str], set[str]]:
    conda, pip, in_pip = set(), set(), False
    text = (REPO / "environment.yml").read_text()
    for raw in text.split("\ndependencies:\n", 1)[1].splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.strip() == "- pip:":
            in_pip = True
            continue
        match = re.match(r"^(\s*)- (.+)$", line)
        if not match:
            in_pip = False
            continue
        indent, item = len(match.group(1)), match.group(2).strip()
        if in_pip and indent > 2:
            if not item.startswith("-"):
                pip.add(_name(item))
        else:
            in_pip = False
            conda.add(_name(item))
    return conda, pip


def test_environment_yml_matches_pip_dependencies() -> None:
    project = _pyproject()["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "notebooks"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    conda, pip = _environment()
    have = {CONDA_NAME.get(n, n) for n in wanted}
    missing = sorted(n for n in have if n not in conda and n not in pip)
    assert not missing, f"environment.yml lacks {missing}"
    extra = sorted(conda - have - CONDA_ONLY)
    assert not extra, f"environment.yml has {extra}, which pyproject.toml does not ask for"


def test_sample_data_package_is_the_same_in_makefile_and_environment() -> None:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^SAMPLE_SPEC \?= (\S+)$", makefile, re.M).group(1)
    assert f"- {spec}" in (REPO / "environment.yml").read_text()


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"]["hubcat"] == "pipeline.cli:main"


def test_cli_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = sorted(p.stem for p in (REPO / "pipeline" / "commands").glob("[!_]*.py"))
    for command in commands:
        assert command in out, f"`hubcat --help` does not list {command!r}"


@pytest.mark.parametrize("package", ["pipeline", "tiling", "embeddings", "grid", "catalog"])
def test_packages_declare_their_public_names(package: str) -> None:
    module = __import__(package)
    assert isinstance(getattr(module, "__all__", None), list | tuple), f"{package} has no __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which it lacks"
