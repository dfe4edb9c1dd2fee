"""Java discovery: the Java found runs Spark's module set; a wrong JAVA_HOME, a Java of another
version and a trimmed runtime are refused with a message naming the fix."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desafio_dagster.core.spark.java import MODULE, JavaNotFound, find_java_home, problem
from desafio_dagster_tests.helpers import REPO


def fake_home(root: Path, modules: list[str]) -> Path:
    """A Java home whose bin/java answers `--list-modules` with these modules."""
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text("#!/bin/sh\n" + "".join(f"echo {module}\n" for module in modules))
    java.chmod(0o755)
    return root


def test_the_java_found_lists_the_vector_module():
    home = Path(find_java_home())
    modules = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True).stdout
    assert f"{MODULE}@" in modules and problem(home) is None


def test_refused_homes_say_why(tmp_path):
    assert problem(tmp_path / "none") == "has no bin/java"
    trimmed = fake_home(tmp_path / "trimmed", ["java.base@21.0.5", "java.sql@21.0.5"])
    assert problem(trimmed) == f"is Java 21 without the {MODULE} module (a trimmed runtime)"
    newer = fake_home(tmp_path / "newer", ["java.base@25.0.1", f"{MODULE}@25.0.1"])
    assert problem(newer) == "is Java 25, not 17 or 21"
    assert problem(fake_home(tmp_path / "ok", ["java.base@17.0.15", f"{MODULE}@17.0.15"])) is None


def test_a_bad_java_home_is_the_error_not_a_fallback(tmp_path):
    trimmed = fake_home(tmp_path / "trimmed", ["java.base@21.0.5"])
    with pytest.raises(JavaNotFound, match=f"JAVA_HOME={trimmed} is Java 21 without the {MODULE} module"):
        find_java_home(str(trimmed))


def test_the_command_line_prints_the_home_or_one_line_with_the_fix(tmp_path):
    unset = {name: value for name, value in os.environ.items() if name != "JAVA_HOME"}
    found = subprocess.run([sys.executable, "-m", "desafio_dagster.core.spark.java"], cwd=REPO, env=unset,
                           capture_output=True, text=True)
    assert found.returncode == 0 and Path(found.stdout.strip(), "bin", "java").is_file()
    blank = subprocess.run([sys.executable, "-m", "desafio_dagster.core.spark.java"], cwd=REPO,
                           env={**unset, "JAVA_HOME": " "}, capture_output=True, text=True)
    assert (blank.returncode, blank.stdout) == (0, found.stdout), "a blank JAVA_HOME counts as unset"
    env = {"PATH": "/nonexistent", "JAVA_HOME": str(tmp_path / "no-java")}
    refused = subprocess.run([sys.executable, "-m", "desafio_dagster.core.spark.java"], cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"JAVA_HOME={tmp_path / 'no-java'} has no bin/java: point JAVA_HOME at a Java 17 or 21, "
        "or unset it to use the one found on this machine"
    )

