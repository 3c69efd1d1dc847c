"""docker/: no Docker engine runs here, so the compose file is parsed and checked, and the container's
exact entrypoint runs as a subprocess with the compose file's environment."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from test_server import call, free_port, wait_until

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def defaults(text: str) -> str:
    """Resolve compose's ${VAR:-default} the way compose does when VAR is unset."""
    while "${" in text:
        text = re.sub(r"\$\{[A-Z_]+:-([^${}]*)\}", r"\1", text)
    return text


def test_compose_mounts_ports_and_backup(compose):
    svc = compose["services"]["memfs"]
    assert [p for p in svc["ports"] if p.startswith("127.0.0.1:")] == svc["ports"]
    mounts = {defaults(v).rsplit(":", 1)[0]: defaults(v).rsplit(":", 1)[1] for v in svc["volumes"]}
    assert mounts == {"/opt/memory-system/data": "/opt/memory-system/data",
                      "/opt/memory-system/logs": "/opt/memory-system/data/logs",
                      "/opt/memory-system/backups": "/opt/memory-system/backups"}
    backup = compose["services"]["backup"]
    assert backup["entrypoint"] == ["backup-loop.sh"] and backup["environment"]["MEMFS_URL"] == "http://memfs:3000"
    assert backup["depends_on"]["memfs"]["condition"] == "service_healthy"
    loop = (DOCKER / "backup-loop.sh").read_text()
    assert "--keep-daily 7 --keep-weekly 4 --keep-monthly 12" in loop and ">&2" in loop


def test_dockerfile_runs_as_uid_1000_with_healthcheck():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "USER 1000" in text and "HEALTHCHECK" in text and "/health" in text
    assert 'ENTRYPOINT ["entrypoint.sh"]' in text and "HF_HUB_OFFLINE=1" in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_when_available(tmp_path):
    r = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if r.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    r = subprocess.run(["docker", "compose", "-f", str(DOCKER / "docker-compose.yml"), "config", "-q"],
                       env={**os.environ, "MEMFS_API_TOKEN": "x" * 32}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


TOKEN = "compose-token-for-the-test-0123"  # tokens under 16 characters are refused (#15)


def test_entrypoint_serves_with_the_compose_environment(compose, tmp_path):
    env = {k: str(v) for k, v in compose["services"]["memfs"]["environment"].items()}
    env.update(MEMFS_API_TOKEN=TOKEN)
    # Differences from the container, for this sandbox: the root is a temp dir, not the volume, and
    # tests bind loopback only.
    env.update(MEMFS_ROOT=str(tmp_path / "opt-memory-system"), MEMFS_HOST="127.0.0.1", MEMFS_PORT=str(free_port()))
    venv_bin = str(Path(os.sys.executable).parent)
    full_env = {**os.environ, **env, "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    full_env.pop("MEMFS_URL", None)
    p = subprocess.Popen([str(DOCKER / "entrypoint.sh")], env=full_env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{env['MEMFS_PORT']}"
    try:
        wait_until(lambda: call(url + "/health")[0] == 200, what="entrypoint healthy")
        # Unauthenticated, /health says status and version only (#15); its details need the token.
        assert call(url + "/health")[1].get("index") is None
        assert call(url + "/health", token=TOKEN)[1]["index"]["watcher"] == "polling"
        assert call(url + "/stats")[0] == 401
        assert call(url + "/stats", token=TOKEN)[0] == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
