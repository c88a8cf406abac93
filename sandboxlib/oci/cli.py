"""``sandboxlib-runtime``: the OCI runtime command line, with runc's verbs,
flags and exit codes (1 and a message on stderr, and in ``--log`` as runc's
JSON lines with ``--log-format json``, where conmon and containerd's shim
read it).  Imports are lazy: a verb loads only what it uses."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any, List, NoReturn, Optional

__all__ = ["main"]


# The global options that take a value (the verb is the first word after them).
_VALUED = ("--root", "--log", "--log-format", "--rootless", "--criu")


def _verb_of(argv: List[str]) -> Optional[str]:
    """The verb's word in ``argv`` (None without one): its subparser is the only one
    :func:`_parser` needs to build (building them all is ~15 ms of each create)."""
    words = iter(argv)
    for word in words:
        if len(word) > 2 and "=" not in word and any(v.startswith(word) for v in _VALUED):
            next(words, None)  # (argparse takes an option's unambiguous prefix too)
        elif not word.startswith("-"):
            return word
    return None


class _Skipped:
    """A verb's parser :func:`_parser` leaves out: its arguments go nowhere."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its width from ``os.get_terminal_size``: argparse
    makes one per argument, and its own width's ``shutil`` (with bz2, lzma and
    fnmatch) is ~2 ms of each create."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS") or os.get_terminal_size(1).columns)
        except (ValueError, OSError):
            width = 80
        super().__init__(prog, width=width - 2)


