"""``sandboxlib`` command line (also ``python -m sandboxlib``).

    sandboxlib [--version]
    sandboxlib run [--rootfs DIR] [--hostname H] [-e K=V] [--env-file FILE] [-v SRC:DST[:ro]]
                   [--tmpfs DST[:SIZE]] [--read-only] [--user U] [--workdir DIR]
                   [--network none|host] [--pid private|host] [--uts private|host]
                   [--no-userns] [--cap-add CAP] [--cap-drop CAP] [--timeout S]
                   [--security-opt seccomp=PROFILE.json|unconfined]
                   [--memory SIZE] [--memory-swap SIZE] [--cpus N] [--cpu-shares N]
                   [--pids-limit N] [--cpuset-cpus LIST] [--ulimit NAME=SOFT[:HARD]]
                   [--device-cgroup-rule RULE] [--cpu-rt-period US] [--cpu-rt-runtime US] -- CMD...
    sandboxlib run -it [OPTIONS] [IMAGE] [--] CMD...   (a terminal: raw mode, window size, ^C)
    sandboxlib run [OPTIONS] [--store DIR] [--writable-layer disk|tmpfs] [--writable-layer-size SIZE]
                   [--pull missing|always|never] IMAGE [CMD...]   (the image's root and config)
    sandboxlib images | load -i FILE | save -o FILE IMAGE... | import [-c INSTR] FILE [REF] | rmi IMAGE...
    sandboxlib daemon [--host unix:///PATH] [--group G] [--store DIR]   (Docker's Engine API)
    sandboxlib run -d [--name N] IMAGE [CMD...] | ps | logs | stop | kill | rm | exec | attach | inspect | start
               | create
                   (clients of the daemon: SANDBOXLIB_HOST, else DOCKER_HOST, else its default socket)

The exit status is the command's (128+N when killed by signal N, 124 on a
timeout, 125 when the container could not be set up, 126/127 when the
command cannot be executed / was not found), as with ``docker run``
(``run --help`` lists them).  ``run echo hi`` without ``--`` takes ``echo``
for an image: when there is none and ``echo`` is a command here, the error
says to put it after ``--``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from typing import List, Optional, Sequence

from ..api import run
from ..config import RLIMITS, BridgeNetwork, Limits, Mount, Pull, WritableLayer, parse_publish
from ..errors import CommandNotFoundError, ConfigError, ImageNotFound, SandboxError, SetupError
from ..results import Verdict
from ..security import DEFAULT, Seccomp, SeccompOption
from ..version import __version__
from . import buildcli, clientcli, daemoncli, imagecli, netcli
from .terminal import run_on_terminal

EXIT_TIMEOUT, EXIT_SETUP, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND = 124, 125, 126, 127
_VERDICT_TEXT = {
    Verdict.OOM: "killed: out of memory (--memory)",
    Verdict.PIDS_LIMIT: "the pids limit refused a fork (--pids-limit)",
    Verdict.SECCOMP: "killed by the seccomp policy (SIGSYS)",
    Verdict.FSIZE: "killed: file size limit exceeded (--ulimit fsize)",
    Verdict.CPU_TIME: "killed: CPU time limit exceeded (--ulimit cpu)",
}


def _env(items: Sequence[str]) -> dict:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--env", f"{item!r} is not NAME=VALUE")
        env[name] = value
    return env


def _env_file(paths: Sequence[str]) -> dict:
    """``--env-file``: NAME=VALUE lines (``#`` comments and blank lines
    skipped); a bare NAME takes this process's value if it has one, as
    ``docker run --env-file``."""
    env = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError("--env-file", f"{path!r}: {err}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not name:
                raise ConfigError("--env-file", f"{path}:{number}: {line!r} is not NAME=VALUE")
            if sep:
                env[name] = value
            elif name in os.environ:
                env[name] = os.environ[name]
    return env


def _volume(spec: str) -> Mount:
    """SRC:DST[:OPTIONS], OPTIONS a comma-separated list of ro, rw and idmap (as Podman's)."""
    parts = spec.split(":")
    options = parts[2].split(",") if len(parts) == 3 else []
    if len(parts) not in (2, 3) or not set(options) <= {"ro", "rw", "idmap"} or {"ro", "rw"} <= set(options):
        raise ConfigError(
            "--volume",
            f"{spec!r} is not SRC:DST[:OPTIONS] with OPTIONS one or more of ro (or rw) and idmap, separated by commas",
        )
    with _option("--volume", spec):
        mount = Mount.bind(parts[0], parts[1], read_only="ro" in options, idmap="idmap" in options)
        mount.check("mount")
    return mount


def _tmpfs(spec: str) -> Mount:
    target, _, size = spec.partition(":")
    with _option("--tmpfs", spec):
        mount = Mount.tmpfs(target, size=size or None)
        mount.check("mount")
    return mount


def _security_opts(items: Sequence[str]) -> SeccompOption:
    """``seccomp=unconfined`` (None) or ``seccomp=PROFILE.json``, as ``docker run``."""
    policy: SeccompOption = DEFAULT
    for item in items:
        key, sep, value = item.partition("=")
        if key != "seccomp" or not sep or not value:
            raise ConfigError("--security-opt", f"{item!r} is not seccomp=unconfined or seccomp=PROFILE.json")
        if value == "unconfined":
            policy = None
            continue
        try:
            policy = Seccomp.from_json(value)
        except ConfigError as err:
            raise ConfigError("--security-opt", f"{item}: {err}") from None
    return policy


@contextlib.contextmanager
def _option(option: str, value: str):
    """Name the command-line option (not the library's field) in errors."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(option, f"{value!r}: {err.message}") from None


def _limits(args: argparse.Namespace) -> Limits:
    values: dict = {}
    for spec in args.ulimit:
        name, sep, value = spec.partition("=")
        soft, _, hard = value.partition(":")
        if not sep or name not in RLIMITS or not soft:
            raise ConfigError("--ulimit", f"{spec!r} is not NAME=SOFT[:HARD] with NAME one of {', '.join(RLIMITS)}")
        values[name] = (_number(soft), _number(hard or soft))
    cgroup = {
        "memory": args.memory,
        "memory_swap": args.memory_swap,
        "cpus": args.cpus,
        "cpu_shares": args.cpu_shares,
        "pids": args.pids_limit,
        "cpuset_cpus": args.cpuset_cpus,
        "device_rules": args.device_cgroup_rule or None,
        "cpu_rt_period_us": args.cpu_rt_period,
        "cpu_rt_runtime_us": args.cpu_rt_runtime,
    }
    values.update({k: v for k, v in cgroup.items() if v is not None})
    return Limits.from_dict(values)


def _number(text: str):
    """An rlimit value: an int, or a size such as 100M (checked by Limits)."""
    return int(text) if text.isdigit() else text


# Configuration fields and the options that set them, for error messages.
_OPTIONS = {
    "hostname": "--hostname",
    "env": "--env",
    "user": "--user",
    "cwd": "--workdir",
    "rootfs": "--rootfs",
    "userns": "--no-userns",
    "cap_add": "--cap-add",
    "cap_drop": "--cap-drop",
    "network": "--network",
    "pid_namespace": "--pid",
    "uts_namespace": "--uts",
    "ports": "--publish",
    "name": "--name",
    "egress": "--egress",
    "extra_hosts": "--add-host",
    "image": "IMAGE",
    "argv": "CMD",
    "timeout": "--timeout",
    "writable_layer_size": "--writable-layer-size",
    "limits.memory": "--memory",
    "limits.memory_swap": "--memory-swap",
    "limits.cpus": "--cpus",
    "limits.cpu_shares": "--cpu-shares",
    "limits.pids": "--pids-limit",
    "limits.cpuset_cpus": "--cpuset-cpus",
    "limits.device_rules": "--device-cgroup-rule",
    "limits.cpu_rt_period_us": "--cpu-rt-period",
    "limits.cpu_rt_runtime_us": "--cpu-rt-runtime",
    "tty": "--tty",
    "rows": "--tty",
    "cols": "--tty",
    **{f"limits.{n}": "--ulimit" for n in RLIMITS},
}


RUN_EPILOG = f"""exit status: the command's (128+N when killed by signal N), or
  {EXIT_TIMEOUT}  the --timeout expired (everything in the container was killed)
  {EXIT_SETUP}  the container could not be set up (or an option is wrong)
  {EXIT_CANNOT_EXEC}  the command cannot be executed
  {EXIT_NOT_FOUND}  the command was not found"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandboxlib", description="Run commands in Linux containers.")
    parser.add_argument("--version", action="version", version=f"sandboxlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run",
        help="run a command in a fresh container",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rootfs", help="host directory to use as the root (default: a read-only host view)")
    p.add_argument("--hostname")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="NAME=VALUE lines (a bare NAME: this environment's value); -e wins",
    )
    p.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="SRC:DST[:ro,idmap]",
        help="bind the host path SRC at DST; ro: read-only; idmap: as root, files keep their host "
        "owners inside and what the container's root writes belongs to the host's root "
        "(see Mount.bind)",
    )
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST[:SIZE]")
    p.add_argument("--read-only", action="store_true", help="make the root read-only")
    p.add_argument("-u", "--user", help="uid[:gid] or name[:group] inside the container")
    p.add_argument("-w", "--workdir", help="working directory inside the container (default: the image's, or /)")
    p.add_argument(
        "--network",
        default="none",
        metavar="none|host|bridge|NAME",
        help="none (only lo), host, bridge (NAT; rootless: pasta) or a named network (`sandboxlib network create`)",
    )
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:]HOSTPORT:PORT[/udp]",
        help="publish a port of a bridge network's container (on 127.0.0.1 unless IP is given)",
    )
    p.add_argument("--name", help="the container's name (its DNS name on its network; with -d: its name in the daemon)")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line of /etc/hosts (bridge)")
    p.add_argument(
        "--egress",
        action="append",
        default=[],
        metavar="RULE",
        help="with --network bridge: allow only these destinations (CIDR, IP, NAME, *.DOMAIN, each [:PORT[/udp]])",
    )
    p.add_argument(
        "--pid",
        default="private",
        metavar="private|host",
        help="host: the host's pid namespace (its processes seen, /proc the host's; see pid_namespace)",
    )
    p.add_argument("--uts", default="private", metavar="private|host", help="host: the host's hostname (unchangeable)")
    p.add_argument("--no-userns", action="store_true", help="as root: no user namespace (real root inside)")
    p.add_argument(
        "--cap-add",
        action="append",
        default=[],
        metavar="CAP",
        help="add a capability to the default set (e.g. NET_RAW, ALL)",
    )
    p.add_argument(
        "--cap-drop",
        action="append",
        default=[],
        metavar="CAP",
        help="drop a capability from the default set (e.g. CHOWN, ALL)",
    )
    p.add_argument("--timeout", type=float, help="kill everything after this many seconds")
    p.add_argument(
        "--security-opt",
        action="append",
        default=[],
        metavar="seccomp=PROFILE.json|unconfined",
        help="a Docker seccomp profile instead of the default one, or none",
    )
    p.add_argument("--memory", help="memory limit of the container, e.g. 256M")
    p.add_argument("--memory-swap", help="memory plus swap limit (-1: unlimited swap)")
    p.add_argument("--cpus", type=float, help="CPU quota as a number of CPUs, e.g. 1.5")
    p.add_argument("--cpu-shares", type=int, help="relative CPU weight (2-262144, default 1024)")
    p.add_argument("--pids-limit", type=int, help="most processes and threads at once")
    p.add_argument("--cpuset-cpus", help="CPUs it may use, e.g. 0-1,3")
    p.add_argument(
        "--device-cgroup-rule",
        action="append",
        default=[],
        metavar="RULE",
        help="allow a device beyond the default ones, e.g. 'c 7:128 rwm' (only those then; as root)",
    )
    p.add_argument("--cpu-rt-period", type=int, metavar="US", help="real-time CPU period in microseconds")
    p.add_argument("--cpu-rt-runtime", type=int, metavar="US", help="real-time CPU time per period in microseconds")
    p.add_argument(
        "--ulimit",
        action="append",
        default=[],
        metavar="NAME=SOFT[:HARD]",
        help=f"an rlimit of every process ({', '.join(RLIMITS)})",
    )
    imagecli.add_store_option(p)
    p.add_argument(
        "--writable-layer",
        choices=[w.value for w in WritableLayer],
        default="disk",
        help="where an image container's writes go: the store (default) or a tmpfs",
    )
    p.add_argument("--writable-layer-size", metavar="SIZE", help="size limit of a tmpfs writable layer, e.g. 256M")
    p.add_argument(
        "--pull",
        choices=[w.value for w in Pull],
        default="missing",
        help="pull the image from its registry: when the store lacks it (default), always, never",
    )
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="keep stdin open (it is passed without a terminal anyway; with -t: typed into its terminal)",
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run IMAGE in the daemon's container, in the background (needs `sandboxlib daemon`)",
    )
    p.add_argument("--restart", default="no", help="with -d: no, on-failure[:N], always, unless-stopped")
    p.add_argument("--rm", action="store_true", help="with -d: the daemon removes it when it ends")
    p.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the command a terminal, wired to this one (raw mode, window size, ^C)",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD... | IMAGE [CMD...]")
    imagecli.add_parsers(sub)
    netcli.add_parsers(sub)
    buildcli.add_parsers(sub)
    daemoncli.add_parser(sub)
    clientcli.add_parsers(sub)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)  # its errors show its own usage
    return parser


