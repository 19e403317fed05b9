"""vantage6 4.15.2's algorithm store beside the harness's server: ppsdg's `algorithm_store.json` is
submitted to it as an algorithm developer would, and the harness fails where the store refuses it."""
import json
from pathlib import Path

import requests

from federation.server import ROOT_USER, Server, Service
from federation.shell import HarnessError, say

DESCRIPTION = Path(__file__).resolve().parents[1] / "algorithm_store.json"


class Store(Service):
    """A store whose root user is the server's root: the store asks the server who a token belongs to."""

    kind = "store"

    def __init__(self, python: Path, work: Path, server: Server) -> None:
        super().__init__(python, work, server.host)
        self.server = server

    def config(self) -> dict:
        return {
            "description": "ppsdg federation harness store",
            "root_user": {"v6_server_uri": self.server.api(), "username": ROOT_USER[0]},
            # the server is on a private address of this host; an algorithm is approved as it is submitted
            "policies": {"allow_localhost": True, "algorithm_view": "public"},
            "dev": {"host_uri": self.server.host, "disable_review": True},
        }

    def submit(self) -> None:
        """algorithm_store.json, as the server's root (a developer of the store): refused is a failure."""
        token = requests.post(f"{self.server.api()}/token/user", timeout=30,
                              json={"username": ROOT_USER[0], "password": ROOT_USER[1]}).json()["access_token"]
        answer = requests.post(f"{self.api()}/algorithm", json=json.loads(DESCRIPTION.read_text()), timeout=60,
                               headers={"Authorization": f"Bearer {token}", "Server-Url": self.server.api()})
        if answer.status_code != 201:
            raise HarnessError(f"the algorithm store refused algorithm_store.json: {answer.status_code} "
                               f"{answer.text[:3000]}")
        body = answer.json()
        say(f"algorithm store: algorithm_store.json accepted ({body['status']}, {len(body['functions'])} functions: "
            f"{', '.join(f['name'] for f in body['functions'])})")
