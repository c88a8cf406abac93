"""The daemon's containers: names and ids, each one's state across its
runs, and what happens when its main command ends (restart policies,
AutoRemove).  A container is a record until started; each start is a new
library container (``command=``, its log in the daemon's state directory)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import os
import random
import re
import secrets
import shutil
import signal
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import attrs

from .. import aio
from ..errors import CommandNotFoundError, SandboxError, SetupError
from ..runtime.logs import read_log
from . import healthcheck, links
from .apierrors import ApiError, library_error, no_such_container
from .create_config import BUILT_IN_NETWORKS, CreateRequest, endpoint_options, known_network
from .events import Events
from .healthcheck import Health, checked_healthcheck
from .interactive import LOG_MAX_FILES, Interactive
from .kept_layer import KeptLayer
from .loghistory import keep_previous_run, with_history
from .threads import in_thread

__all__ = ["ContainerRecord", "Containers", "ZERO_TIME", "now_rfc3339"]

ZERO_TIME = "0001-01-01T00:00:00Z"
ATTACHED_GRACE = 10.0  # seconds a remove waits for attaches still reading the log
NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # the names a network's resolver answers
_ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet", "sharp", "tidy", "vivid", "wise")
_NOUNS = ("curie", "darwin", "euler", "gauss", "hopper", "knuth", "lovelace", "noether", "pascal", "ritchie", "turing")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.define(eq=False)
class ContainerRecord:
    id: str
    name: str
    image: str  # as the client named it
    image_id: str
    request: CreateRequest
    log_path: str
    created: str = attrs.field(factory=now_rfc3339)
    state: str = "created"  # created, running, paused, restarting, exited, removing, dead
    box: Optional[aio.Container] = None  # the current (or last) run
    pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    run_started: float = 0.0  # time.time() before the current run's start: its log records are newer
    runs: int = 0  # starts so far
    attempts: int = 0  # starts tried so far (an attach before a start ends when one fails)
    exits: int = 0  # ends of a run so far
    restart_count: int = 0
    stopped_by_user: bool = False
    removing: bool = False  # a remove has begun: no restart, no AutoRemove
    attached: int = 0  # attaches reading the log: a remove waits for them (docker run --rm's output)
    removed: bool = False
    watcher: Optional[asyncio.Task] = None
    interactive: Optional[Interactive] = None  # Tty or OpenStdin: the main command's live output and stdin
    joined: Dict[str, List[str]] = attrs.field(factory=dict)  # networks beyond network_mode: their aliases
    joined_at: Dict[str, Dict[str, Any]] = attrs.field(factory=dict)  # their EndpointConfig, checked
    links: Dict[str, str] = attrs.field(factory=dict)  # legacy links (HostConfig.Links): alias -> the linked one's id
    layer: Optional[KeptLayer] = None  # its writable layer, kept until it is removed (none: a read-only root)
    starting: bool = False  # a start is under way: file work on the stopped container waits
    files_open: int = 0  # file work on the stopped container (an idle container on its layer): a start waits
    changed: asyncio.Condition = attrs.field(factory=asyncio.Condition)
    health: Optional[Health] = None  # the current (or last) run's health checks (Config.Healthcheck)

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    def read_log(self, tail: Optional[int] = None, **options: Any) -> Iterator[Tuple[str, bytes]]:
        """The log of every run (the current or last one's followed), as ``Container.logs(**options)``."""
        return with_history(self.log_path, self._read_current, tail, **options)

    def _read_current(self, **options: Any) -> Iterator[Tuple[str, bytes]]:
        if self.interactive is not None:
            writer = self.interactive.log if self.running else None
            return read_log(self.log_path, LOG_MAX_FILES, writer=writer, **options)
        if self.box is None:
            return iter(())
        return self.box.sync.logs(**options)

    def attributes(self) -> Dict[str, str]:
        return {"name": self.name, "image": self.image, **(self.request.body.get("Labels") or {})}


class Containers:
    """Every container of the daemon, by id and by name."""

    def __init__(self, state_dir: str, events: Events) -> None:
        self.state_dir = state_dir
        self.events = events
        self._by_id: Dict[str, ContainerRecord] = {}
        self.closing = False

    def all(self) -> List[ContainerRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.created, reverse=True)

    def get(self, ref: str) -> ContainerRecord:
        """By full id, name (``/`` optional), a link's name (``PARENT/ALIAS``: the
        linked container, as dockerd's), or a unique id prefix; 404 else."""
        if ref in self._by_id:
            return self._by_id[ref]
        name = ref.lstrip("/")
        for record in self._by_id.values():
            if record.name == name:
                return record
        parent, slash, alias = name.rpartition("/")
        if slash:
            linking = next((r for r in self._by_id.values() if r.name == parent), None)
            if linking is not None and alias in linking.links and linking.links[alias] in self._by_id:
                return self._by_id[linking.links[alias]]
        found = [r for r in self._by_id.values() if ref and r.id.startswith(ref)]
        if len(found) > 1:
            raise ApiError(400, f"multiple IDs found with provided prefix: {ref}")
        if not found:
            raise no_such_container(ref)
        return found[0]

    def _check_name(self, name: str, record_id: str = "") -> str:
        if not NAME.match(name):
            raise ApiError(400, f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        name = name.lstrip("/")
        for other in self._by_id.values():
            if other.name == name and other.id != record_id:
                raise ApiError(
                    409,
                    f'Conflict. The container name "/{name}" is already in use by container "{other.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name.",
                )
        return name

    def _new_name(self) -> str:
        taken = {r.name for r in self._by_id.values()}
        while True:
            name = f"{random.choice(_ADJECTIVES)}_{random.choice(_NOUNS)}"
            if name not in taken:
                return name
            name += str(random.randrange(100))
            if name not in taken:
                return name

    def create(self, name: Optional[str], image: str, image_id: str, request: CreateRequest) -> ContainerRecord:
        name = self._check_name(name) if name else self._new_name()
        linked = {alias: self._linkable(target).id for target, alias in request.links}
        record_id = secrets.token_hex(32)
        directory = os.path.join(self.state_dir, "containers", record_id)
        os.makedirs(directory, mode=0o700)
        record = ContainerRecord(
            id=record_id,
            name=name,
            image=image,
            image_id=image_id,
            request=request,
            log_path=os.path.join(directory, "container.log"),
            links=linked,
        )
        if request.spawned:
            record.interactive = Interactive(record.log_path)
        if not request.options["read_only"]:
            record.layer = KeptLayer(request.options["image_store"], record_id)
        self._by_id[record_id] = record
        self.events.emit("container", "create", record.id, record.attributes())
        return record

    # -- legacy links --------------------------------------------------------------------
    def _linkable(self, ref: str) -> ContainerRecord:
        try:
            target = self.get(ref)
        except ApiError as err:
            raise ApiError(400, f"could not get container for {ref}: {err.message}") from None
        if target.request.network_mode == "host":
            raise ApiError(400, "conflicting options: host type networking can't be used with links")
        return target

    def children(self, record: ContainerRecord) -> List[Tuple[str, ContainerRecord]]:
        """(alias, container) of each legacy link of ``record``."""
        return [(alias, self._by_id[i]) for alias, i in record.links.items() if i in self._by_id]

    def link_names(self, record: ContainerRecord) -> List[str]:
        """``/PARENT/ALIAS`` of every legacy link to ``record``: more names of it, as dockerd's."""
        return [f"/{p.name}/{alias}" for p in self.all() for alias, i in p.links.items() if i == record.id]

    def remove_link(self, ref: str) -> None:
        """``DELETE /containers/PARENT/ALIAS?link=1``: the link goes, both containers stay."""
        self.get(ref)  # (404 for a name that is no container's, as dockerd)
        parent, slash, alias = ref.strip("/").rpartition("/")
        if not slash:
            raise ApiError(409, "Conflict, cannot remove the default link name of the container")
        linking = next((r for r in self._by_id.values() if r.name == parent), None)
        if linking is None or linking.links.pop(alias, None) is None:
            raise ApiError(404, f"Cannot get parent /{parent} for link name /{ref.strip('/')}")

    def _link_options(self, record: ContainerRecord) -> Dict[str, Any]:
        """The ``env`` and ``extra_hosts`` of its legacy links (on the built-in networks
        ``bridge`` and ``none``, as dockerd's default bridge is, with or without
        addresses): every linked container must run, on one of those networks too."""
        options = record.request.options
        if not record.links or record.request.network_mode not in ("bridge", "none"):
            return options
        env: Dict[str, str] = {}
        hosts = dict(options.get("extra_hosts") or {})
        for alias, child in self.children(record):
            if not child.running or child.box is None:
                raise ApiError(500, f"Cannot link to a non running container: /{child.name} AS /{record.name}/{alias}")
            if child.request.network_mode not in ("bridge", "none"):
                raise ApiError(500, f"Cannot link to /{child.name}, as it does not belong to the default network")
            address = self._bridge_address(child)
            exposed = child.request.body.get("ExposedPorts") or {}
            env.update(links.link_env(f"/{record.name}/{alias}", address, child.request.body.get("Env") or (), exposed))
            if address and record.request.network_mode == "bridge":
                hosts.update(self._link_hosts(alias, child, address))
        return {**options, "env": {**env, **options["env"]}, "extra_hosts": hosts}

    @staticmethod
    def _bridge_address(child: ContainerRecord) -> str:
        """A running container's address on the default bridge ("" off it)."""
        assert child.box is not None
        own = child.request.network_mode == "bridge"
        return links.bridge_address(child.box.sync.address if own else child.box.sync.joined_networks.get("bridge"))

    @staticmethod
    def _link_hosts(alias: str, child: ContainerRecord, address: str) -> Dict[str, str]:
        return links.link_hosts(alias, child.request.options["hostname"] or child.id[:12], child.name, address)

    async def _update_linking_hosts(self, child: ContainerRecord) -> None:
        """The ``/etc/hosts`` lines of the running containers linking to ``child``, which
        has just started (again: at another address, maybe), rewritten, as dockerd's."""
        address = self._bridge_address(child)
        if not address:
            return
        for parent in self.all():
            if not parent.running or parent.box is None or parent.request.network_mode != "bridge":
                continue
            for alias in [a for a, i in parent.links.items() if i == child.id]:
                with contextlib.suppress(SandboxError):  # (it stopped meanwhile: its next start writes them)
                    await in_thread(parent.box.sync.update_hosts, self._link_hosts(alias, child, address))

    def rename(self, record: ContainerRecord, name: str) -> None:
        old = record.name
        record.name = self._check_name(name, record.id)
        self.events.emit("container", "rename", record.id, {**record.attributes(), "oldName": "/" + old})

    # -- runs ------------------------------------------------------------------------
    async def start(self, record: ContainerRecord, *, restart: bool = False) -> None:
        """A run; ``restart``: by the restart policy, which a stop meanwhile cancels.
        File work on the stopped container ends first (its idle container has the layer mounted)."""
        await record.wait_for(lambda: record.files_open == 0 and not record.starting)
        record.starting = True
        try:
            await self._start(record, restart)
        finally:
            record.starting = False
            await record.notify()

    async def _start(self, record: ContainerRecord, restart: bool) -> None:
        if record.running:
            raise ApiError(304, "container already started")
        if record.removing:
            raise ApiError(409, f"container {record.id} is marked for removal and cannot be started")
        if not restart:
            record.stopped_by_user = False
        request = record.request
        interactive = request.spawned
        try:
            options = dict(self._link_options(record))
        except ApiError as err:  # (a failed start: attaches and waits end, AutoRemove removes it)
            await self._failed(record, err)
            raise
        if options.get("uts_namespace") != "host":  # (the host's UTS namespace keeps the host's name)
            options["hostname"] = options["hostname"] or record.id[:12]
        if record.layer is not None:
            options["writable_dir"] = record.layer.path
        name = request.alias or record.name
        if request.network_mode not in ("host", "none") and NETWORK_NAME.match(name):
            options["name"] = name  # (its DNS name on its network, as Docker's)
        if interactive:  # an idle container, its main command spawned into it with our ends
            box = aio.Container(**options)
        else:
            box = aio.Container(**options, command=request.argv or True, log=record.log_path)
        record.run_started = time.time()
        if record.runs:  # the log writer begins anew: the runs before stay readable
            await in_thread(keep_previous_run, record.log_path, LOG_MAX_FILES)
        try:
            if request.network_mode not in BUILT_IN_NETWORKS:  # (as dockerd: checked at start, not create)
                await in_thread(known_network, request.network_mode)
            await box.start()
            for network, aliases in record.joined.items():  # (docker network connect, before or while it ran)
                options = endpoint_options(record.joined_at.get(network) or {})
                await in_thread(functools.partial(box.sync.connect, network, aliases=aliases, **options))
            if interactive:
                assert record.interactive is not None  # (made at create)
                await record.interactive.start(
                    box, (request.path, *request.args), tty=request.tty, stdin=request.open_stdin
                )
        except SandboxError as err:
            box.close()
            if record.interactive is not None:
                record.interactive.failed()
            await self._failed(record, err)
            if isinstance(err, CommandNotFoundError):  # (the docker CLI exits 127 on this text)
                raise ApiError(400, f"{err}: exec: executable file not found in $PATH") from None
            raise library_error(err) from None
        except BaseException:
            box.close()
            if record.interactive is not None:
                record.interactive.failed()
            raise
        if restart and (record.stopped_by_user or record.removing or self.closing):  # stopped while it started
            await in_thread(box.close)
            if record.interactive is not None:
                record.interactive.failed()
            record.state = "exited"
            record.attempts += 1
            await record.notify()
            return
        record.box, record.state, record.pid = box, "running", box.pid or 0
        record.error, record.started_at, record.oom_killed = "", now_rfc3339(), False
        record.runs += 1
        record.attempts += 1
        record.watcher = asyncio.get_running_loop().create_task(self._watch(record, box))
        record.health = healthcheck.start(box, checked_healthcheck(request.body.get("Healthcheck")), now_rfc3339)
        self.events.emit("container", "start", record.id, record.attributes())
        await record.notify()
        await self._update_linking_hosts(record)

    async def _failed(self, record: ContainerRecord, err: Exception) -> None:
        """A start that failed: its status as Docker's (127 not found, 126 cannot execute);
        attaches waiting for it end, and an AutoRemove container goes."""
        record.error = str(err)
        record.exit_code = 127 if isinstance(err, CommandNotFoundError) else 126 if isinstance(err, SetupError) else 128
        record.state = "exited" if record.runs else "created"
        record.attempts += 1
        await record.notify()
        if record.request.auto_remove and not record.removing:
            await self.remove(record, force=True)

    async def _watch(self, record: ContainerRecord, box: aio.Container) -> None:
        """The end of a run: its status, then a restart, AutoRemove, or nothing."""
        try:
            if record.interactive is not None:
                record.exit_code = await record.interactive.wait()
            else:
                result = await in_thread(box.sync.wait)
                record.exit_code, record.oom_killed = result.exit_code, result.oom_killed
        except SandboxError:
            record.exit_code = 128 + signal.SIGKILL
        finally:
            await in_thread(box.close)
        record.state = "removing" if record.removing else "exited"
        record.pid, record.finished_at = 0, now_rfc3339()
        record.exits += 1
        if record.health is not None:
            record.health.stop()
        self.events.emit("container", "die", record.id, {**record.attributes(), "exitCode": str(record.exit_code)})
        await record.notify()
        if self._restarts(record):
            await self._restart_later(record)
        elif record.request.auto_remove and not record.removing:
            await self.remove(record, force=True)

    def _restarts(self, record: ContainerRecord) -> bool:
        policy, retries = record.request.restart_policy
        if self.closing or record.stopped_by_user or record.removing:
            return False
        if policy in ("always", "unless-stopped"):
            return True
        return policy == "on-failure" and record.exit_code != 0 and (not retries or record.restart_count < retries)

    async def _restart_later(self, record: ContainerRecord) -> None:
        record.state = "restarting"
        backoff = min(0.1 * 2 ** min(record.restart_count, 10), 10.0)  # Docker's, from 100 ms
        with contextlib.suppress(asyncio.TimeoutError):  # (a stop or remove meanwhile wakes it)
            await asyncio.wait_for(
                record.wait_for(lambda: record.stopped_by_user or record.removing or self.closing), backoff
            )
        if record.state != "restarting" or self.closing:
            return
        record.restart_count += 1
        try:
            await self.start(record, restart=True)
        except ApiError as err:
            record.state, record.error = "exited", err.message
            await record.notify()

    async def pause(self, record: ContainerRecord) -> None:
        if record.state != "running" or record.box is None:
            raise ApiError(
                409,
                f"Container {record.id} is not running"
                if not record.running
                else f"Container {record.id} is already paused",
            )
        try:
            await in_thread(record.box.sync.pause)
        except SandboxError as err:
            raise library_error(err) from None
        record.state = "paused"
        self.events.emit("container", "pause", record.id, record.attributes())

    async def unpause(self, record: ContainerRecord) -> None:
        if record.state != "paused" or record.box is None:
            raise ApiError(409, f"Container {record.id} is not paused")
        await in_thread(record.box.sync.unpause)
        record.state = "running"
        self.events.emit("container", "unpause", record.id, record.attributes())

    async def _thawed(self, record: ContainerRecord) -> None:
        """A paused container is thawed before it is signalled (a frozen process takes no signal)."""
        if record.state == "paused":
            await self.unpause(record)

    async def stop(self, record: ContainerRecord, timeout: Optional[float]) -> None:
        """SIGTERM, SIGKILL after ``timeout`` seconds (None: the container's StopTimeout, else 10);
        304 when not running.
        Either way no restart policy starts it again."""
        record.stopped_by_user = True
        if record.state == "restarting":
            record.stopped_by_user, record.state = True, "exited"
            await record.notify()
            return
        if not record.running or record.box is None:
            raise ApiError(304, "container already stopped")
        record.stopped_by_user = True
        await self._thawed(record)
        box = record.box
        if timeout is None or timeout < 0:
            timeout = record.request.body.get("StopTimeout")  # the container's own (docker run --stop-timeout)
        await in_thread(box.sync.stop, 10.0 if timeout is None or timeout < 0 else float(timeout))
        await self._ended(record)

    async def kill(self, record: ContainerRecord, sig: int) -> None:
        if not record.running or record.box is None:
            raise ApiError(409, f"Cannot kill container: {record.id}: Container {record.id} is not running")
        record.stopped_by_user = True
        await self._thawed(record)
        if record.interactive is not None:
            record.interactive.send_signal(sig)
        else:
            record.box.sync.send_signal(sig)  # the container ends with its main command
        if sig == signal.SIGKILL:
            await self._ended(record)

    async def _ended(self, record: ContainerRecord) -> None:
        """Wait for the run's watcher to record its end (unless we are that watcher)."""
        watcher = record.watcher
        if watcher is not None and watcher is not asyncio.current_task() and not watcher.done():
            await asyncio.shield(watcher)

    async def remove(self, record: ContainerRecord, *, force: bool) -> None:
        if record.removing:
            raise ApiError(409, f"removal of container {record.id} is already in progress")
        if record.running or record.state == "restarting":  # (dockerd counts a restarting one as running)
            if not force:
                raise ApiError(
                    409,
                    f"You cannot remove a running container {record.id}. "
                    "Stop the container before attempting removal or force remove",
                )
        record.removing, record.stopped_by_user = True, True
        await record.notify()  # (a restart waiting for its back-off gives up)
        if record.running:
            await self._thawed(record)
            await in_thread(record.box.sync.stop, 0.0)  # type: ignore[union-attr]
        await self._ended(record)
        record.state = "removing"
        with contextlib.suppress(asyncio.TimeoutError):  # their follow ends with the run: soon
            await asyncio.wait_for(record.wait_for(lambda: record.attached == 0), ATTACHED_GRACE)
        self._by_id.pop(record.id, None)
        for parent in self._by_id.values():  # (its links go with it, as dockerd's)
            for alias in [a for a, i in parent.links.items() if i == record.id]:
                del parent.links[alias]
        await record.wait_for(lambda: record.files_open == 0)
        if record.layer is not None:
            await in_thread(record.layer.release)
        shutil.rmtree(os.path.dirname(record.log_path), ignore_errors=True)
        record.removed, record.state = True, "removing"
        self.events.emit("container", "destroy", record.id, record.attributes())
        await record.notify()

    async def shutdown(self) -> None:
        """The daemon stops: so do its containers (no live restore)."""
        self.closing = True
        for record in list(self._by_id.values()):
            await record.notify()
        running = [r for r in self._by_id.values() if r.running and r.box is not None]
        for record in running:
            if record.state == "paused":
                await self.unpause(record)
        await asyncio.gather(*(in_thread(r.box.sync.stop, 5.0) for r in running), return_exceptions=True)  # type: ignore[union-attr]
        await asyncio.gather(*(self._ended(r) for r in running), return_exceptions=True)
        for record in list(self._by_id.values()):
            if record.box is not None:
                record.box.close()
            if record.layer is not None:
                await in_thread(record.layer.release)