def _host_entry(text: str) -> tuple:
    name, colon, address = text.partition(":")
    if not colon:
        raise ConfigError("extra_hosts", f"expected NAME:IP, got {text!r}")
    return name, address


def _run(args: argparse.Namespace) -> int:
    image = None
    if args.cmd[:1] == ["--"]:
        cmd: List[str] = args.cmd[1:]
    elif args.cmd:  # IMAGE [--] [CMD...]
        image, cmd = args.cmd[0], args.cmd[1:]
        cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    else:
        cmd = []
    if not cmd and image is None:
        raise ConfigError("CMD", "give the command to run after --, or an image")
    if args.detach:
        return clientcli.run_detached(args, image, cmd)
    try:
        return _run_in_container(args, image, cmd)
    except ImageNotFound as err:
        if image is not None and err.reference == image and shutil.which(image):
            raise ConfigError(
                "image",
                f"no image {image!r} in the store, and {image!r} is a command on this "
                f"host: to run it, put it after --: "
                f"sandboxlib run [OPTIONS] -- {' '.join([image, *cmd])}",
            ) from None
        raise


def _run_in_container(args: argparse.Namespace, image: Optional[str], cmd: List[str]) -> int:
    mounts = [_volume(v) for v in args.volume] + [_tmpfs(t) for t in args.tmpfs]
    seccomp = _security_opts(args.security_opt)
    if args.egress and args.network in ("none", "host"):
        raise ConfigError("egress", "an allow-list is for --network bridge or a named network")
    on_named = args.network if args.network != "bridge" else None
    options = {
        "rootfs": args.rootfs,
        "hostname": args.hostname,
        "env": {**_env_file(args.env_file), **_env(args.env)},
        "mounts": mounts,
        "read_only": args.read_only,
        "user": args.user,
        "cwd": args.workdir,
        "network": BridgeNetwork(egress=args.egress, network=on_named) if args.egress else args.network,
        "ports": dict(parse_publish(text) for text in args.publish),
        "name": args.name,
        "extra_hosts": dict(_host_entry(text) for text in args.add_host),
        "userns": not args.no_userns,
        "pid_namespace": args.pid,
        "uts_namespace": args.uts,
        "seccomp": seccomp,
        "limits": _limits(args),
        "image": image,
        "image_store": args.store,
        "writable_layer": args.writable_layer,
        "writable_layer_size": args.writable_layer_size,
        "pull": args.pull,
        "cap_add": args.cap_add,
        "cap_drop": args.cap_drop,
    }
    if args.tty:
        code, timed_out = run_on_terminal(cmd, options, interactive=args.interactive, timeout=args.timeout)
        if timed_out:
            print(f"sandboxlib: timed out after {args.timeout} s", file=sys.stderr)
            return EXIT_TIMEOUT
        return code
    result = run(cmd, stdin=None, stdout=None, stderr=None, timeout=args.timeout, **options)
    if result.verdict not in (Verdict.EXITED, Verdict.SIGNALED, Verdict.TIMEOUT):
        print(f"sandboxlib: {_VERDICT_TEXT[result.verdict]}", file=sys.stderr)
    if result.timed_out:
        print(f"sandboxlib: timed out after {args.timeout} s", file=sys.stderr)
        return EXIT_TIMEOUT
    return result.exit_code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # (the top-level parser would show its own usage)
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        commands = {
            **imagecli.COMMANDS,
            **netcli.COMMANDS,
            **buildcli.COMMANDS,
            **daemoncli.COMMANDS,
            **clientcli.COMMANDS,
        }
        return commands[args.command](args) if args.command != "run" else _run(args)
    except CommandNotFoundError as err:
        print(f"sandboxlib: {err}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except SetupError as err:
        print(f"sandboxlib: {err}", file=sys.stderr)
        return EXIT_CANNOT_EXEC if err.step == "EXEC" else EXIT_SETUP
    except ConfigError as err:
        option = _OPTIONS.get(err.field.split("[")[0], err.field)
        print(f"sandboxlib: {option}: {err.message}\nSee 'sandboxlib {args.command} --help'.", file=sys.stderr)
        return EXIT_SETUP
    except (SandboxError, OSError) as err:
        print(f"sandboxlib: {err}", file=sys.stderr)
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
