"""Find a Java that Spark 4.3 runs on: Java 17 or 21 with the jdk.incubator.vector module
(Spark's launcher always adds `--add-modules=jdk.incubator.vector`, so trimmed runtimes fail).

Where: JAVA_HOME if set (and only it), else `java` on PATH, else the usual install places.
Standard library only: `scripts/setup` runs `python3 -m desafio_dagster.core.spark.java` before the
virtual environment exists; it prints the JAVA_HOME found, or one line saying what to install.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path

from desafio_dagster.core.errors import DesafioError
from desafio_dagster.core.settings import environment

SUPPORTED = (17, 21)
MODULE = "jdk.incubator.vector"
INSTALL = (
    "install one: Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless (openjdk-21-jre-headless on "
    "Debian 13 and Ubuntu 24.04); Fedora: sudo dnf install java-21-openjdk-headless; macOS: brew install openjdk@21"
)


class JavaNotFound(DesafioError):
    """No usable Java; the message says what was tried and what to install."""


def problem(home: Path) -> str | None:
    """Why Spark cannot run on the Java at home, or None if it can (one JVM start)."""
    java = home / "bin" / "java"
    if not java.is_file():
        return "has no bin/java"
    try:
        modules = subprocess.run([str(java), "--list-modules"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"does not run ({error})"
    match = re.search(r"^java\.base@(\d+)", modules, re.M)
    if not match:
        return f"is not Java {' or '.join(map(str, SUPPORTED))} (`java --list-modules` failed)"
    major = int(match.group(1))
    if major not in SUPPORTED:
        return f"is Java {major}, not {' or '.join(map(str, SUPPORTED))}"
    if not re.search(rf"^{re.escape(MODULE)}@", modules, re.M):
        return f"is Java {major} without the {MODULE} module (a trimmed runtime)"
    return None


def candidates() -> list[Path]:
    """Java homes to try when JAVA_HOME is unset, in order, without duplicates."""
    homes = []
    on_path = shutil.which("java")
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    patterns = ["/usr/lib/jvm/*", "/Library/Java/JavaVirtualMachines/*/Contents/Home"]
    for prefix in ("/opt/homebrew/opt", "/usr/local/opt", "/home/linuxbrew/.linuxbrew/opt"):
        for major in SUPPORTED:
            patterns += [f"{prefix}/openjdk@{major}/libexec/openjdk.jdk/Contents/Home", f"{prefix}/openjdk@{major}"]
    for pattern in patterns:
        homes += [Path(path).resolve() for path in sorted(glob.glob(pattern))]
    return list(dict.fromkeys(homes))


def find_java_home(configured: str | None = None) -> str:
    """The JAVA_HOME to run Spark on: `configured` (JAVA_HOME) if given, else the first usable
    candidate. Raises JavaNotFound with what was tried and the command to install one."""
    if configured:
        reason = problem(Path(configured))
        if reason:
            raise JavaNotFound(
                f"JAVA_HOME={configured} {reason}: point JAVA_HOME at a Java "
                f"{' or '.join(map(str, SUPPORTED))}, or unset it to use the one found on this machine"
            )
        return configured
    tried = []
    for home in candidates():
        reason = problem(home)
        if reason is None:
            return str(home)
        tried.append(f"{home} {reason}")
    raise JavaNotFound(
        f"no Java {' or '.join(map(str, SUPPORTED))} with the {MODULE} module, which Spark needs "
        f"(tried: {', '.join(tried) or 'no Java found'}); {INSTALL}; or set JAVA_HOME to one"
    )


if __name__ == "__main__":
    try:
        print(find_java_home(environment("JAVA_HOME")))
    except JavaNotFound as error:
        sys.exit(str(error))
