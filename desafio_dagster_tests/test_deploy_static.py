"""Rules of the deployment files that the running stack (test_compose.py) cannot show: no
secret in committed files or in the image build, ports on loopback only, no sleeps, pinned
official base images, the CI workflow, the Makefile's defaults; and the Postgres init script's role and database
separation, against a real Postgres.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import uuid
from functools import cache
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from desafio_dagster_tests.helpers import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
INIT_DIR = REPO / "docker" / "postgres-init"
ENV_EXAMPLE = REPO / ".env.example"
CI = REPO / ".github" / "workflows" / "ci.yml"
DAGSTER_EXECUTABLES = {"dagster", "dagster-webserver", "dagster-daemon"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?])([^}]*))?\}")


# --- helpers ---------------------------------------------------------------------------


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if re.match(r"#[A-Z_]+=", line):  # an optional setting, documented commented out
            line = line[1:]
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, values: dict[str, str] | None = None) -> str:
    """Compose interpolation with .env.example values (or `values`); a required empty one becomes <NAME>."""
    values = env_example() if values is None else values

    def resolve(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = values.get(name, "")
        if op.startswith((":-", "-")):
            return value or arg
        return value or f"<{name}>"

    return _VAR.sub(resolve, text.replace("$$", "\0")).replace("\0", "$")


def raw_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def service_env(service: dict, values: dict[str, str] | None = None) -> dict[str, str]:
    return {key: interpolate(value, values) for key, value in raw_env(service).items()}



def as_argv(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def command(service: dict) -> list[str]:
    return as_argv(service.get("entrypoint")) + as_argv(service.get("command"))


def healthcheck_argv(service: dict) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
        return shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
    return as_argv(test)


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


@cache
def dockerfile_stages() -> list[dict]:
    """Stages of docker/Dockerfile: base image, name, instructions (ARGs before FROM resolved)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif instruction == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "instructions": []})
        else:
            assert stages, f"Dockerfile: {instruction} before FROM"
            stages[-1]["instructions"].append((instruction, rest))
    return stages


def copies(stage: dict) -> list[tuple[list[str], str, str | None]]:
    """(sources, destination, --from stage) of each COPY."""
    result = []
    for instruction, rest in stage["instructions"]:
        if instruction == "COPY":
            args = shlex.split(rest)
            flags = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            origin = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            result.append((paths[:-1], paths[-1], origin))
    return result


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and not line.strip().startswith(("#", "!"))]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes path or a folder holding it (negations not handled)."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:j]) for j in range(1, len(parts) + 1)]
    spans = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
    for pattern in dockerignore_patterns():
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(c, pattern[3:]) for c in spans):
                return True
        elif any(fnmatch.fnmatchcase(c, pattern) for c in prefixes):
            return True
    return False


@cache
def workflow() -> dict:
    return yaml.safe_load(CI.read_text())


def workflow_steps() -> list[tuple[str, dict, dict]]:
    return [(name, job, step) for name, job in workflow()["jobs"].items() for step in job.get("steps", [])]


# --- compose: rules the running stack cannot show ---------------------------------------------


def test_published_ports_bind_to_loopback_only():
    # Dagster OSS and the Spark UI have no authentication.
    for name, svc in services().items():
        for entry in svc.get("ports") or []:
            host_ip = entry.get("host_ip") if isinstance(entry, dict) else interpolate(str(entry)).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {entry} beyond 127.0.0.1"


def test_the_spark_services_get_what_their_tasks_need_and_nothing_more():
    """The executors read the source from Postgres over the network (the password comes from each run,
    sealed) and write the output: of the project's settings the worker holds only the key that opens what
    the runs seal; no home, no storage. The Connect server (the driver) holds none, and no volume."""
    stack = services()
    for name, allowed in (("spark-master", set()), ("spark-connect", set()), ("spark-worker", {"DESAFIO_TASK_SECRET"})):
        env = raw_env(stack[name])
        assert [k for k in env if k.startswith(("DAGSTER_", "DESAFIO_", "PG", "AWS_"))] == sorted(allowed), (name, env)
        assert stack[name].get("ports") is None or name == "spark-master", f"{name} publishes no port"
    assert stack["spark-master"].get("volumes") is None and stack["spark-connect"].get("volumes") is None
    assert stack["spark-worker"]["volumes"] == ["desafio-output:/var/lib/desafio/data"]
    assert service_env(stack["user-code"])["DESAFIO_OUTPUT_DIR"] == "/var/lib/desafio/data"
    assert service_env(stack["user-code"])["DESAFIO_SPARK_MASTER"] == "sc://spark-connect:15002"


