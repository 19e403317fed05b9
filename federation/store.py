"""vantage6 4.15.2's algorithm store beside the harness's server: ppsdg's `algorithm_store.json` is
submitted to it as an algorithm developer would, and the harness fails where the store refuses it."""
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import requests

from backends.gloo import free_port
from federation.server import API_PATH, LAUNCHER, ROOT_USER, Server
from federation.shell import HarnessError, say, stop_process, tail, wait_until

DESCRIPTION = Path(__file__).resolve().parents[1] / "algorithm_store.json"


class Store:
    """A store whose root user is the server's root: the store asks the server who a token belongs to."""

    def __init__(self, python: Path, work: Path, server: Server) -> None:
        self.python, self.work, self.server = python, work, server
        self.port = free_port(server.host)
        self.api = f"{server.url}:{self.port}{API_PATH}"
        self.log_path = work / "store.out"
        self.process: subprocess.Popen | None = None

    def config(self) -> dict:
        return {
            "description": "ppsdg federation harness store", "ip": self.server.host, "port": self.port,
            "api_path": API_PATH, "uri": f"sqlite:///{self.work / 'store.sqlite'}", "allow_drop_all": False,
            "root_user": {"v6_server_uri": self.server_api(), "username": ROOT_USER[0]},
            # the server is on a private address of this host; an algorithm is approved as it is submitted
            "policies": {"allow_localhost": True, "algorithm_view": "public"},
            "dev": {"host_uri": self.server.host, "disable_review": True},
            "logging": {"level": "WARNING", "file": "store.log", "use_console": True, "backup_count": 1,
                        "max_size": 1024, "format": "%(asctime)s %(name)s %(levelname)s %(message)s",
                        "datefmt": "%H:%M:%S", "loggers": []},
        }

    def server_api(self) -> str:
        return f"{self.server.url}:{self.server.port}{API_PATH}"

    def start(self) -> None:
        path = self.work / "store.yaml"
        path.write_text(json.dumps(self.config()))  # YAML reads JSON
        say(f"starting the vantage6 algorithm store on {self.api}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.python), str(LAUNCHER), "store", str(path), self.server.host, str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(self.work)},
                start_new_session=True)
        wait_until(lambda: self.responds() or self.process.poll() is not None, 120, "the store to answer")
        if self.process.poll() is not None:
            raise HarnessError(f"the algorithm store exited at start:\n{tail(self.log_path.read_text())}")

    def responds(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/version", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def submit(self) -> None:
        """algorithm_store.json, as the server's root (a developer of the store): refused is a failure."""
        token = requests.post(f"{self.server_api()}/token/user", timeout=30,
                              json={"username": ROOT_USER[0], "password": ROOT_USER[1]}).json()["access_token"]
        answer = requests.post(f"{self.api}/algorithm", json=json.loads(DESCRIPTION.read_text()), timeout=60,
                               headers={"Authorization": f"Bearer {token}", "Server-Url": self.server_api()})
        if answer.status_code != 201:
            raise HarnessError(f"the algorithm store refused algorithm_store.json: {answer.status_code} "
                               f"{answer.text[:3000]}")
        body = answer.json()
        say(f"algorithm store: algorithm_store.json accepted ({body['status']}, {len(body['functions'])} functions: "
            f"{', '.join(f['name'] for f in body['functions'])})")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
