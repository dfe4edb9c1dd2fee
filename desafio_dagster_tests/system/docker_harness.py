"""A private Docker engine for tests: Debian's dockerd with its own data root, exec root,
pidfile and socket, started and stopped by pid.

One private dockerd at a time per machine (two would fight over docker0 and the iptables
chains): the engine holds an exclusive flock on LOCK_FILE while it runs. Start a dockerd by
hand only under the same lock: `flock /tmp/desafio-dockerd.lock dockerd ...`.

The data root persists in DESAFIO_DOCKER_CACHE (default /var/tmp/desafio-docker): images
(the debootstrapped base image, images built on top of it) and named volumes are reused
across runs. Containers and networks are removed when the engine stops, and any left by a
killed run are removed when the next one starts; so is a dockerd that run left running (it
runs in its own session), found by the pidfile it keeps in the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = Path("/tmp/desafio-dockerd.lock")
CACHE = Path(os.environ.get("DESAFIO_DOCKER_CACHE", "/var/tmp/desafio-docker"))
BASE_TAG = "desafio-base:bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
START_TIMEOUT = 60
STOP_TIMEOUT = 30

log = logging.getLogger(__name__)


class DockerError(RuntimeError):
    """A docker command or the engine failed; the message holds its output."""


class DockerEngine:
    """dockerd on a private socket. Use as a context manager, or start() and stop()."""

    def __init__(self, cache: Path = CACHE):
        self.cache = cache
        self.data_root = cache / "data-root"
        self.pidfile = cache / "dockerd.pid"  # in the cache, not the run's folder: the next run finds it
        self.run_dir: Path | None = None  # exec root, socket and log: short paths under /tmp
        self.process: subprocess.Popen | None = None
        self._lock = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment for a docker CLI that talks to this engine."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise DockerError("the Docker harness starts its own dockerd and must run as root (e.g. sudo -E make test)")
        for tool in ("dockerd", "docker", "iptables"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                raise DockerError(f"{tool} not found: apt-get install docker.io iptables")
        self._take_lock()
        try:
            self._stop_orphan()
            self.data_root.mkdir(parents=True, exist_ok=True)
            self.run_dir = Path(tempfile.mkdtemp(prefix="desafio-dockerd-"))
            logfile = open(self.run_dir / "dockerd.log", "wb")
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.run_dir / "exec"),
                 "--pidfile", str(self.pidfile), "-H", f"unix://{self.socket}",
                 "--storage-driver", "overlay2"],
                stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
            )
            logfile.close()
            deadline = time.monotonic() + START_TIMEOUT
            while subprocess.run(["docker", "version"], env=self.env, capture_output=True).returncode != 0:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise DockerError(f"dockerd did not start within {START_TIMEOUT} s:\n{self.log_tail()}")
                time.sleep(0.2)
            self._remove_containers()  # left by a run that was killed
        except BaseException:
            self.stop()
            raise

    def _stop_orphan(self) -> None:
        """Stop, by the pid in its pidfile, a dockerd on this data root left running by a run that was
        killed (it runs in its own session, so it outlives the test process, and the lock died with it)."""
        try:
            pid = int(self.pidfile.read_text())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            return  # no pidfile, or its process is gone
        if "dockerd" not in Path(argv[0]).name or str(self.data_root) not in argv:
            return  # the pid was reused by another process
        log.warning("stopping dockerd %s, left on %s by a killed run", pid, self.data_root)
        os.kill(pid, signal.SIGTERM)  # dockerd stops its containers and its containerd
        deadline = time.monotonic() + STOP_TIMEOUT
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its own session: dockerd and containerd, if they did not stop
        exec_root = Path(argv[argv.index("--exec-root") + 1]) if "--exec-root" in argv else None
        if exec_root is not None and exec_root.parent.name.startswith("desafio-dockerd-"):  # a run folder of ours
            subprocess.run(["umount", "--recursive", "--lazy", str(exec_root)], capture_output=True)
            shutil.rmtree(exec_root.parent, ignore_errors=True)

    def _take_lock(self) -> None:
        self._lock = open(LOCK_FILE, "a")  # held (locked) until stop()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another private dockerd holds %s: waiting for it to stop", LOCK_FILE)
            print(f"waiting for {LOCK_FILE}: another private dockerd runs on this machine", flush=True)
            fcntl.flock(self._lock, fcntl.LOCK_EX)

    def run(self, *args: str, check: bool = True, timeout: float | None = None, input: str | None = None) -> str:
        """`docker <args>` against this engine; its stdout. Raises DockerError on failure."""
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
        return result.stdout

    def _remove_containers(self) -> None:
        containers = self.run("ps", "--all", "--quiet").split()
        if containers:
            self.run("rm", "--force", "--volumes", *containers, check=False)
        self.run("network", "prune", "--force", check=False)

    def log_tail(self, lines: int = 30) -> str:
        path = self.run_dir / "dockerd.log" if self.run_dir else None
        text = path.read_text(errors="replace") if path and path.exists() else "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Remove containers and networks, stop dockerd by pid, release the lock. Idempotent."""
        try:
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(Exception):
                    self._remove_containers()
                self.process.send_signal(signal.SIGTERM)  # dockerd stops its containerd too
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)  # its own session: dockerd and containerd
                    self.process.wait()
            self.process = None
            if self.run_dir is not None:
                subprocess.run(["umount", "--recursive", "--lazy", str(self.run_dir / "exec")], capture_output=True)
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self.run_dir = None
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None

    @contextlib.contextmanager
    def container(self, image: str, *args: str, name: str | None = None) -> Iterator[str]:
        """A container kept running (`sleep infinity`) for `docker exec`; removed afterwards."""
        options = ["--name", name] if name else []
        container_id = self.run("run", "--detach", *options, *args, image, "sleep", "infinity").strip()
        try:
            yield container_id
        finally:
            self.run("rm", "--force", "--volumes", container_id, check=False)


