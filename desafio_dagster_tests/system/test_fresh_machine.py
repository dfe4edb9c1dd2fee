"""A newcomer on a fresh Debian bookworm machine: a clean container with only
`python3 python3-venv make git ca-certificates`, a fresh clone, `make run`. make installs Java
by itself (root and apt-get, as scripts/setup does), then the Python packages, then runs the
pipeline; its CSVs are checked against the embedded Postgres they were exported from.

The clone comes from a git bundle of HEAD: this tests what is committed, not the working tree.
Runs on the tests' private Docker engine (docker_harness). Kept between runs: the base image
and pip's cache (the named volume desafio-pip-cache); apt packages and wheels not in that
cache are downloaded, so the first run on a machine takes longer.
"""

import json
import re
import subprocess
import threading
import time

from desafio_dagster_tests.helpers import CONTRACT, REPO
from desafio_dagster_tests.system.docker_harness import DockerEngine, base_image, extra_ca_args

SYSTEM_PACKAGES = "python3 python3-venv make git ca-certificates"
MAKE_RUN_TIMEOUT = 900

# Runs in the container's .venv after make run: every client of Postgres against its file.
CHECK = r"""
import csv, json, pathlib, re
from decimal import Decimal
import psycopg
from desafio_dagster.core.source.embedded import embedded_url

with psycopg.connect(embedded_url(pathlib.Path(".desafio"))) as conn:
    expected = {cid: (rows, Decimal(total)) for cid, rows, total in conn.execute(
        "SELECT a.id, count(m.id), coalesce(sum(m.vlr_transacao), 0)::text FROM sicooperative.associado a"
        " LEFT JOIN sicooperative.conta c ON c.id_associado = a.id LEFT JOIN sicooperative.cartao k ON k.id_conta = c.id"
        " LEFT JOIN sicooperative.movimento m ON m.id_cartao = k.id GROUP BY a.id")}
folder = pathlib.Path("data/movements_csv").resolve()
found, headers, unmasked = {}, set(), 0
for path in sorted(folder.glob("*.csv")):
    if path.name.startswith("_"):  # _index.csv, the export's records
        continue
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        headers.add(tuple(next(reader)))
        rows = list(reader)
    unmasked += sum(not re.fullmatch(r"\*+\d{4}", row[6]) for row in rows)
    found[int(path.name[:8])] = (len(rows), sum((Decimal(row[3]) for row in rows), Decimal(0)))
print(json.dumps({
    "clients": len(expected), "files": len(found), "rows": sum(rows for rows, _ in found.values()),
    "movements": sum(rows for rows, _ in expected.values()), "headers": sorted(headers), "unmasked": unmasked,
    "mismatched": [cid for cid in expected.keys() | found.keys() if expected.get(cid) != found.get(cid)][:10],
}))
"""


def shell(engine: DockerEngine, container: str, command: str, timeout: float = 300, input: str | None = None) -> str:
    return engine.run("exec", "-i", container, "sh", "-c", command, timeout=timeout, input=input)


def timed_lines(engine: DockerEngine, container: str, command: str, timeout: float) -> tuple[int, list[tuple[float, str]]]:
    """Run command in the container; its exit code and output lines with the seconds at which each came."""
    process = subprocess.Popen(["docker", "exec", container, "sh", "-c", command], env=engine.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    started, lines = time.monotonic(), []
    try:
        for line in process.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))
        lines.append((time.monotonic() - started, ""))
        return process.wait(), lines
    finally:
        timer.cancel()


def test_make_run_on_a_fresh_debian_machine(docker_engine, tmp_path):
    bundle = tmp_path / "repo.bundle"
    made = subprocess.run(["git", "-C", str(REPO), "bundle", "create", str(bundle), "HEAD"], capture_output=True, text=True)
    assert made.returncode == 0, f"git bundle of HEAD failed (a shallow clone? git fetch --unshallow): {made.stderr}"
    image = base_image(docker_engine)
    mounts = ["--volume", f"{bundle}:/repo.bundle:ro", "--volume", "desafio-pip-cache:/root/.cache/pip"]
    with docker_engine.container(image, *extra_ca_args(), *mounts) as box:
        started = time.monotonic()
        shell(docker_engine, box, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
              f"apt-get install -y -qq --no-install-recommends {SYSTEM_PACKAGES} >/dev/null")
        system_packages = time.monotonic() - started
        shell(docker_engine, box, "git clone -q /repo.bundle /src 2>/dev/null && ! command -v java")

        # Without the rights to install Java: one line with the commands, at once, nothing installed.
        code, lines = timed_lines(docker_engine, box, "cd /src && setpriv --reuid=65534 --regid=65534 --clear-groups make run", 60)
        printed = [line for _, line in lines if line]
        assert code != 0 and lines[-1][0] < 3 and not shell(docker_engine, box, "ls -A /src/.venv 2>/dev/null || true")
        assert len(printed) == 2 and printed[1].startswith("make: ***"), printed
        assert printed[0].startswith("missing: Java 17 or 21. Install: Debian/Ubuntu: sudo apt-get install"), printed
        assert "Fedora: sudo dnf install -y java-21-openjdk-headless; macOS: brew install openjdk@21" in printed[0]

        code, lines = timed_lines(docker_engine, box, "cd /src && make run", MAKE_RUN_TIMEOUT)
        output = "\n".join(line for _, line in lines)
        assert code == 0, f"make run failed on a fresh machine (exit {code}):\n{output[-6000:]}"
        assert re.search(r"^Installing openjdk-17-jre-headless with apt-get .* done in \d+ s\.$", output, re.M), output[:3000]

        pip_ca = "test -s .venv/ca-bundle.pem && " if extra_ca_args() else ""  # EXTRA_CA_BUNDLE reached pip
        summary = json.loads(shell(docker_engine, box, f"cd /src && {pip_ca}.venv/bin/python -", input=CHECK))
        assert summary["headers"] == [CONTRACT]
        assert summary["mismatched"] == [], f"clients whose file differs from Postgres (rows, value sum): {summary}"
        assert summary["files"] == summary["clients"] > 0 and summary["rows"] == summary["movements"] > 0
        assert summary["unmasked"] == 0

    def seconds_at(pattern: str) -> float | None:
        return next((at for at, line in lines if re.search(pattern, line)), None)

    venv, pipeline, total = seconds_at(r"-m venv "), seconds_at(r"desafio_dagster\.cli run"), lines[-1][0]
    java = re.search(r"with apt-get .* done in (\d+) s", output).group(1)
    print(f"\nfresh machine: system packages {system_packages:.0f} s; make run {total:.0f} s "
          f"(Java install {java} s, venv and pip install {pipeline - venv:.0f} s, pipeline {total - pipeline:.0f} s); "
          f"{summary['clients']:,} clients, {summary['rows']:,} rows checked against Postgres" if venv and pipeline else
          f"\nfresh machine: system packages {system_packages:.0f} s; make run {total:.0f} s (Java install {java} s)")
