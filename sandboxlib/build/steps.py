"""A stage's state as it is built (the image so far: config, layers,
history; its build arguments and cache key) and the instructions that only
change the config: ``ENV``, ``ARG``, ``LABEL``, ``EXPOSE``, ``VOLUME``,
``USER``, ``WORKDIR``, ``CMD``, ``ENTRYPOINT``, ``SHELL``, ``STOPSIGNAL``,
``HEALTHCHECK``, ``ONBUILD``, ``MAINTAINER``."""

from __future__ import annotations

import datetime
import json
import posixpath
import re
from typing import Any, Dict, List, Optional, Tuple

from ..errors import BuildError
from ..images import ImageStore, Layer
from ..images.newimage import host_platform, write_manifest
from .imageview import ImageView
from .parser import Instruction, parse_line
from .substitution import SubstitutionError, expand, expand_words, split_words

__all__ = ["StageState", "apply_metadata", "METADATA", "DEFAULT_SHELL", "DEFAULT_PATH", "now"]

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
METADATA = frozenset(
    "ENV LABEL EXPOSE VOLUME USER CMD ENTRYPOINT SHELL STOPSIGNAL HEALTHCHECK ONBUILD MAINTAINER".split()
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StageState:
    """The image a stage has built so far."""

    def __init__(self, store: ImageStore, name: str, escape: str) -> None:
        self.store, self.name, self.escape = store, name, escape
        self.manifest: Optional[str] = None
        os_name, arch = host_platform()
        self.image: Dict[str, Any] = {
            "architecture": arch,
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
        self.layers: List[Layer] = []
        self.key = ""
        self.args: Dict[str, str] = {}
        self.cmd_set = False
        self._view: Optional[ImageView] = None

    @property
    def config(self) -> Dict[str, Any]:
        return self.image["config"]

    def load(self, manifest: str) -> None:
        """Become the image ``manifest`` names (a base image, or a cached step)."""
        image = self.store.get(manifest)
        self.manifest = manifest
        self.image = json.loads(self.store.blobs.read(image.id))
        self.image.setdefault("config", {})
        self.image["config"] = self.image["config"] or {}
        self.image.setdefault("history", [])
        self.layers = list(image.layers)
        self._view = None

    # -- the environment ----------------------------------------------------------
    def env(self) -> Dict[str, str]:
        found = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            found[key] = value
        return found

    def substitution_env(self) -> Dict[str, str]:
        """What variables in instructions see: the stage's ARGs, then its ENV (which wins)."""
        return {**self.args, **self.env()}

    def shell(self) -> List[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def view(self, headers: Dict[str, list]) -> ImageView:
        if self._view is None:
            self._view = ImageView(self.store, self.layers, headers)
        return self._view

    # -- writing -----------------------------------------------------------------
    def commit(self, created_by: str, layer: Optional[Layer], key: str) -> None:
        """The image plus ``layer`` (None: a metadata step, an empty layer in
        the history), written and recorded under ``key`` (inside ``writing()``)."""
        stamp = now()
        entry: Dict[str, Any] = {"created": stamp, "created_by": created_by, "comment": "sandboxlib.build"}
        if layer is None:
            entry["empty_layer"] = True
        else:
            self.layers.append(layer)
            self.image["rootfs"]["diff_ids"].append(layer.diff_id)
            self._view = None
        self.image["history"].append(entry)
        self.image["created"] = stamp
        self.manifest = write_manifest(
            self.store, self.image, [(lay.digest, lay.size, lay.media_type) for lay in self.layers]
        )
        self.store.record_step(key, self.manifest)
        self.key = key


def _words(ins: Instruction, state: StageState) -> List[str]:
    try:
        return expand_words(ins.args, state.substitution_env(), state.escape)
    except SubstitutionError as err:
        raise ins.error(str(err)) from None


def word(ins: Instruction, state: StageState, text: Optional[str] = None) -> str:
    try:
        return expand(ins.args if text is None else text, state.substitution_env(), state.escape)
    except SubstitutionError as err:
        raise ins.error(str(err)) from None


def pairs(ins: Instruction, state: StageState) -> List[Tuple[str, str]]:
    """``KEY=VALUE ...`` (or the old ``KEY VALUE with spaces``) of ENV, LABEL and ARG, expanded."""
    env = state.substitution_env()
    raw = split_words(ins.args, state.escape)
    if not raw:
        raise ins.error("needs at least one argument")
    try:
        if "=" not in raw[0]:
            if ins.keyword == "ARG":
                return [(w, None) for w in raw]  # type: ignore[misc]
            parts = ins.args.strip().split(None, 1)
            if len(parts) < 2:
                raise ins.error(f"{parts[0]!r} needs a value (KEY=VALUE or KEY VALUE)")
            return [(parts[0], expand(parts[1], env, state.escape))]
        found = []
        for item in raw:
            if ins.keyword == "ARG" and "=" not in item:
                found.append((item, None))
                continue
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ins.error(f"{item!r} is not KEY=VALUE")
            found.append((expand(name, env, state.escape), expand(value, env, state.escape)))
        return found  # type: ignore[return-value]
    except SubstitutionError as err:
        raise ins.error(str(err)) from None


def _command(ins: Instruction, state: StageState) -> List[str]:
    if ins.exec_form is not None:
        return list(ins.exec_form)
    return state.shell() + [ins.args]


def _duration(ins: Instruction, name: str, text: Optional[str]) -> int:
    if text is None:
        return 0
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ins.error(f"--{name}: {text!r} is not a duration (30s, 1m30s, ...)")
    return int(total)


def _healthcheck(ins: Instruction, state: StageState) -> Dict[str, Any]:
    first, _, rest = ins.args.partition(" ")
    if first.upper() == "NONE":
        if rest.strip() or ins.flags:
            raise ins.error("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if first.upper() != "CMD" or not rest.strip():
        raise ins.error("expected HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE")
    inner = parse_line("CMD " + rest.strip(), ins.file, ins.line)
    test = ["CMD"] + list(inner.exec_form) if inner.exec_form is not None else ["CMD-SHELL", inner.args]
    check: Dict[str, Any] = {"Test": test}
    known = {
        "interval": "Interval",
        "timeout": "Timeout",
        "start-period": "StartPeriod",
        "start-interval": "StartInterval",
    }
    for flag, value in ins.flags:
        if flag in known:
            nanos = _duration(ins, flag, value)
            if nanos:
                check[known[flag]] = nanos
        elif flag == "retries":
            if not (value or "").isdigit():
                raise ins.error(f"--retries: {value!r} is not a whole number")
            if int(value or 0):
                check["Retries"] = int(value or 0)
        else:
            raise ins.error(f"unknown flag --{flag}")
    return check


def _ports(ins: Instruction, state: StageState) -> List[str]:
    found = []
    for item in _words(ins, state):
        port, _, proto = item.partition("/")
        proto = (proto or "tcp").lower()
        low, _, high = port.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or proto not in ("tcp", "udp", "sctp"):
            raise ins.error(f"invalid port {item!r}")
        found += [f"{p}/{proto}" for p in range(int(low), int(high or low) + 1)]
    return found


def apply_metadata(ins: Instruction, state: StageState) -> str:
    """Apply a config-only instruction to ``state.config``; returns its history text."""
    config, keyword = state.config, ins.keyword
    if ins.flags and keyword != "HEALTHCHECK":
        raise ins.error(f"unknown flag --{ins.flags[0][0]}")
    if keyword == "ENV":
        env = state.env()
        found = pairs(ins, state)
        env.update(found)
        config["Env"] = [f"{k}={v}" for k, v in env.items()]
        return "ENV " + " ".join(f"{k}={v}" for k, v in found)
    if keyword == "LABEL":
        found = pairs(ins, state)
        config["Labels"] = {**(config.get("Labels") or {}), **dict(found)}
        return "LABEL " + " ".join(f"{k}={v}" for k, v in found)
    if keyword == "MAINTAINER":
        state.image["author"] = word(ins, state)
        return "MAINTAINER " + state.image["author"]
    if keyword == "EXPOSE":
        ports = _ports(ins, state)
        config["ExposedPorts"] = {**(config.get("ExposedPorts") or {}), **{p: {} for p in ports}}
        return "EXPOSE " + " ".join(ports)
    if keyword == "VOLUME":
        if ins.exec_form is not None:
            volumes = [word(ins, state, v) for v in ins.exec_form]
        else:
            volumes = _words(ins, state)
        if not volumes or any(not v for v in volumes):
            raise ins.error("VOLUME needs a path")
        config["Volumes"] = {**(config.get("Volumes") or {}), **{v: {} for v in volumes}}
        return "VOLUME " + json.dumps(volumes)
    if keyword in ("USER", "STOPSIGNAL"):
        value = word(ins, state).strip()
        if not value:
            raise ins.error("needs an argument")
        config["User" if keyword == "USER" else "StopSignal"] = value
        return f"{keyword} {value}"
    if keyword in ("CMD", "ENTRYPOINT"):
        command = _command(ins, state)
        if keyword == "CMD":
            config["Cmd"], state.cmd_set = command, True
        else:
            config["Entrypoint"] = command
            if not state.cmd_set:
                config["Cmd"] = None
        return f"{keyword} {json.dumps(command)}"
    if keyword == "SHELL":
        if ins.exec_form is None or not ins.exec_form:
            raise ins.error('SHELL takes the JSON form: SHELL ["executable", "parameters"]')
        config["Shell"] = list(ins.exec_form)
        return "SHELL " + json.dumps(config["Shell"])
    if keyword == "HEALTHCHECK":
        config["Healthcheck"] = _healthcheck(ins, state)
        return "HEALTHCHECK " + json.dumps(config["Healthcheck"])
    if keyword == "ONBUILD":
        trigger = parse_line(ins.args, ins.file, ins.line)
        if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise ins.error(f"{trigger.keyword} is not allowed as an ONBUILD trigger")
        config["OnBuild"] = list(config.get("OnBuild") or []) + [ins.args]
        return "ONBUILD " + ins.args
    raise ins.error("not a metadata instruction")  # (the builder dispatches only those)


def workdir(ins: Instruction, state: StageState) -> str:
    """The new working directory (a relative one is joined to the current)."""
    value = word(ins, state).strip()
    if not value:
        raise ins.error("WORKDIR needs a path")
    return posixpath.normpath(posixpath.join(state.config.get("WorkingDir") or "/", value))


def unknown_flags(ins: Instruction, allowed: Tuple[str, ...]) -> None:
    for flag, _ in ins.flags:
        if flag not in allowed:
            raise BuildError(ins.file, ins.line, f"{ins.keyword}: the flag --{flag} is not supported")
