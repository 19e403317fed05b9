"""A vantage6 4.15.2 server for one harness run: on the docker0 address, a fresh SQLite database."""
import json
import os
import secrets
import subprocess
import urllib.request
from pathlib import Path

from backends.gloo import free_port
from federation.shell import HarnessError, say, stop_process, tail, wait_until

API_PATH = "/api"
LAUNCHER = Path(__file__).with_name("v6.py")
ROOT_USER = ("root", "root")  # the server creates this account on its first start


class Service:
    """A vantage6 service of the harness (the server, the algorithm store), started by v6.py on one of this
    host's addresses from a JSON config, and up once its /version answers."""

    kind = "server"

    def __init__(self, python: Path, work: Path, host: str) -> None:
        self.python = python
        self.work = work
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}"
        self.log_path = work / f"{self.kind}.out"
        self.process: subprocess.Popen | None = None

    def api(self) -> str:
        return f"{self.url}:{self.port}{API_PATH}"

    def config(self) -> dict:
        """The service's configuration, less what every one has (`settings`)."""
        raise NotImplementedError

    def settings(self) -> dict:
        return {"ip": self.host, "port": self.port, "api_path": API_PATH,
                "uri": f"sqlite:///{self.work / f'{self.kind}.sqlite'}", "allow_drop_all": False,
                "logging": {"level": "WARNING", "file": f"{self.kind}.log", "use_console": True, "backup_count": 1,
                            "max_size": 1024, "format": "%(asctime)s %(name)s %(levelname)s %(message)s",
                            "datefmt": "%H:%M:%S", "loggers": []},
                **self.config()}

    def start(self) -> None:
        path = self.work / f"{self.kind}.yaml"
        path.write_text(json.dumps(self.settings()))  # YAML reads JSON
        say(f"starting the vantage6 {self.kind} on {self.api()}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.python), str(LAUNCHER), self.kind, str(path), self.host, str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(self.work)},
                start_new_session=True)
        wait_until(lambda: self.responds() or self.process.poll() is not None, 120, f"the {self.kind} to answer")
        if self.process.poll() is not None:
            raise HarnessError(f"the {self.kind} exited at start:\n{tail(self.log_path.read_text())}")

    def responds(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api()}/version", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Server(Service):
    """Node containers sit on Docker's bridge, so the server listens on the bridge's gateway address."""

    def config(self) -> dict:
        return {"description": "ppsdg federation harness", "jwt_secret_key": secrets.token_hex(32)}