def test_postgres_healthcheck_waits_for_tcp_after_init():
    argv = healthcheck_argv(services()["postgres"])
    assert argv[0] == "pg_isready"
    # The init scripts run on a socket-only server; a socket check would pass too early.
    assert option(argv, "-h", "--host") in ("127.0.0.1", "localhost")


def test_no_sleep_anywhere_in_startup():
    texts = [DOCKERFILE.read_text()] + [p.read_text() for p in INIT_DIR.iterdir() if p.is_file()]
    for svc in services().values():
        texts.append(" ".join(command(svc)))
        texts.append(" ".join(healthcheck_argv(svc)))
    for text in texts:
        assert not re.search(r"\bsleep\b", text), text[:200]


# --- secrets -----------------------------------------------------------------------------


def test_env_file_is_git_ignored_and_example_lists_every_variable():
    ignored = {line.strip() for line in (REPO / ".gitignore").read_text().splitlines()}
    assert ignored & {".env", "/.env"}
    used = set(m.group(1) for m in _VAR.finditer(COMPOSE.read_text().replace("$$", "")))
    assert used, "compose uses no ${VAR}"
    missing = used - set(env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_source_database_url_embeds_no_password():
    users = [(n, s) for n, s in services().items() if "DESAFIO_POSTGRES_URL" in raw_env(s)]
    assert users, "no service gets DESAFIO_POSTGRES_URL"
    for name, svc in users:
        assert urlsplit(service_env(svc)["DESAFIO_POSTGRES_URL"]).password is None, name


def test_passwords_come_only_from_required_env():
    assert all(not v for k, v in env_example().items() if "PASSWORD" in k), ".env.example holds a password"
    for match in _VAR.finditer(COMPOSE.read_text()):
        if "PASSWORD" in match.group(1):
            assert (match.group(2) or "").startswith(":?"), f"{match.group(0)} must be required (:?)"
    for name, svc in services().items():
        for key, value in raw_env(svc).items():
            if "PASSWORD" in key:
                assert _VAR.fullmatch(value), f"{name}: {key} is not taken from .env"


def test_dockerignore_keeps_secrets_and_local_state_out_and_copied_files_in():
    for path in (".env", ".git", ".venv", ".desafio", "data", "desafio_dagster/__pycache__/settings.cpython-311.opt"):
        assert dockerignored(path), f"{path} would be sent to the Docker build"
    for stage in dockerfile_stages():
        for sources, _, origin in copies(stage):
            if origin:
                continue
            for source in sources:
                if "$" in source:  # a build arg, e.g. the optional EXTRA_CA_BUNDLE
                    continue
                assert (REPO / source).exists(), f"COPY {source}: not in the build context"
                assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_base_images():
    stages = dockerfile_stages()
    names = {s["name"] for s in stages if s["name"]}
    for stage in stages:
        image = stage["image"]
        if image in names:
            continue
        assert "$" not in image, f"unresolved base image {image}"
        repo, _, tag = image.partition(":")
        assert not repo.endswith("ubuntu"), image
        assert tag and tag != "latest", f"{image}: pin a tag"
    assert stages[-1]["image"].startswith("python:3.11-slim")


def test_dockerfile_downloads_nothing_but_packages():
    # Spark and its jars come from the pyspark wheel: no URL, no download tool.
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(curl|wget)\b|://", text)
    for stage in dockerfile_stages():
        for instruction, rest in stage["instructions"]:
            assert not (instruction == "ADD" and "://" in rest), rest


# --- CI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", " "])
def test_make_gives_a_blank_setting_its_default_as_the_cli_does(blank):
    env = {**os.environ, "DESAFIO_HOME": blank, "DESAFIO_OUTPUT_DIR": blank, "DAGSTER_HOME": blank}
    # The commands make would run, none run; --always-make plans every step whatever the work tree holds
    # (after a make run, the instance config exists and its mkdir would not be planned otherwise).
    planned = subprocess.run(["make", "--dry-run", "--always-make", "clean", "run"], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout
    assert f'rm -rf "{REPO}/.desafio" "{REPO}/data/movements_csv" "{REPO}/data"/.movements_csv.*' in planned
    assert f'mkdir -p "{REPO}/.desafio/dagster"' in planned


def test_ci_runs_the_readmes_two_commands_in_a_newcomers_order():
    # In its fresh clone, make run on the defaults (no DESAFIO_POSTGRES_URL: the embedded Postgres), then make test.
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    run = commands.index("env -u DESAFIO_POSTGRES_URL make run")
    assert commands.index("make test") > run


def test_ci_workflow_tests_and_builds_the_image():
    wf = workflow()
    triggers = wf.get("on", wf.get(True))
    assert "main" in triggers["push"]["branches"] and "pull_request" in triggers
    steps = workflow_steps()
    test_jobs = [job for _, job, step in steps if re.search(r"(^|\s)(make test|\.ci/run)\b", step.get("run", ""))]
    assert test_jobs, "no step runs make test (or .ci/run, which calls it)"
    job = test_jobs[0]
    # The fresh-machine test there starts from the registry's Debian image (no debootstrap).
    assert job["env"]["DESAFIO_BASE_IMAGE"] == "debian:bookworm-slim"
    uses = {step.get("uses", "").split("@")[0]: step.get("with", {}) for step in job["steps"]}
    assert str(uses["actions/setup-python"]["python-version"]) == "3.11"
    assert str(uses["actions/setup-java"]["java-version"]) in ("17", "21")
    builds = [
        step
        for _, _, step in steps
        if re.search(r"docker build\b.*-f docker/Dockerfile", step.get("run", ""))
        or (
            step.get("uses", "").startswith("docker/build-push-action")
            and step.get("with", {}).get("file") == "docker/Dockerfile"
            and not step["with"].get("push")
        )
    ]
    assert builds, "no step builds docker/Dockerfile"


# --- against a real Postgres ----------------------------------------------------------------


def _libpq_env(server_url: str) -> dict[str, str]:
    params = conninfo_to_dict(server_url)
    env = {
        "PGHOST": params.get("host") or "localhost",
        "PGPORT": str(params.get("port") or 5432),
        "PGUSER": params.get("user") or "postgres",
    }
    if params.get("password"):
        env["PGPASSWORD"] = params["password"]
    return env


def test_postgres_init_script_builds_separate_databases_and_the_schema(server_url):
    assert shutil.which("psql"), "the psql client runs the init script: install postgresql-client"
    (script,) = sorted(INIT_DIR.glob("*.sh"))
    tag = uuid.uuid4().hex[:10]
    names = {
        "DAGSTER_POSTGRES_USER": f"dagster_it_{tag}",
        "DAGSTER_POSTGRES_DB": f"dagster_it_{tag}",
        "DESAFIO_POSTGRES_USER": f"desafio_it_{tag}",
        "DESAFIO_POSTGRES_DB": f"desafio_it_{tag}",
    }
    pg = _libpq_env(server_url)
    env = {
        **os.environ,
        **pg,
        **names,
        "POSTGRES_USER": pg["PGUSER"],
        "DESAFIO_SCHEMA": "sicooperative",
        "DAGSTER_POSTGRES_PASSWORD": 'it\'s a "pass" word',
        "DESAFIO_POSTGRES_PASSWORD": uuid.uuid4().hex,
        "DESAFIO_SCHEMA_SQL": str(REPO / "desafio_dagster" / "sql" / "schema.sql"),
    }
    try:
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(make_conninfo(server_url, dbname=names["DESAFIO_POSTGRES_DB"])) as conn:
            owners = dict(
                conn.execute(
                    "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'sicooperative'"
                ).fetchall()
            )
            assert owners == dict.fromkeys(
                ("associado", "conta", "cartao", "movimento"), names["DESAFIO_POSTGRES_USER"]
            )
            assert not conn.execute(
                "SELECT has_database_privilege(%s, %s, 'CONNECT')",
                (names["DESAFIO_POSTGRES_USER"], names["DAGSTER_POSTGRES_DB"]),
            ).fetchone()[0]
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (names["DAGSTER_POSTGRES_DB"],)
            ).fetchone()[0]
            assert owner == names["DAGSTER_POSTGRES_USER"]
        same = subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "DAGSTER_POSTGRES_DB": names["DESAFIO_POSTGRES_DB"]},
        )
        assert same.returncode != 0 and "different databases" in same.stderr
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for key in ("DAGSTER_POSTGRES_DB", "DESAFIO_POSTGRES_DB"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names[key])))
            for key in ("DAGSTER_POSTGRES_USER", "DESAFIO_POSTGRES_USER"):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(names[key])))