def running(pid: int) -> bool:
    """Whether process pid runs (a zombie, exited and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror of this machine's apt sources (deb822 or one-line format)."""
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]
    for file in files:
        if not file.exists():
            continue
        text = file.read_text()
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in uri and "debian" in uri:
                return uri
    return "http://deb.debian.org/debian"


def base_image(engine: DockerEngine) -> str:
    """A Debian bookworm image: $DESAFIO_BASE_IMAGE as is (e.g. debian:bookworm-slim where a
    registry is reachable), else desafio-base:bookworm, debootstrapped and imported once."""
    configured = os.environ.get("DESAFIO_BASE_IMAGE")
    if configured:
        return configured
    if engine.run("image", "inspect", BASE_TAG, check=False).strip() not in ("", "[]"):
        return BASE_TAG
    if not shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        raise DockerError("debootstrap not found (it builds the base image): apt-get install debootstrap, "
                          "or set DESAFIO_BASE_IMAGE=debian:bookworm-slim where a registry is reachable")
    mirror = apt_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=engine.cache) as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise DockerError(f"debootstrap bookworm from {mirror} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "--change", "CMD [\"bash\"]", "-", BASE_TAG],
                                  stdin=tar.stdout, env=engine.env, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerError(f"docker import of the bookworm rootfs failed: {imported.stderr[-3000:]}")
    log.warning("built %s from %s in %.0f s", BASE_TAG, mirror, time.monotonic() - started)
    return BASE_TAG


def extra_ca_args(bundle: Path = HOST_CA_BUNDLE) -> list[str]:
    """`docker run` options that hand a container the host's CA bundle as the project's
    EXTRA_CA_BUNDLE (what a user behind a TLS-intercepting proxy sets): none if there is none."""
    if not bundle.exists():
        return []
    return ["--volume", f"{bundle}:/etc/desafio/extra-ca-bundle.pem:ro", "--env", "EXTRA_CA_BUNDLE=/etc/desafio/extra-ca-bundle.pem"]
