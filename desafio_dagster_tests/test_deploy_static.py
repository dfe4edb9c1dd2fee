"""Static checks of the deployment files (docker-compose.yml, docker/, .env.example, CI),
plus two checks against a real Postgres: docker/dagster.yaml loads as a Dagster instance
and the Postgres init script builds the databases the stack expects.

No Docker engine is needed: the files are parsed and cross-checked with each other, with
the package and with the installed Dagster and pyspark.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import uuid
import zipfile
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DAGSTER_YAML = ROOT / "docker" / "dagster.yaml"
DOCKER_WORKSPACE = ROOT / "docker" / "workspace.yaml"
INIT_DIR = ROOT / "docker" / "postgres-init"
ENV_EXAMPLE = ROOT / ".env.example"
CI = ROOT / ".github" / "workflows" / "ci.yml"
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


# Resolutions of the compose file to check: with .env.example, and with defaults only.
ENV_CASES = [pytest.param(None, id="env-example"), pytest.param({}, id="defaults")]


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


def loads_instance(service: dict) -> bool:
    argv = command(service)
    return bool(argv) and argv[0] in DAGSTER_EXECUTABLES


def service_running(java_class: str) -> tuple[str, dict]:
    found = [(name, svc) for name, svc in services().items() if java_class in command(svc)]
    assert len(found) == 1, f"expected one service running {java_class}, found {[n for n, _ in found]}"
    return found[0]


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            result.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
        else:
            result.append((str(entry.get("source", "")), str(entry["target"])))
    return result


def is_under(path: str, parent: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(parent))


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


def stage_env(stage: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in stage["instructions"]:
        if instruction == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


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
    lines = (ROOT / ".dockerignore").read_text().splitlines()
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


# --- compose: files, modules, images -----------------------------------------------------


def test_build_contexts_and_dockerfiles_exist():
    built = [svc for svc in services().values() if "build" in svc]
    assert built, "no service builds the project image"
    for svc in built:
        build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        context = ROOT / build.get("context", ".")
        assert context.is_dir(), f"build context {context} does not exist"
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    # The other app services run the image that service builds, not something pulled.
    images = {svc["image"] for svc in built}
    for name, svc in services().items():
        if not str(svc.get("image", "")).startswith("postgres:"):
            assert svc.get("image") in images, f"{name} runs {svc.get('image')}, not the project image"


def test_bind_mount_sources_exist_and_named_volumes_are_declared():
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for source, _ in mounts(svc):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind-mount source {source} does not exist"
            elif source:
                assert source in declared, f"{name}: volume {source} is not declared under volumes:"


def test_postgres_init_runs_the_package_schema_file():
    pg_name, pg = next((n, s) for n, s in services().items() if str(s.get("image", "")).startswith("postgres"))
    targets = dict((t, s) for s, t in mounts(pg))
    init_source = targets.get("/docker-entrypoint-initdb.d")
    assert init_source and (ROOT / init_source).resolve() == INIT_DIR.resolve()
    schema_mount = next((t for s, t in mounts(pg) if s.endswith("desafio_dagster/sql/schema.sql")), None)
    assert schema_mount, f"{pg_name} does not mount desafio_dagster/sql/schema.sql"
    scripts = sorted(INIT_DIR.glob("*.sh"))
    assert scripts, "no init script in docker/postgres-init"
    assert any(schema_mount in script.read_text() for script in scripts), (
        f"no init script reads {schema_mount}, where the schema file is mounted"
    )


def _modules_in(argv: list[str]) -> list[str]:
    if not argv:
        return []
    exe = PurePosixPath(argv[0]).name
    if exe in DAGSTER_EXECUTABLES or exe.startswith("python"):
        return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-m", "--module-name")]
    return []


def test_modules_named_in_commands_import():
    argvs = [command(s) for s in services().values()] + [healthcheck_argv(s) for s in services().values()]
    for stage in dockerfile_stages():
        for instruction, rest in stage["instructions"]:
            if instruction in ("CMD", "ENTRYPOINT") and rest.startswith("["):
                argvs.append(json.loads(rest))
    modules = {m for argv in argvs for m in _modules_in(argv)}
    assert "desafio_dagster.definitions" in modules, "no command serves the code location module"
    for module in sorted(modules):
        importlib.import_module(module)


def test_code_location_name_agrees_everywhere():
    names = {option(command(s), "--location-name") for s in services().values()} - {None}
    docker_ws = yaml.safe_load(DOCKER_WORKSPACE.read_text())["load_from"]
    root_ws = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    names |= {entry["grpc_server"]["location_name"] for entry in docker_ws}
    names |= {entry["python_module"]["location_name"] for entry in root_ws if "python_module" in entry}
    names.add(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["code_location_name"])
    assert names == {"desafio_dagster"}


# --- compose: wiring between services ----------------------------------------------------


def _dagster_yaml_env_vars() -> set[str]:
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(DAGSTER_YAML.read_text()))
    return found


def test_dagster_yaml_env_is_set_where_the_instance_is_loaded():
    needed = _dagster_yaml_env_vars()
    assert {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PASSWORD"} <= needed
    loaders = {name: svc for name, svc in services().items() if loads_instance(svc)}
    assert {"webserver", "daemon", "user-code"} <= set(loaders)
    for name, svc in loaders.items():
        missing = needed - set(raw_env(svc))
        assert not missing, f"{name} loads the Dagster instance but does not set {sorted(missing)}"


@pytest.mark.parametrize("values", ENV_CASES)
def test_dagster_storage_points_at_the_postgres_service_and_its_own_database(values):
    pg_env = service_env(services()["postgres"], values)
    assert str(services()["postgres"]["image"]).startswith("postgres:")
    for name, svc in services().items():
        if not loads_instance(svc):
            continue
        env = service_env(svc, values)
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres", name
        assert env["DAGSTER_POSTGRES_PORT"] == "5432", name
        # The init script creates exactly the role and database the instance connects to.
        for key in ("DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_DB"):
            assert env[key] == pg_env[key], f"{name}: {key} differs from the postgres service's"
        assert raw_env(svc)["DAGSTER_POSTGRES_PASSWORD"] == raw_env(services()["postgres"])["DAGSTER_POSTGRES_PASSWORD"]


@pytest.mark.parametrize("values", ENV_CASES)
def test_source_database_url_matches_the_init_and_is_not_dagster_storage(values):
    pg_env = service_env(services()["postgres"], values)
    users = [(n, s) for n, s in services().items() if "DESAFIO_POSTGRES_URL" in raw_env(s)]
    assert users, "no service gets DESAFIO_POSTGRES_URL"
    for name, svc in users:
        env = service_env(svc, values)
        url = urlsplit(env["DESAFIO_POSTGRES_URL"])
        assert url.scheme in ("postgresql", "postgres")
        assert url.password is None, f"{name}: the source URL must not embed the password"
        assert (url.hostname, url.port or 5432) == ("postgres", 5432)
        assert url.username == pg_env["DESAFIO_POSTGRES_USER"]
        assert url.path.lstrip("/") == pg_env["DESAFIO_POSTGRES_DB"]
        assert url.path.lstrip("/") != env.get("DAGSTER_POSTGRES_DB", pg_env["DAGSTER_POSTGRES_DB"])
        assert raw_env(svc)["PGPASSWORD"] == raw_env(services()["postgres"])["DESAFIO_POSTGRES_PASSWORD"]
        assert env["DESAFIO_SCHEMA"] == pg_env["DESAFIO_SCHEMA"]


def test_workspace_points_at_the_user_code_grpc_server():
    (entry,) = yaml.safe_load(DOCKER_WORKSPACE.read_text())["load_from"]
    grpc = entry["grpc_server"]
    assert grpc["host"] in services(), f"workspace host {grpc['host']} is not a compose service"
    server = command(services()[grpc["host"]])
    assert server[:3] == ["dagster", "code-server", "start"] or server[:3] == ["dagster", "api", "grpc"]
    assert option(server, "-p", "--port") == str(grpc["port"])
    assert option(server, "-h", "--host") == "0.0.0.0"
    assert option(healthcheck_argv(services()[grpc["host"]]), "-p", "--port") == str(grpc["port"])
    # The webserver and daemon read this file where the image puts it.
    final = dockerfile_stages()[-1]
    workspace_in_image = next(dest for srcs, dest, origin in copies(final) if srcs == ["docker/workspace.yaml"])
    for name in ("webserver", "daemon"):
        assert option(command(services()[name]), "-w", "--workspace") == workspace_in_image, name


def test_dagster_yaml_is_the_image_instance():
    final = dockerfile_stages()[-1]
    home = stage_env(final)["DAGSTER_HOME"]
    assert any(srcs == ["docker/dagster.yaml"] and dest == f"{home}/dagster.yaml" for srcs, dest, _ in copies(final))
    for name, svc in services().items():
        if loads_instance(svc):
            assert "DAGSTER_HOME" not in raw_env(svc) or raw_env(svc)["DAGSTER_HOME"] == home, name


def _published(entry) -> tuple[str | None, str, str]:
    if isinstance(entry, dict):
        return entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])
    parts = str(entry).split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None, parts[0] if len(parts) == 2 else "", parts[-1]


def test_published_ports_bind_to_loopback_only():
    for name, svc in services().items():
        for entry in svc.get("ports") or []:
            host_ip, _, _ = _published(entry)
            assert host_ip == "127.0.0.1", f"{name} publishes {entry} beyond 127.0.0.1"
    web = services()["webserver"]
    argv = command(web)
    assert argv[0] == "dagster-webserver" and option(argv, "-h", "--host") == "0.0.0.0"
    assert ("127.0.0.1", "3000", option(argv, "-p", "--port")) in [_published(e) for e in web["ports"]]


def test_depends_on_waits_for_healthy_services():
    edges = 0
    for name, svc in services().items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must say condition: service_healthy"
        for target, spec in depends.items():
            edges += 1
            assert (spec or {}).get("condition") == "service_healthy", f"{name} -> {target}"
            check = services()[target].get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{target} has no healthcheck"
            assert as_argv(check["test"])[:1] != ["NONE"], f"{target} has no healthcheck"
    assert edges >= 4


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


def test_spark_cluster_wiring():
    master_name, master = service_running("org.apache.spark.deploy.master.Master")
    _, worker = service_running("org.apache.spark.deploy.worker.Worker")
    margv = command(master)
    assert option(margv, "--host", "-h") == master_name
    master_url = f"spark://{master_name}:{option(margv, '--port', '-p')}"
    assert master_url in command(worker)
    drivers = [svc for svc in services().values() if "DESAFIO_SPARK_MASTER" in raw_env(svc)]
    assert drivers and all(service_env(svc)["DESAFIO_SPARK_MASTER"] == master_url for svc in drivers)
    webui = option(margv, "--webui-port")
    assert f"127.0.0.1:{webui}/" in " ".join(healthcheck_argv(master))


def test_spark_classes_and_launcher_exist_in_the_pyspark_wheel():
    pyspark = Path(importlib.import_module("pyspark").__file__).parent
    assert (pyspark / "bin" / "spark-class").is_file()
    classes = {arg for svc in services().values() for arg in command(svc) if arg.startswith("org.apache.spark.")}
    assert classes
    (core_jar,) = (pyspark / "jars").glob("spark-core_*.jar")
    with zipfile.ZipFile(core_jar) as jar:
        names = set(jar.namelist())
    for java_class in classes:
        assert java_class.replace(".", "/") + ".class" in names, java_class
    for svc in services().values():
        argv = command(svc)
        if any(a in classes for a in argv):
            assert argv[0] == "spark-class"


def test_driver_and_executors_share_staging_and_output():
    spark = [
        svc
        for svc in services().values()
        if "DESAFIO_SPARK_MASTER" in raw_env(svc) or any(a.startswith("org.apache.spark.deploy.") for a in command(svc))
    ]
    assert len(spark) >= 3
    paths = {(service_env(svc).get("DESAFIO_HOME"), service_env(svc).get("DESAFIO_OUTPUT_DIR")) for svc in spark}
    assert len(paths) == 1, f"DESAFIO_HOME/DESAFIO_OUTPUT_DIR differ between Spark services: {paths}"
    ((home, output),) = paths
    assert home and output
    shared = None
    for svc in spark:
        covering = {(s, t) for s, t in mounts(svc) if is_under(home, t) and is_under(output, t)}
        assert covering, "staging and output are not on a mounted volume"
        shared = covering if shared is None else shared & covering
    assert shared, "the Spark services do not mount the same volume at the same path"
    assert all(not s.startswith((".", "/")) for s, _ in shared)


# --- secrets -----------------------------------------------------------------------------


def test_env_file_is_git_ignored_and_example_lists_every_variable():
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert ignored & {".env", "/.env"}
    used = set(m.group(1) for m in _VAR.finditer(COMPOSE.read_text().replace("$$", "")))
    assert used, "compose uses no ${VAR}"
    missing = used - set(env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


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
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
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
    text = DOCKERFILE.read_text()
    assert not re.search(r"\b(curl|wget)\b", text)
    assert not re.search(r"\.(jar|tgz|tar\.gz|zip)\b", text), "Spark and its jars come from the pyspark wheel"
    for stage in dockerfile_stages():
        for instruction, rest in stage["instructions"]:
            assert not (instruction == "ADD" and "://" in rest), rest


def test_dockerfile_runtime_java_user_and_paths():
    final = dockerfile_stages()[-1]
    runs = " ".join(rest for instruction, rest in final["instructions"] if instruction == "RUN")
    assert re.search(r"\bopenjdk-(17|21)-jre-headless\b", runs)
    users = [rest.split(":")[0] for instruction, rest in final["instructions"] if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    env = stage_env(final)
    assert env.get("JAVA_HOME")
    venv = env["VIRTUAL_ENV"]
    assert any(srcs == [venv] and origin for srcs, _, origin in copies(final)), (
        "the venv is not copied from the builder"
    )
    assert env["PATH"].split(":")[0] == f"{venv}/bin"
    assert env["PYSPARK_PYTHON"] == f"{venv}/bin/python"
    python_version = re.match(r"python:(\d+\.\d+)", final["image"]).group(1)
    assert env["SPARK_HOME"] == f"{venv}/lib/python{python_version}/site-packages/pyspark"
    for key in ("DESAFIO_HOME", "DESAFIO_OUTPUT_DIR"):
        composed = {service_env(s).get(key) for s in services().values() if key in raw_env(s)}
        assert composed == {env[key]}, f"{key}: compose {composed} vs image {env[key]}"


# --- CI -----------------------------------------------------------------------------------


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


def test_dagster_yaml_loads_as_a_postgres_instance(dagster_storage_url, tmp_path):
    import dagster as dg
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert instance.get_runs() == []  # the tables were created in the new database
        # Storing an event sends a NOTIFY with a bound parameter, which the psycopg (3)
        # driver, SQLAlchemy 2.1's default for postgresql://, rejects.
        instance.report_runless_asset_event(dg.AssetMaterialization("deploy_test"))
        assert instance.get_latest_materialization_event(dg.AssetKey("deploy_test")) is not None
    finally:
        instance.dispose()
    with psycopg.connect(dagster_storage_url) as conn:
        assert conn.execute("SELECT to_regclass('runs') IS NOT NULL").fetchone()[0]


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
        "DESAFIO_SCHEMA_SQL": str(ROOT / "desafio_dagster" / "sql" / "schema.sql"),
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
