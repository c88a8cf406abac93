"""sandboxlib's command line as a client of the daemon: ``ps``, ``logs``,
``stop``, ``kill``, ``rm``, ``exec``, ``attach``, ``inspect``, ``start``, ``create``
(and ``run -d``), to the daemon at ``SANDBOXLIB_HOST``, else at
``DOCKER_HOST`` when a sandboxlib daemon answers there, else at the
default socket."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional

from ..daemon import DaemonClient, DaemonError, NoDaemon, default_host, find_daemon

__all__ = ["add_parsers", "COMMANDS", "run_detached"]

HOW_TO_START = (
    "start one with `sandboxlib daemon` (as root its socket is {default}; "
    "or --host unix:///PATH and SANDBOXLIB_HOST=unix:///PATH)"
)


def add_parsers(sub) -> None:
    p = sub.add_parser("ps", help="list the daemon's containers (running; -a: all)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="ids only")
    p = sub.add_parser("logs", help="a container's output, from the daemon")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--tail", default="all", metavar="N")
    p.add_argument("container", metavar="CONTAINER")
    for name, help_text in (
        ("stop", "stop containers (SIGTERM, SIGKILL after -t seconds)"),
        ("start", "start containers"),
    ):
        p = sub.add_parser(name, help=help_text)
        if name == "stop":
            p.add_argument("-t", "--time", type=int, default=None, metavar="SECONDS")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = sub.add_parser("kill", help="send a signal to containers' main commands (default SIGKILL)")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="a running one too")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = sub.add_parser("attach", help="a running container's output until it ends, and its exit status")
    p.add_argument("-i", "--stdin", action="store_true", help="send your stdin to the container's (created with -i)")
    p.add_argument("container", metavar="CONTAINER")
    p = sub.add_parser("inspect", help="a container's JSON, as docker inspect")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p = sub.add_parser("exec", help="run a command in a running container of the daemon")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    p = sub.add_parser("create", help="create a container in the daemon (start it with start)")
    add_create_options(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")


def add_create_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--network", choices=["none", "host"], default="none")
    p.add_argument("--restart", default="no", metavar="POLICY", help="no, on-failure[:N], always, unless-stopped")
    p.add_argument("--rm", action="store_true", help="remove it when its main command ends")


def _client() -> DaemonClient:
    return find_daemon()


def _create_body(args: argparse.Namespace, image: str, cmd: List[str]) -> dict:
    policy, _, retries = (getattr(args, "restart", None) or "no").partition(":")
    return {
        "Image": image,
        "Cmd": cmd or None,
        "Env": list(args.env),
        "WorkingDir": args.workdir or "",
        "User": args.user or "",
        "HostConfig": {
            "NetworkMode": args.network,
            "PidMode": "" if getattr(args, "pid", "private") == "private" else args.pid,  # (the daemon checks it)
            "UTSMode": "" if getattr(args, "uts", "private") == "private" else args.uts,
            "AutoRemove": bool(getattr(args, "rm", False)),
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": int(retries or 0)},
        },
    }


def _create(args: argparse.Namespace) -> int:
    client = _client()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    query = {"name": args.name} if args.name else None
    print(client.call("POST", "/containers/create", query, _create_body(args, args.image, cmd))["Id"])
    return 0


def run_detached(args: argparse.Namespace, image: Optional[str], cmd: List[str]) -> int:
    """``sandboxlib run -d IMAGE [CMD]``: the daemon's container, created and started."""
    return _guarded(lambda a: _run_detached(a, image, cmd))(args)


def _run_detached(args: argparse.Namespace, image: Optional[str], cmd: List[str]) -> int:
    if image is None:
        print("sandboxlib: run -d needs an IMAGE (the daemon runs image containers)", file=sys.stderr)
        return 125
    client = _client()
    query = {"name": args.name} if getattr(args, "name", None) else None
    created = client.call("POST", "/containers/create", query, _create_body(args, image, cmd))
    client.call("POST", f"/containers/{created['Id']}/start")
    print(created["Id"])
    return 0


def _ps(args: argparse.Namespace) -> int:
    rows = _client().call("GET", "/containers/json", {"all": "1" if args.all else "0"})
    if args.quiet:
        for row in rows:
            print(row["Id"][:12])
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES")]
    for row in rows:
        command = row["Command"] if len(row["Command"]) <= 30 else row["Command"][:29] + "…"
        table.append((row["Id"][:12], row["Image"], json.dumps(command), row["Status"], row["Names"][0][1:]))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _logs(args: argparse.Namespace) -> int:
    query = {"stdout": "1", "stderr": "1", "follow": int(args.follow), "timestamps": int(args.timestamps)}
    query["tail"] = args.tail
    for stream, data in _client().stream(f"/containers/{args.container}/logs", query):
        out = sys.stderr if stream == 2 else sys.stdout
        out.buffer.write(data)
        out.flush()
    return 0


def _each(args: argparse.Namespace, request: Callable[[DaemonClient, str], None]) -> int:
    client, status = _client(), 0
    for name in args.containers:
        try:
            request(client, name)
            print(name)
        except DaemonError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            status = 1
    return status


def _stop(args: argparse.Namespace) -> int:
    query = {"t": args.time} if args.time is not None else None
    return _each(args, lambda c, n: c.call("POST", f"/containers/{n}/stop", query))


def _start(args: argparse.Namespace) -> int:
    return _each(args, lambda c, n: c.call("POST", f"/containers/{n}/start"))


def _kill(args: argparse.Namespace) -> int:
    return _each(args, lambda c, n: c.call("POST", f"/containers/{n}/kill", {"signal": args.signal}))


def _rm(args: argparse.Namespace) -> int:
    return _each(args, lambda c, n: c.call("DELETE", f"/containers/{n}", {"force": int(args.force)}))


def _inspect(args: argparse.Namespace) -> int:
    client = _client()
    print(json.dumps([client.call("GET", f"/containers/{n}/json") for n in args.containers], indent=4))
    return 0


def _attach(args: argparse.Namespace) -> int:
    client = _client()
    for stream, data in client.attach(args.container, sys.stdin.fileno() if args.stdin else None):
        out = sys.stderr if stream == 2 else sys.stdout
        out.buffer.write(data)
        out.flush()
    return int(client.call("POST", f"/containers/{args.container}/wait")["StatusCode"])


def _exec(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("sandboxlib: exec needs a command", file=sys.stderr)
        return 125
    env = dict(item.partition("=")[::2] for item in args.env)
    client = _client()
    for stream, data in client.exec(args.container, cmd, env=env):
        out = sys.stderr if stream == 2 else sys.stdout
        out.buffer.write(data)
        out.flush()
    for _ in range(100):  # its status is recorded a moment after its output ends
        code = client.call("GET", f"/exec/{client.last_exec}/json")
        if not code["Running"]:
            return int(code["ExitCode"] or 0)
        time.sleep(0.01)
    return 0


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except NoDaemon as err:
            print(f"sandboxlib: {err}: {HOW_TO_START.format(default=default_host())}", file=sys.stderr)
            return 125
        except DaemonError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            return 125 if err.status != 404 else 1

    return run


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    name: _guarded(fn)
    for name, fn in {
        "ps": _ps,
        "logs": _logs,
        "stop": _stop,
        "start": _start,
        "kill": _kill,
        "rm": _rm,
        "inspect": _inspect,
        "attach": _attach,
        "exec": _exec,
        "create": _create,
    }.items()
}
