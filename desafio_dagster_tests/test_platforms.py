"""Platform honesty: the package loads on any OS; make names the supported platforms elsewhere."""

import os
import subprocess
import sys

from desafio_dagster_tests.helpers import REPO


def test_the_definitions_load_without_posix_only_modules():
    """What a Windows interpreter lacks (fcntl) is imported only where it is used."""
    script = "import sys; sys.modules['fcntl'] = None; import desafio_dagster.definitions; print('loaded')"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "loaded", out.stderr[-2000:]


def test_setup_refuses_an_unsupported_platform_in_one_line(tmp_path):
    fake_uname = tmp_path / "uname"
    fake_uname.write_text("#!/bin/sh\necho MINGW64_NT-10.0\n")
    fake_uname.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", str(REPO / "scripts" / "setup"), "java"], env=env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "unsupported platform MINGW64_NT-10.0" in out.stderr and "WSL2" in out.stderr
