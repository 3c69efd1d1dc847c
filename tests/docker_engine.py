"""A real Docker engine for tests/test_docker.py (issue #23): find it, build the image once per session
(scripts/docker-offline.sh, cached), and drive one compose deployment on host folders.

`dockerd` runs with `--bridge=none --iptables=false` (scripts/test.sh starts it when root and absent);
containers use the host network through docker/docker-compose.offline.yml and listen on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "docker"
IMAGE = os.environ.get("MEMFS_TEST_IMAGE", "memfs:latest")
COMPOSE_FILES = "docker-compose.yml:docker-compose.secrets.yml:docker-compose.offline.yml"


def run(cmd, *, check=True, timeout=900, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def engine_problem() -> str | None:
    """Why the engine tests cannot run here (None: they can)."""
    if shutil.which("docker") is None:
        return "no docker client (scripts/test.sh installs docker.io when root)"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"no Docker engine answers ({r.stderr.strip()[:200]}); scripts/test.sh starts dockerd when root"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    if shutil.which("debootstrap") is None and subprocess.run(
            ["docker", "image", "inspect", "memfs-base:bookworm"], capture_output=True).returncode != 0:
        return "no debootstrap to build the base image (apt-get install debootstrap)"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when the plugin is there, else Compose v1's `docker-compose`."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def build_image() -> float:
    """scripts/docker-offline.sh once (the base image, wheelhouse and layers are cached); its seconds."""
    start = time.monotonic()
    run([str(REPO / "scripts" / "docker-offline.sh"), IMAGE], env={**os.environ, "PYTHON": sys.executable},
        cwd=REPO, timeout=3600)
    return time.monotonic() - start


def http(url, method="GET", body=None, token=None, timeout=60) -> tuple[int, object]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw.decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(every)
    what = what() if callable(what) else what  # e.g. the container's log, read only when it failed
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


class Deployment:
    """docker/docker-compose.yml + the secrets and offline overrides, on host folders under `host`."""

    def __init__(self, host: Path, port: int, project: str, token: str):
        self.host, self.port, self.project, self.token = host, port, project, token
        self.url = f"http://127.0.0.1:{port}"
        self.compose_cmd = compose_command()

    @property
    def env(self) -> dict:
        return {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "COMPOSE_FILE": COMPOSE_FILES,
                "MEMFS_HOST_DIR": str(self.host), "MEMFS_PORT": str(self.port)}

    def prepare(self) -> None:
        """The host folders and token file, as docs/deployment.md step 1 makes them."""
        for sub in ("data", "logs", "backups", "secrets"):
            (self.host / sub).mkdir(parents=True, exist_ok=True)
        token_file = self.host / "secrets" / "token"
        token_file.write_text(self.token + "\n")
        for p in [self.host, *self.host.rglob("*")]:
            os.chown(p, 1000, 1000)
        token_file.chmod(0o400)

    def compose(self, *args, check=True, env=None, timeout=600) -> subprocess.CompletedProcess:
        args = list(args)
        if args and args[0] == "exec" and "-T" not in args:
            args.insert(1, "-T")  # no TTY here (Compose v1 insists on one otherwise)
        return run([*self.compose_cmd, *args], check=check, cwd=DOCKER_DIR, env={**self.env, **(env or {})},
                   timeout=timeout)

    def container(self, service: str = "memfs") -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str = "memfs") -> dict:
        return json.loads(run(["docker", "inspect", self.container(service)]).stdout)[0]

    def wait_healthy(self, timeout: float = 300) -> None:
        def healthy():
            state = self.inspect()["State"]
            if state["Status"] in ("exited", "dead"):
                logs = self.compose("logs", "--tail", "40", "memfs", check=False).stdout
                raise AssertionError(f"the memfs container exited ({state.get('ExitCode')}):\n{logs}")
            return state.get("Health", {}).get("Status") == "healthy"

        wait_for(healthy, timeout, "the memfs service to be healthy", every=1.0)

    def api(self, path, method="GET", body=None, token: str | None = "default"):
        return http(self.url + path, method, body, token=self.token if token == "default" else token)

    def search(self, query: str, **extra) -> list[dict]:
        status, body = self.api("/search", "POST", {"query": query, **extra})
        assert status == 200, body
        return body["hits"]

    def manage(self, *args, check=True) -> subprocess.CompletedProcess:
        """`docker compose exec memfs python manage_data.py ARGS` (the store's owner is in there)."""
        return self.compose("exec", "memfs", "python", "manage_data.py", *args, check=check)

    def down(self) -> None:
        self.compose("down", "--remove-orphans", check=False, timeout=300)
