"""The federation's accounts, made through the server's API as root: two organizations in a
collaboration, a node for each, and a researcher who may create tasks there.

Root's own organization is not in the collaboration, so root itself cannot create the task.
"""
import secrets
from dataclasses import dataclass

from vantage6.client import UserClient

from federation.server import API_PATH, ROOT_USER

RESEARCHER = "researcher"


@dataclass(frozen=True)
class Federation:
    collaboration: int
    organizations: list[int]
    node_names: list[str]
    api_keys: list[str]
    username: str
    password: str


def root_client(url: str, port: int) -> UserClient:
    client = UserClient(url, port, API_PATH, log_level="warn")
    client.authenticate(*ROOT_USER)
    client.setup_encryption(None)
    return client


def kill_rule(client: UserClient) -> int:
    """The rule to send kill signals in one's collaborations (event, collaboration, send), which the
    Researcher role lacks: main.py kills the rounds a training leaves running when it ends."""
    rules = client.rule.list(per_page=1000)["data"]
    return next(r["id"] for r in rules if r["name"] == "event" and r["scope"].lower() in ("collaboration", "col")
                and r["operation"].lower() in ("send", "s"))


def create(url: str, port: int, node_names: list[str]) -> Federation:
    client = root_client(url, port)
    organizations = [client.organization.create(name=f"ppsdg {name}", address1="-", address2="-", zipcode="-",
                                                country="-", domain=f"{name}.example")["id"]
                     for name in node_names]
    collaboration = client.collaboration.create(name="ppsdg federation", organizations=organizations,
                                                encrypted=False)["id"]
    api_keys = [client.node.create(collaboration=collaboration, organization=organization, name=name)["api_key"]
                for organization, name in zip(organizations, node_names)]
    role = next(r["id"] for r in client.role.list(name="Researcher")["data"] if r["name"] == "Researcher")
    password = secrets.token_urlsafe(16) + "aA1!"
    client.user.create(username=RESEARCHER, firstname="Re", lastname="Searcher", password=password,
                       email="researcher@example.org", organization=organizations[0], roles=[role],
                       rules=[kill_rule(client)])
    return Federation(collaboration, organizations, node_names, api_keys, RESEARCHER, password)
