"""What the tests share besides fixtures: the repository root, fresh databases, running a job (in
process or through Dagster's CLI), the checks the definitions declare, and the output's oracle."""

import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from desafio_dagster.core.output.layout import HEADER
from desafio_dagster.core.output.version import READBACK_FILE, SOURCE_FILE
from desafio_dagster.core.source.fakedata import GenerationSpec

REPO = Path(__file__).resolve().parents[1]

# A small source (the source_db tests), and one with clients without movements (the export tests).
SMALL = GenerationSpec(clients=40, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(1, 6), seed=7)
SPEC = GenerationSpec(clients=60, accounts_per_client=(1, 2), cards_per_account=(1, 2), movements_per_card=(0, 5), seed=21)


# --- servers -----------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new database on the server, dropped afterwards: (name, connection string)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    """The data of a query to a Dagster webserver's GraphQL API at url; fails on errors."""
    import requests

    response = requests.post(f"{url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


class Webserver:
    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def graphql(self, query: str) -> dict:
        return graphql(self.url, query)


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started in its own session and everything it started (webserver, daemon,
    code server, run workers, Spark's JVM): SIGTERM, then SIGKILL for what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def running_webserver(command: list[str], env: dict[str, str], log: Path) -> Iterator[Webserver]:
    """A Dagster webserver (`dagster dev`, `dagster-webserver`: the command without host and port)
    started in the repo root on a free loopback port, yielded once its code location has loaded."""
    import requests

    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([*command, "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Webserver(port, log)
    deadline = time.monotonic() + 300  # a guard against a hang, far above the 10-20 s it takes
    try:
        while True:  # the webserver answers, then the code location is loaded (or fails to)
            assert process.poll() is None, f"{command} exited with {process.returncode}:\n{server.tail()}"
            assert time.monotonic() < deadline, f"{command} did not load its code location:\n{server.tail()}"
            try:
                if requests.get(f"{server.url}/server_info", timeout=2).ok:
                    entries = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        errors = [e["locationOrLoadError"] for e in entries
                                  if e["locationOrLoadError"]["__typename"] == "PythonError"]
                        assert not errors, errors
                        break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        yield server
    finally:
        stop_process_group(process)


# --- running jobs ------------------------------------------------------------------------


def run(job: str, run_config: dict | None = None, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """A job of the project's definitions, in this process (an ephemeral instance unless given)."""
    from desafio_dagster.definitions import defs

    return defs.resolve_job_def(job).execute_in_process(
        run_config=run_config or {}, instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def export(run_config: dict | None = None, instance: dg.DagsterInstance | None = None
           ) -> tuple[dg.ExecuteInProcessResult, dict]:
    """The export job, in this process, which must succeed: (its result, movements_csv's metadata values)."""
    result = run("export", run_config, instance)
    assert result.success, failure_message(result)
    metadata = result.asset_materializations_for_node("movements_csv")[0].metadata
    return result, {key: value.value for key, value in metadata.items()}


# A populate's generation config (the source_database op's), small.
SMALL_CONFIG = {"clients": 30, "accounts_per_client": [1, 2], "cards_per_account": [1, 2], "movements_per_card": [1, 4], "seed": 5}


def run_populate(config: dict, **kwargs) -> dg.ExecuteInProcessResult:
    """The populate job with that generation config, in this process (an ephemeral instance)."""
    from desafio_dagster.definitions import defs

    return defs.resolve_job_def("populate").execute_in_process(
        run_config={"ops": {"source_database": {"config": config}}}, instance=dg.DagsterInstance.ephemeral(), **kwargs
    )


# The export's run config that rewrites every file, even when nothing changed since the last export.
FULL_REFRESH = {"ops": {"movements_csv": {"config": {"full_refresh": True}}}}


def full_refresh_file(folder: Path) -> str:
    """FULL_REFRESH as a run config file in folder, for `dagster job execute -c`."""
    path = folder / "full_refresh.yaml"
    path.write_text(json.dumps(FULL_REFRESH))  # JSON is YAML
    return str(path)


def start_dagster_cli(job: str, *args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """`dagster job execute -m desafio_dagster.definitions -j job *args` in its own process group
    (os.killpg stops it with its Spark driver); stdout and stderr together."""
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "desafio_dagster.definitions", "-j", job, *args]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)


def dagster_cli(job: str, *args: str, env: dict[str, str], cwd: Path | None = None,
                timeout: float = 300) -> tuple[int, str]:
    """start_dagster_cli to its end: (exit code, output)."""
    process = start_dagster_cli(job, *args, env=env, cwd=cwd)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:  # timed out or interrupted: the run and its Spark driver go
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out


@contextlib.contextmanager
def exported_view(db, spark, mask: bool = True, parts: int = 2):
    """(the flat view, its snapshot) as the export reads them: Spark tasks reading the exported snapshot,
    which stays open until the block ends."""
    from desafio_dagster.core.export.extract import ExportedSnapshot
    from desafio_dagster.core.export.transform import snapshot_view

    exported = ExportedSnapshot.open(db)
    try:
        yield snapshot_view(spark, exported, parts, mask), exported.snapshot
    finally:
        exported.close()


def source_snapshot(db, published=None):
    """The export's snapshot of db (extract.Snapshot), its transaction closed; published: what the published
    version recorded of its source (extract.PublishedFigures)."""
    from desafio_dagster.core.export.extract import ExportedSnapshot

    exported = ExportedSnapshot.open(db, published=published)
    exported.close()
    return exported


def as_published(snapshot):
    """A Snapshot's figures as a published version would have recorded them (extract.PublishedFigures)."""
    from desafio_dagster.core.export.extract import PublishedFigures

    return PublishedFigures("published", snapshot.source, snapshot.clients)


def failure_message(result) -> str:
    """The step failures of a Dagster run, each with its causes (after the retries a step is allowed,
    Dagster's own message is "Exceeded max_retries", caused by the last attempt's error)."""
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message.strip())
            error = error.cause
    return "\n".join(messages)


def failed_run_message(result: dg.ExecuteInProcessResult) -> str:
    """failure_message of a run that must have failed."""
    assert not result.success
    return failure_message(result)


def declared_checks() -> set[tuple[str, str]]:
    """(asset, check name) of every asset check the definitions declare."""
    from desafio_dagster.definitions import defs

    return {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}


def source_checks() -> set[tuple[str, str]]:
    return {(asset, name) for asset, name in declared_checks() if asset != "movements_csv"}


def export_checks() -> set[tuple[str, str]]:
    return declared_checks() - source_checks()


# --- the published output and its oracle -------------------------------------------------

CONTRACT = HEADER.strip().split(",")

ORACLE = """
SELECT a.id, a.nome, a.sobrenome, a.idade::text, m.vlr_transacao::text, m.des_transacao,
       to_char(m.data_movimento, 'YYYY-MM-DD HH24:MI:SS'),
       CASE WHEN %(mask)s THEN repeat('*', length(k.num_cartao) - 4) || right(k.num_cartao, 4) ELSE k.num_cartao END,
       k.nom_impresso, to_char(k.data_criacao, 'YYYY-MM-DD HH24:MI:SS'), c.tipo::text,
       to_char(c.data_criacao, 'YYYY-MM-DD HH24:MI:SS')
FROM movimento m
JOIN cartao k ON k.id = m.id_cartao
JOIN conta c ON c.id = k.id_conta
JOIN associado a ON a.id = c.id_associado
ORDER BY a.id, m.data_movimento, m.id"""


def oracle_slug(nome: str, sobrenome: str) -> str:
    """The contract's slug, written independently of desafio_dagster.core.output.layout."""
    text = unicodedata.normalize("NFKD", f"{nome} {sobrenome}").encode("ascii", "ignore").decode().lower()
    return "-".join(re.findall(r"[a-z0-9]+", text))


def expected_files(db, mask: bool) -> dict[str, list[list[str]]]:
    """File name -> rows, computed by SQL in Postgres from what the source holds now."""
    with db.connect() as conn:
        clients = conn.execute("SELECT id, nome, sobrenome FROM associado ORDER BY id").fetchall()
        rows = conn.execute(ORACLE, {"mask": mask}).fetchall()
    names = {cid: f"{cid:08d}_{oracle_slug(nome, sobrenome)}.csv" for cid, nome, sobrenome in clients}
    files = {name: [] for name in names.values()}
    for row in rows:
        files[names[row[0]]].append(list(row[1:]))
    return files


def published_files(folder: Path) -> dict[str, list[list[str]]]:
    """File name -> rows of the client files in folder, read with Python's csv module."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("_"):  # _index.csv and the export's records
            continue
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == CONTRACT, path.name
        files[path.name] = rows[1:]
    return files


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a version folder, by name, with its bytes; but _readback.arrow, which records when
    each file was written (its mtime, the version that wrote it), so two writes of the same bytes differ, and
    _source.json, which records the source snapshot read (a transaction's view, not the data)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in (READBACK_FILE, SOURCE_FILE)}


def output(env_home: Path) -> Path:
    """The published movements_csv under the env_home fixture's DESAFIO_OUTPUT_DIR."""
    return env_home / "data" / "movements_csv"


def assert_untouched(published) -> None:
    """The output published before (the `published` fixture) is still the live one, and no run left
    a task attempt's folder, a link or a twin but the published version's behind."""
    folder, files, version = published
    assert folder.resolve() == version and snapshot(folder) == files
    leftovers = [p.name for p in folder.parent.iterdir() if ".link-" in p.name]
    leftovers += [p.name for p in folder.parent.glob(f".{folder.name}.v-*-twin") if p.name != f"{version.name}-twin"]
    assert leftovers + [str(p) for p in folder.parent.glob(f".{folder.name}.v-*/.attempts")] == []


# --- an S3 server on loopback (the s3 fixture) -------------------------------------------


@dataclass(frozen=True)
class S3:
    """The s3 fixture's server and bucket. Read with boto3, not with the project's store."""

    endpoint: str
    bucket: str
    secret: str  # the fake secret key: must appear nowhere but in the environment
    prefix: str = "exports"

    @property
    def environment(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    @property
    def output_dir(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing-key-id", aws_secret_access_key=self.secret)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client().exceptions.NoSuchKey:
            return None

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def published(self, name: str = "movements_csv") -> str | None:
        """The published version's name, from the pointer object."""
        pointer = self.get(f"{self.prefix}/{name}/_published")
        return pointer.decode().strip() if pointer is not None else None

    def version_files(self, version: str, name: str = "movements_csv") -> dict[str, bytes]:
        """Every object of a version, by file name, with its bytes."""
        base = f"{self.prefix}/{name}/{version}/"
        return {key.removeprefix(base): self.get(key) for key in self.keys(base)}

    def index(self, version: str, name: str = "movements_csv") -> list[dict[str, str]]:
        """A version's _index.csv rows: on S3 each names the version that holds its file."""
        data = self.get(f"{self.prefix}/{name}/{version}/_index.csv")
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))

    def located_files(self, version: str, name: str = "movements_csv") -> dict[str, bytes]:
        """A version's client files, each read where its _index.csv row says (the readers' protocol)."""
        files = {}
        for row in self.index(version, name):
            files[row["file"]] = self.get(f"{self.prefix}/{name}/{row['version']}/{row['file']}")
            assert files[row["file"]] is not None, f"{row['file']} is not in {row['version']}, where the index says"
        return files

    def snapshot(self, name: str = "movements_csv") -> dict[str, bytes | list]:
        """helpers.snapshot of the published version: its client files (read where the index says), its
        records but _readback.arrow and _source.json, and its index's rows without the version that holds each file."""
        version = self.published(name)
        base = f"{self.prefix}/{name}/{version}/"
        records = {key.removeprefix(base): self.get(key) for key in self.keys(base)
                   if key.removeprefix(base).startswith("_") and key.removeprefix(base) not in (READBACK_FILE, SOURCE_FILE, "_index.csv")}
        index = [{k: v for k, v in row.items() if k != "version"} for row in self.index(version, name)]
        return {**self.located_files(version, name), **records, "_index.csv": index}

    def published_files(self, name: str = "movements_csv") -> dict[str, list[list[str]]]:
        """helpers.published_files of the published version, read with Python's csv module."""
        files = {}
        for file, data in sorted(self.located_files(self.published(name), name).items()):
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
            assert rows[0] == CONTRACT, file
            files[file] = rows[1:]
        return files


def own_project_server(env: dict[str, str], home: Path, conf_dir: Path | None = None) -> dict[str, str]:
    """env for a command that starts the project's own Spark Connect server (the default engine) under home,
    instead of reaching the test run's server; with SPARK_CONF_DIR=conf_dir if given. Stop it with
    connect_server.stop_server(home)."""
    env = {name: value for name, value in env.items()
           if name not in ("SPARK_CONNECT_AUTHENTICATE_TOKEN", "DESAFIO_TASK_SECRET")}
    env.update({"DESAFIO_SPARK_MASTER": "local[2]", "DESAFIO_HOME": str(home)})
    if conf_dir is not None:
        env["SPARK_CONF_DIR"] = str(conf_dir)
    return env


def project_server_traces(home: Path) -> str:
    """What the project's server under home shows of itself: its environment and its log."""
    from desafio_dagster.core.spark.connect_server import running_server, state_dir

    pid = running_server(home)
    assert pid, f"no project server runs under {home}"
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return environ + "\n" + (state_dir(home) / "server.log").read_text(errors="replace")


def ignores(pid: int, sig: int) -> bool:
    """Process pid ignores sig (SIG_IGN: the SigIgn mask of /proc/<pid>/status), as a started process inherits it."""
    mask = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) >> (sig - 1) & 1)


def exited(pid: int) -> bool:
    """pid has exited (a zombie counts: its parent, or an init that does not reap, has not reaped it yet)."""
    from desafio_dagster.core.spark.connect_server import is_alive

    return not is_alive(pid)
