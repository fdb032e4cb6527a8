"""requirements.txt is the single source of versions; environment.yml must agree with it."""

import re

import yaml

from conftest import ROOT


def requirements():
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_are_all_pinned():
    for req in requirements():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+]*", req), f"not pinned with ==: {req}"


def test_torch_is_pinned_to_the_cpu_wheel_version_on_disk():
    assert "torch==2.13.0" in requirements()
    assert any(r.startswith("tensorflow==2.21.") for r in requirements())


def test_environment_yml_pip_section_equals_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert pip_sections[0] == requirements()
    assert any(isinstance(d, str) and d.startswith("python=") for d in env["dependencies"])


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in ci.split("\n")[-2] or ci.strip().endswith("make test")
    assert "make test" in readme and "make lab" in readme
