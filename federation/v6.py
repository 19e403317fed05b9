"""vantage6's server and CLI as the harness runs them on this host, with two host fixes applied first.

Runs in the harness's own virtual environment (vantage6 4.15.2 CLI, server and algorithm store), never in
the project's:
    python v6.py server CONFIG HOST PORT
    python v6.py store CONFIG HOST PORT
    python v6.py cli node start --config FILE --user
"""
import enum
import sys


def not_in_docker() -> None:
    """This host has a /.dockerenv file: vantage6 would then take the host CLI for a container and put
    every node's files under /mnt, all nodes sharing one log."""
    from vantage6.common import context
    from vantage6.common.docker import addons

    addons.running_in_docker = context.running_in_docker = lambda: False


def format_enums_by_value() -> None:
    """Python 3.11 formats str-mixin enums by name; the 4.15.2 server builds its permission rules'
    attribute names with format() and answers HTTP 500 without the pre-3.11 behaviour."""
    original = enum.Enum.__format__

    def by_value(self: enum.Enum, spec: str) -> str:
        if self._member_type_ is object:
            return original(self, spec)
        return format(self._value_, spec)

    enum.Enum.__format__ = by_value


def serve(config: str, host: str, port: str) -> None:
    format_enums_by_value()
    from vantage6.server import run_dev_server, run_server

    run_dev_server(run_server(config, system_folders=False), host=host, port=int(port))


def serve_store(config: str, host: str, port: str) -> None:
    """The algorithm store, served as its official image's uWSGI would, with two differences for this host.
    It checks an algorithm's image by asking the image's registry for a digest, which no registry here
    can give: it gets a fixed one (what is checked is the description). And vantage6's client sends the
    store a `server_url` header, which gevent drops (as werkzeug does; uWSGI keeps it): this handler keeps
    it. (The store's own dev server calls a socketio the store does not have.)"""
    from gevent.pywsgi import WSGIHandler, WSGIServer

    import vantage6.algorithm.store.resource.algorithm as algorithm_resource
    from vantage6.algorithm.store import run_server

    algorithm_resource.get_digest = lambda *args, **kwargs: "sha256:" + "0" * 64

    class KeepUnderscoreHeaders(WSGIHandler):
        def _headers(self):
            for line in self.headers.headers:
                if line[:1] in " \t" or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                key = key.replace("-", "_").upper()
                if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                    yield "HTTP_" + key, value.strip()

    app = run_server(config, system_folders=False).app
    WSGIServer((host, int(port)), app, handler_class=KeepUnderscoreHeaders).serve_forever()


def cli(arguments: list[str]) -> int:
    from vantage6.cli.cli import cli_complete

    sys.argv = ["v6", *arguments]
    return cli_complete()


def main(arguments: list[str]) -> int:
    if arguments[0] in ("server", "store"):
        from gevent import monkey

        monkey.patch_all()  # before anything imports ssl, sockets or threads
    not_in_docker()
    if arguments[0] == "server":
        serve(*arguments[1:4])
        return 0
    if arguments[0] == "store":
        serve_store(*arguments[1:4])
        return 0
    return cli(arguments[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