def _parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line; with ``only`` (a known verb), that verb's subparser alone."""
    p = argparse.ArgumentParser(
        prog="sandboxlib-runtime", description="An OCI runtime built on sandboxlib.", formatter_class=_Formatter
    )
    p.add_argument("--version", "-v", action="store_true", help="print the version")
    p.add_argument(
        "--root",
        help="state directory (default /run/sandboxlib-runtime; rootless $XDG_RUNTIME_DIR/..., "
        "else /tmp/sandboxlib-runtime-UID/...)",
    )
    p.add_argument("--log", help="log file (errors, as runc writes them)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help="refused: cgroups are managed as cgroupfs")
    p.add_argument("--rootless", default="auto")
    p.add_argument("--criu", help=argparse.SUPPRESS)
    verbs = p.add_subparsers(dest="verb", metavar="COMMAND")

    def verb(name: str, help_text: str, with_id: bool = True) -> Any:
        if only is not None and name != only:
            return _Skipped()
        sub = verbs.add_parser(name, help=help_text, formatter_class=_Formatter)
        if with_id:
            sub.add_argument("id")
        return sub

    for name in ("create", "run"):
        sub = verb(name, "create a container" if name == "create" else "create and start, then wait for it")
        sub.add_argument("--bundle", "-b", default=".")
        sub.add_argument("--console-socket")
        sub.add_argument("--pid-file")
        sub.add_argument("--no-pivot", action="store_true")
        sub.add_argument("--no-new-keyring", action="store_true")
        sub.add_argument("--preserve-fds", type=int, default=0)
        if name == "run":
            sub.add_argument("--detach", "-d", action="store_true")
            sub.add_argument("--keep", action="store_true")
    sub = verb("start", "start the process of a created container")
    sub.add_argument("--reply", help=argparse.SUPPRESS)  # the front's failed START: STEP,ERRNO,INDEX
    verb("state", "print the state of a container (JSON)")
    sub = verb("kill", "send a signal to the container's init")
    sub.add_argument("signal", nargs="?", default="SIGTERM")
    sub.add_argument("--all", "-a", action="store_true")
    sub = verb("delete", "delete a container")
    sub.add_argument("--force", "-f", action="store_true")
    sub = verb("exec", "run a process in a container")
    sub.add_argument("--process", "-p")
    sub.add_argument("--detach", "-d", action="store_true")
    sub.add_argument("--tty", "-t", action="store_true")
    sub.add_argument("--console-socket")
    sub.add_argument("--pid-file")
    sub.add_argument("--cwd")
    sub.add_argument("--env", "-e", action="append", default=[])
    sub.add_argument("--user", "-u")
    sub.add_argument("--cap", action="append", default=[])
    sub.add_argument("--no-new-privs", action="store_true")
    sub.add_argument("--preserve-fds", type=int, default=0)
    sub.add_argument("--process-label")
    sub.add_argument("--apparmor")
    sub.add_argument("command", nargs=argparse.REMAINDER)
    sub = verb("ps", "list the container's processes")
    sub.add_argument("--format", "-f", choices=("table", "json"), default="table")
    sub.add_argument("ps_args", nargs=argparse.REMAINDER)
    sub = verb("events", "container statistics (--stats: once)")
    sub.add_argument("--stats", action="store_true")
    sub.add_argument("--interval", default="5s")
    sub = verb("update", "change the container's cgroup limits")
    sub.add_argument("--resources", "-r")
    sub.add_argument("--memory")
    sub.add_argument("--pids-limit", type=int)
    sub.add_argument("--cpu-quota", type=int)
    sub.add_argument("--cpu-period", type=int)
    sub.add_argument("--cpu-share", type=int)
    verb("features", "what this runtime implements (JSON)", with_id=False)
    sub = verb("spec", "write a default config.json", with_id=False)
    sub.add_argument("--bundle", "-b", default=".")
    sub.add_argument("--rootless", action="store_true")
    sub = verb("list", "list containers", with_id=False)
    sub.add_argument("--format", "-f", choices=("table", "json"), default="table")
    sub.add_argument("--quiet", "-q", action="store_true")
    if only is not None and only not in verbs.choices:
        return _parser()  # not a verb: argparse's own message, with the list of them
    return p


class _Log:
    def __init__(self, path: Optional[str], fmt: str) -> None:
        self.path, self.fmt = path, fmt

    def error(self, message: str) -> None:
        print(f"sandboxlib-runtime: {message}", file=sys.stderr)
        if not self.path:
            return
        from .control import now as timestamp

        now = timestamp()
        if self.fmt == "json":
            line = json.dumps({"level": "error", "msg": message, "time": now})
        else:
            line = f'time="{now}" level=error msg="{message}"'
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def _fail(log: _Log, message: str) -> NoReturn:
    log.error(message)
    sys.exit(1)


def main(argv: Optional[List[str]] = None) -> None:
    # A command of milliseconds (the verbs that wait allocate little): no cyclic
    # collections while a verb's imports build their classes (~5% of create's CPU).
    gc.disable()
    args = _parser(_verb_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    log = _Log(args.log, args.log_format)
    if args.version:
        from ..version import __version__

        print(f"sandboxlib-runtime version {__version__}\nspec: 1.1.0")
        return
    if args.verb is None:
        _fail(log, "no command given (see --help)")
    if args.systemd_cgroup:
        _fail(log, "--systemd-cgroup is not supported: this runtime manages cgroups itself (use cgroupfs)")
    from ..errors import SandboxError
    from .state import NotFound, default_root

    root = args.root or default_root()
    try:
        code = _run_verb(args, root)
    except NotFound as err:
        _fail(log, f"container does not exist: {err}")
    except (SandboxError, OSError) as err:
        _fail(log, str(err))
    sys.exit(code)


def _run_verb(args: argparse.Namespace, root: str) -> int:
    verb = args.verb
    if verb == "features":
        from .features import features

        print(json.dumps(features(), indent=2))
        return 0
    if verb == "spec":
        from .default_spec import write_spec

        write_spec(args.bundle, rootless=args.rootless)
        return 0
    from . import control

    if verb == "list":
        states = [control.state(root, i) for i in control.list_ids(root)]
        if args.format == "json":
            print(json.dumps(states))
        else:
            print("\n".join(s["id"] for s in states) if args.quiet else _table(states))
        return 0
    if verb in ("create", "run"):
        if args.preserve_fds:
            from ..errors import UnsupportedError

            raise UnsupportedError("--preserve-fds", "only stdio reaches the container's process")
        from . import lifecycle

        lifecycle.create(root, args.id, args.bundle, pid_file=args.pid_file, console_socket=args.console_socket)
        if verb == "create":
            return 0
        control.start(root, args.id)
        if args.detach:
            return 0
        code = control.wait_exit(root, args.id)
        if not args.keep:
            control.delete(root, args.id, force=True)
        return code
    if verb == "start" and args.reply:
        step, err, index = (int(n) for n in args.reply.split(","))
        control.start_failed(step, err, index)
    elif verb == "start":
        control.start(root, args.id)
    elif verb == "state":
        print(control.state_text(control.state(root, args.id)))
    elif verb == "kill":
        control.kill(root, args.id, signal_number(args.signal), all_processes=args.all)
    elif verb == "delete":
        control.delete(root, args.id, force=args.force)
    elif verb == "exec":
        from . import lifecycle

        return lifecycle.exec_process(
            root,
            args.id,
            _exec_process(args, root),
            detach=args.detach,
            pid_file=args.pid_file,
            console_socket=args.console_socket,
        )
    elif verb == "ps":
        pids = control.ps(root, args.id)
        if args.format == "json":
            print(json.dumps(pids))
        elif pids:
            import subprocess

            subprocess.run(["ps", *(args.ps_args or ["-f"]), "-p", ",".join(map(str, pids))], check=False)
    elif verb == "events":
        if not args.stats:
            from ..errors import UnsupportedError

            raise UnsupportedError("events without --stats", "only one-shot statistics (--stats) are implemented")
        print(json.dumps(control.stats(root, args.id)))
    elif verb == "update":
        from . import lifecycle

        lifecycle.update(root, args.id, _resources(args))
    return 0


def signal_number(name: str) -> int:
    """ "TERM", "SIGTERM", "15" -> 15 (runc's forms)."""
    import signal

    from ..errors import ConfigError

    text = name.upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise ConfigError("signal", f"unknown signal {name!r}") from None


def _table(states: list) -> str:
    rows = [f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE'}"]
    rows += [f"{s['id']:<20} {s['pid']:<8} {s['status']:<10} {s['bundle']}" for s in states]
    return "\n".join(rows)


def _resources(args: argparse.Namespace) -> dict:
    from ..errors import ConfigError

    if args.resources:
        source = sys.stdin if args.resources == "-" else open(args.resources)
        with source:
            try:
                return json.load(source)
            except ValueError as err:  # (JSONDecodeError, UnicodeDecodeError)
                raise ConfigError("--resources", f"not JSON: {err}") from None
    resources: dict = {}
    if args.memory:
        from ..config.values import parse_size  # (bytes, or runc's units: 64m)

        resources["memory"] = {"limit": parse_size(args.memory, "--memory")}
    if args.pids_limit is not None:
        resources["pids"] = {"limit": args.pids_limit}
    if args.cpu_quota is not None or args.cpu_share is not None:
        resources["cpu"] = {"quota": args.cpu_quota, "period": args.cpu_period, "shares": args.cpu_share}
    return resources


def _exec_process(args: argparse.Namespace, root: str):
    """``--process FILE`` or the command line (with the container's own process as the base, as runc)."""
    from .spec import parse_process

    if args.process:
        with open(args.process) as f:
            return parse_process(json.load(f), "process.")
    from .state import ContainerDir

    cdir = ContainerDir(root, args.id)
    bundle = cdir.read()["bundle"]
    with open(os.path.join(bundle, "config.json")) as f:
        base = dict(json.load(f)["process"])
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    base["args"] = command
    base["terminal"] = args.tty
    if args.cwd:
        base["cwd"] = args.cwd
    if args.env:
        base["env"] = list(base.get("env") or []) + args.env
    if args.no_new_privs:
        base["noNewPrivileges"] = True
    if args.user:
        uid, _, gid = args.user.partition(":")
        base["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    return parse_process(base, "process.")
