"""`make run`: `python -m desafio_dagster.cli run` in a subprocess, as a person sees it."""

import csv
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.embedded import embedded_url, stop_embedded
from desafio_dagster.core.source.fakedata import GenerationSpec, generate
from desafio_dagster.core.spark.connect_server import running_server, stop_server
from desafio_dagster_tests.helpers import exited, free_port

CLI = [sys.executable, "-m", "desafio_dagster.cli"]
SCREEN_ROWS, SCREEN_COLUMNS = 25, 100


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DESAFIO_POSTGRES_URL"}
    return env | {"DESAFIO_HOME": str(tmp_path / "home"), "DESAFIO_OUTPUT_DIR": str(tmp_path / "data"),
                  "DAGSTER_HOME": str(tmp_path / "dagster")} | extra


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal of SCREEN_COLUMNS columns as stdin, stdout and stderr; return
    (exit code, everything it wrote, with the carriage returns and escapes a terminal interprets)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, SCREEN_COLUMNS, 0, 0))
    process = subprocess.Popen(CLI + args, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"no output for {timeout} s"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal closed it
                break
            if not data:
                break
            output += data
        return process.wait(timeout=60), output.decode("utf-8", "replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


def _screen(raw: str) -> list[str]:
    """The lines a terminal keeps: a carriage return goes back to the line start, ESC[K erases."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        line = re.sub(r"\x1b\[K", "", line)
        assert "\x1b" not in line, f"unexpected escape sequence in {line!r}"
        lines.append(line.rsplit("\r", 1)[-1])
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _summary(stdout: str) -> dict:
    """The figures of the summary, as printed."""
    tables = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^ +\w+\.(\w+) +([\d,]+) rows$", stdout, re.M)}
    csv_line = re.search(r"^  CSV +([\d,]+) clients, one file each, and _index\.csv \(([\d,]+) rows\), in\n +(\S+)$",
                         stdout, re.M)
    assert csv_line, stdout
    log = re.search(r"^  Log +(\S+)$", stdout, re.M)
    return {"tables": tables, "clients": int(csv_line[1].replace(",", "")), "rows": int(csv_line[2].replace(",", "")),
            "folder": Path(csv_line[3]), "log": Path(log[1])}


def _postgres_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM sicooperative.{table}").fetchone()[0]
                for table in ("associado", "conta", "cartao", "movimento")}


def _folder_figures(folder: Path) -> tuple[int, int]:
    """(client files, data rows in them), read back from the files."""
    files = [path for path in folder.iterdir() if not path.name.startswith("_")]  # _index.csv, the export's records
    rows = 0
    for path in files:
        with open(path, encoding="utf-8", newline="") as handle:
            rows += sum(1 for _ in csv.reader(handle)) - 1  # less the header
    return len(files), rows


@pytest.mark.command
def test_run_summary_matches_postgres_and_the_files_and_the_log_has_every_event(tmp_path, database_url):
    done = _run(["run", "--clients", "60"], _env(tmp_path, DESAFIO_POSTGRES_URL=database_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", "Dagster's events, the JVM's and Spark's output go to the log file, not the terminal"
    lines = done.stdout.splitlines()
    assert len(lines) <= SCREEN_ROWS, done.stdout
    for label in ("populate", "check source", "export", "check export"):
        assert re.search(rf"^  ok +{label} +\S.* s$", done.stdout, re.M), f"no line for step {label}:\n{done.stdout}"
    assert re.search(r"^  ok +check source +17 of 17 checks passed", done.stdout, re.M)

    summary = _summary(done.stdout)
    in_postgres = _postgres_counts(database_url)
    assert summary["tables"] == in_postgres and in_postgres["associado"] == 60
    assert summary["folder"] == (tmp_path / "data" / "movements_csv").absolute()
    assert _folder_figures(summary["folder"]) == (summary["clients"], summary["rows"])
    assert (summary["clients"], summary["rows"]) == (in_postgres["associado"], in_postgres["movimento"])
    assert "`make ui`, then open http://127.0.0.1:3000" in done.stdout

    assert summary["log"].parent == (tmp_path / "home" / "logs").absolute()
    assert str(summary["log"]) in lines[1], "the log's path is printed when the run starts"
    log = summary["log"].read_text()
    assert " - DEBUG - " in log and "STEP_START" in log and "ASSET_CHECK_EVALUATION" in log, "the full event log"
    assert "rows loaded" in log and "Spark tasks done" in log, "the assets' progress messages"
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:  # what `make ui` shows
        run = instance.get_run_by_id(summary["log"].stem)
        assert run is not None and run.job_name == "etl" and run.status == dg.DagsterRunStatus.SUCCESS
    assert re.search(r"^  Export +full \(first export: nothing is published yet\): 60 files written, 0 carried, 0 removed$",
                     done.stdout, re.M), done.stdout

    again = _run(["run", "--job", "export"], _env(tmp_path, DESAFIO_POSTGRES_URL=database_url))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "  Export    nothing changed since the last export: the published version stays, Spark did not start" \
        in again.stdout
    assert _summary(again.stdout)["folder"] == summary["folder"]


@pytest.mark.command
def test_a_failed_run_prints_the_error_and_the_log_path_and_exits_non_zero(tmp_path):
    port = free_port()
    url = f"postgresql://postgres:hunter2secret@127.0.0.1:{port}/nowhere"
    done = _run(["run", "--clients", "5"], _env(tmp_path, DESAFIO_POSTGRES_URL=url))
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^  FAILED +populate", done.stdout, re.M), done.stdout
    assert re.search(r"^  not run +export$", done.stdout, re.M), done.stdout
    assert re.search(rf"populate \(source_database\) failed: .*127\.0\.0\.1:{port}", done.stderr), done.stderr
    log = Path(re.search(r"^The full log .*: (\S+)$", done.stderr, re.M)[1])
    assert log.parent == (tmp_path / "home" / "logs").absolute() and "STEP_FAILURE" in log.read_text()
    assert "hunter2secret" not in done.stdout + done.stderr + log.read_text()


@pytest.mark.command
def test_make_run_in_a_terminal_fits_one_screen_and_uses_the_embedded_postgres(tmp_path):
    env = _env(tmp_path)
    home = tmp_path / "home"
    try:
        code, raw = _run_in_terminal(["run"], env)  # the defaults, as `make run`
        screen = _screen(raw)
        assert code == 0, raw[-4000:]
        rows = sum(max(1, -(-len(line) // SCREEN_COLUMNS)) for line in screen)  # long paths wrap
        assert rows <= SCREEN_ROWS, "\n".join(screen)
        populate_bar = r"\[#+-*\] [\d,]+ of ~[\d,]+ rows"
        assert re.search(populate_bar, raw) and not re.search(populate_bar, "\n".join(screen)), "progress is drawn in place"
        assert (home / "pgdata" / "PG_VERSION").exists(), "the embedded Postgres lives under DESAFIO_HOME"
        summary = _summary("\n".join(screen))
        assert summary["tables"] == _postgres_counts(embedded_url(home))
        assert summary["clients"] == GenerationSpec().clients
        with open(summary["folder"] / "_index.csv", encoding="utf-8", newline="") as handle:
            index = list(csv.DictReader(handle))
        assert (len(index), sum(int(r["rows"]) for r in index)) == (summary["clients"], summary["rows"])
    finally:
        stop_embedded(home)
    stopped = _run(["stop-db"], env)
    assert "was not running" in stopped.stdout


@pytest.mark.command
def test_empty_settings_take_the_defaults_under_the_working_directory(tmp_path, database_url):
    """DESAFIO_HOME= and DESAFIO_OUTPUT_DIR= (set but empty) mean what unset means: ./.desafio and ./data."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {
        "DESAFIO_HOME": "", "DESAFIO_OUTPUT_DIR": " ", "DESAFIO_SPARK_MASTER": "", "DESAFIO_SCHEMA": "",
        "DESAFIO_POSTGRES_URL": database_url}
    env = {name: value for name, value in env.items()
           if name not in ("SPARK_CONNECT_AUTHENTICATE_TOKEN", "DESAFIO_TASK_SECRET")}
    try:  # the default engine too: the project's Connect server under ./.desafio, which `stop` stops
        done = _run(["run", "--clients", "12"], env, cwd=work)
        server = running_server(work / ".desafio")
        assert server, "the run left the project's Spark Connect server running for the next one"
        stopped = _run(["stop"], env, cwd=work)
        assert "Spark Connect server stopped" in stopped.stdout and running_server(work / ".desafio") is None
        assert exited(server)
    finally:
        stop_server(work / ".desafio")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _summary(done.stdout)
    assert summary["log"].parent == work / ".desafio" / "logs"
    assert summary["folder"] == work / "data" / "movements_csv"
    assert summary["tables"]["associado"] == 12 and "sicooperative.associado" in done.stdout
    assert (work / ".desafio" / "dagster").is_dir()
    assert sorted(p.name for p in work.iterdir()) == [".desafio", "data"], "nothing written anywhere else"


@pytest.mark.command
def test_run_grow_adds_the_days_and_says_what_it_added(tmp_path, source_db):
    loading.replace(source_db, generate(GenerationSpec(clients=1_000, accounts_per_client=(1, 2), cards_per_account=(1, 2),
                                                            movements_per_card=(0, 3), seed=3)))
    before = _postgres_counts(source_db.url)
    done = _run(["run", "--job", "grow", "--days", "2"], _env(tmp_path, DESAFIO_POSTGRES_URL=source_db.url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    after = _postgres_counts(source_db.url)
    added = {table: after[table] - before[table] for table in after}
    assert added["associado"] == 2 and added["movimento"] > 0  # 1,000 then 1,001 clients: 0.1% new a day
    assert done.stdout.startswith("grow: 2 day(s) of activity after the source's last day (seed 42; each day "
                                  "1.00% of the clients active, 0.10% new) into Postgres\n"), done.stdout
    assert re.search(rf"^  ok +populate +{sum(added.values()):,} rows added, {sum(after.values()):,} in 4 tables",
                     done.stdout, re.M), done.stdout
    assert re.search(r"^  ok +check source +17 of 17 checks passed", done.stdout, re.M), done.stdout
    assert re.search(rf"^grow succeeded in .*\n  Growth +2 day\(s\), 2026-01-01 to 2026-01-02: {sum(added.values()):,} "
                     r"rows added$", done.stdout, re.M), done.stdout
    shown = {m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", "")))
             for m in re.finditer(r"^ +\w+\.(\w+) +([\d,]+) rows \(\+([\d,]+)\)$", done.stdout, re.M)}
    assert shown == {table: (after[table], added[table]) for table in after}
    assert "  CSV " not in done.stdout, "a growth exports nothing"


def test_days_is_refused_outside_the_grow_job(capsys):
    from desafio_dagster.cli.__main__ import main

    for argv in (["run", "--job", "populate", "--days", "2"], ["run", "--days", "2"], ["run", "--job", "grow", "--days", "0"],
                 ["run", "--job", "grow", "--clients", "5"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
    errors = capsys.readouterr().err
    assert "--days sets the days a growth adds: it applies to the grow job only" in errors
    assert "must be >= 1, got 0" in errors and "not grow" in errors
