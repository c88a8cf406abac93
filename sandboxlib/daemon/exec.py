"""``docker exec``: exec create, start (over the taken-over connection, or
detached), inspect, resize.  A command with ``Tty`` gets a terminal of the
container's own; its output is then raw, not multiplexed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from typing import Any, Callable, Dict, List, Optional

import attrs
from aiohttp import web

from ..aio.process import wait as wait_for_exit
from ..errors import CommandNotFoundError, SandboxError
from ..streams import DEVNULL, PIPE
from .apierrors import ApiError, library_error
from .hijack import STDERR, STDOUT, Hijacked
from .registry_of_containers import ContainerRecord
from .server import Route, json_body, json_response, query_int
from .threads import in_thread

__all__ = ["ROUTES"]


DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, as Docker's
# A terminal's output chunks (up to 64 KiB each) held for a slow client before
# the terminal is read no more until it catches up: a client that reads nothing
# grew the daemon by all that the command wrote.
TERMINAL_QUEUE = 64


def detach_keys(text: Optional[str]) -> bytes:
    """Docker's ``--detach-keys`` (``ctrl-p,ctrl-q``, ``a,ctrl-@``) as the bytes typed."""
    if not text:
        return DEFAULT_DETACH_KEYS
    found = b""
    for key in text.split(","):
        if len(key) == 1:
            found += key.encode()
        elif key.startswith("ctrl-") and len(key) == 6 and key[5] in "abcdefghijklmnopqrstuvwxyz@[\\]^_":
            found += bytes([(ord(key[5].upper()) - 64) & 0x7F])
        else:
            raise ApiError(400, f"Invalid detach keys ({text}) provided")
    return found


class DetachWatch:
    """The client's input with a detach sequence taken out: ``feed`` returns what
    goes on to the command (a sequence's first bytes held until it is clear)."""

    def __init__(self, keys: bytes) -> None:
        self.keys, self.held, self.detached = keys, b"", False

    def feed(self, data: bytes) -> bytes:
        passed = bytearray()
        for byte in data:
            if byte == self.keys[len(self.held)]:
                self.held += bytes([byte])
                if self.held == self.keys:
                    self.detached = True
                    return bytes(passed)
            else:
                passed += self.held
                self.held = b""
                if byte == self.keys[0]:
                    self.held = bytes([byte])
                else:
                    passed.append(byte)
        return bytes(passed)


@attrs.define(eq=False)
class ExecRecord:
    id: str
    container: ContainerRecord
    argv: List[str]
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    tty: bool
    env: Dict[str, str]
    cwd: Optional[str]
    user: Optional[str]
    detach_keys: bytes = DEFAULT_DETACH_KEYS
    running: bool = False
    started: bool = False
    exit_code: Optional[int] = None
    pid: int = 0
    process: Any = None  # the library's Process, while it runs


def _execs(request: web.Request) -> Dict[str, ExecRecord]:
    return request.app["context"].execs


def _exec(request: web.Request) -> ExecRecord:
    found = _execs(request).get(request.match_info["id"])
    if found is None:
        raise ApiError(404, f"No such exec instance: {request.match_info['id']}")
    return found


async def _create(request: web.Request) -> web.Response:
    record = request.app["context"].containers.get(request.match_info["id"])
    body = await json_body(request)
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
        raise ApiError(400, "No exec command specified" if not cmd else "Cmd: expected a list of strings")
    if not record.running or record.box is None:
        raise ApiError(409, f"Container {record.id} is not running")
    if record.state == "paused":
        raise ApiError(409, f"Container {record.id} is paused, unpause the container before exec")
    env = {}
    for item in body.get("Env") or []:
        if not isinstance(item, str):
            raise ApiError(400, "Env: expected a list of strings")
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
    execution = ExecRecord(
        id=secrets.token_hex(32),
        container=record,
        argv=cmd,
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")),
        tty=bool(body.get("Tty")),
        env=env,
        cwd=body.get("WorkingDir") or None,
        user=body.get("User") or None,
        detach_keys=detach_keys(body.get("DetachKeys") or body.get("detachKeys")),  # (docker-py: detachKeys)
    )
    _execs(request)[execution.id] = execution
    return json_response({"Id": execution.id}, 201)


async def _spawn(execution: ExecRecord, rows: int, cols: int, *, detach: bool = False):
    """``detach``: nobody will read its output (a detached start: dockerd drops it), so none is piped."""
    record = execution.container
    if not record.running or record.box is None:
        raise ApiError(409, f"Container {record.id} is not running")
    options = {"env": execution.env or None, "cwd": execution.cwd, "user": execution.user}
    try:
        if execution.tty:
            return await in_thread(lambda: record.box.sync.spawn(execution.argv, tty=(rows, cols), **options))
        return await record.box.spawn(
            execution.argv,
            stdin=PIPE if execution.attach_stdin and not detach else DEVNULL,
            stdout=PIPE if execution.attach_stdout and not detach else DEVNULL,
            stderr=PIPE if execution.attach_stderr and not detach else DEVNULL,
            **options,
        )
    except SandboxError as err:
        if isinstance(err, CommandNotFoundError):
            raise ApiError(
                400, f"OCI runtime exec failed: exec: {execution.argv[0]!r}: executable file not found in $PATH"
            ) from None
        raise library_error(err) from None


async def _start(request: web.Request) -> web.StreamResponse:
    execution = _exec(request)
    body = await json_body(request, required=False)
    if execution.started:
        raise ApiError(409, f"Error: Exec command {execution.id} is already running")
    execution.started = execution.running = True
    try:
        process = await _spawn(execution, 24, 80, detach=bool(body.get("Detach")))
    except ApiError as err:
        execution.running = False
        if body.get("Detach") or err.status != 400:
            raise
        # as dockerd: an attached start that cannot run answers on the stream, the exec exits 127
        execution.exit_code = 127
        hijacked = await Hijacked.take(request, multiplexed=not body.get("Tty"))
        try:
            await hijacked.write(STDOUT, err.message.encode() + b"\r\n")
        finally:
            hijacked.close()
        return web.Response()
    except BaseException:
        execution.running = False
        raise
    execution.process = process
    execution.pid = process.pid or 0
    if body.get("Detach"):
        asyncio.get_running_loop().create_task(_finish(execution, process))
        return web.Response(status=200)
    # as dockerd: the start request's Tty, not the exec's, says whether the output is framed
    # (docker-py starts a terminal's exec without it and reads frames)
    hijacked = await Hijacked.take(request, multiplexed=not body.get("Tty"))
    try:
        if execution.tty:
            await _terminal(execution, process, hijacked)
        else:
            await _pipes(execution, process, hijacked)
    finally:
        hijacked.close()
    return web.Response()


async def _finish(execution: ExecRecord, process, stop_output: Optional[Callable[[], None]] = None) -> None:
    """Its exit awaited; then ``stop_output`` ends the reading of its output, before its
    ends are closed (another process of the container may hold them still, so the
    reading is not waited for beyond the exit)."""
    try:
        if execution.tty:
            execution.exit_code = await wait_for_exit(process)
        else:
            execution.exit_code = await process.wait()
    finally:
        execution.running = False
        if stop_output is not None:
            stop_output()
        process.close()


async def _pipes(execution: ExecRecord, process, hijacked: Hijacked) -> None:
    async def copy_out(reader: Optional[asyncio.StreamReader], stream: int) -> None:
        while reader is not None:
            data = await reader.read(65536)
            if not data:
                return
            await hijacked.write(stream, data)

    async def copy_in() -> None:
        writer = process.stdin
        if writer is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while True:
                data = await hijacked.input.read(65536)
                if not data:
                    break
                writer.write(watch.feed(data))
                if watch.detached:
                    hijacked.gone.set()  # the client is done with it; the command runs on
                    return
                await writer.drain()
        writer.close()

    watch = DetachWatch(execution.detach_keys)
    feeding = asyncio.ensure_future(copy_in())
    outputs = asyncio.gather(copy_out(process.stdout, STDOUT), copy_out(process.stderr, STDERR))
    gone = asyncio.ensure_future(hijacked.gone.wait())
    try:
        await asyncio.wait([outputs, gone], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        outputs.cancel()
        raise
    finally:
        gone.cancel()
        feeding.cancel()
    # A client gone (or detached) leaves the output read on and dropped (its writes
    # return at once), as dockerd drops it: cancelled, the command blocked on its
    # full pipe for ever, its exec running and its pipes held.
    await _finish_or_detach(execution, process, watch, outputs.cancel)


async def _terminal(execution: ExecRecord, process, hijacked: Hijacked) -> None:
    """A terminal's output, raw, until every process let go of it; the client's bytes typed in."""
    loop = asyncio.get_running_loop()
    master = process.terminal.fileno()
    os.set_blocking(master, False)
    output: asyncio.Queue = asyncio.Queue()
    reading = [True]  # (paused while TERMINAL_QUEUE chunks wait for a slow client)

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's end of file
            data = b""
        output.put_nowait(data)
        if not data or output.qsize() >= TERMINAL_QUEUE:
            loop.remove_reader(master)
            reading[0] = False

    async def next_output() -> bytes:
        data = await output.get()
        if data and not reading[0] and output.qsize() < TERMINAL_QUEUE // 2:
            loop.add_reader(master, readable)
            reading[0] = True
        return data

    async def drain() -> None:  # once the client has gone: to the end, dropped
        while await next_output():
            pass

    def stop_reading() -> None:
        loop.remove_reader(master)
        reading[0] = False
        draining.cancel()

    async def copy_in() -> None:
        while True:
            data = await hijacked.input.read(65536)
            if not data:
                return
            view = memoryview(watch.feed(data))
            if watch.detached:
                hijacked.gone.set()  # the client is done with it; the command runs on
                return
            while view:
                try:
                    view = view[os.write(master, view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.01)

    watch = DetachWatch(execution.detach_keys)
    loop.add_reader(master, readable)
    feeding = asyncio.ensure_future(copy_in())
    ended, draining = False, loop.create_future()
    try:
        while not hijacked.gone.is_set():
            getting = asyncio.ensure_future(next_output())
            gone = asyncio.ensure_future(hijacked.gone.wait())
            await asyncio.wait([getting, gone], return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not getting.done():
                getting.cancel()
                break
            data = getting.result()
            if not data:
                ended = True
                break
            await hijacked.write(STDOUT, data)
    except BaseException:
        stop_reading()
        raise
    finally:
        feeding.cancel()
    if ended:
        stop_reading()
    else:  # the client went: read on and drop (a terminal's writer blocks once it is full), until the exit
        draining = asyncio.ensure_future(drain())
    await _finish_or_detach(execution, process, watch, stop_reading)


async def _finish_or_detach(
    execution: ExecRecord, process, watch: DetachWatch, stop_output: Optional[Callable[[], None]] = None
) -> None:
    """The exec's end awaited, or, when the client typed the detach keys, left to run on."""
    if watch.detached:
        asyncio.get_running_loop().create_task(_finish(execution, process, stop_output))
    else:
        await _finish(execution, process, stop_output)


async def _inspect(request: web.Request) -> web.Response:
    execution = _exec(request)
    return json_response(
        {
            "ID": execution.id,
            "Running": execution.running,
            "ExitCode": execution.exit_code,
            "ProcessConfig": {
                "tty": execution.tty,
                "entrypoint": execution.argv[0],
                "arguments": execution.argv[1:],
                "privileged": False,
                "user": execution.user or "",
            },
            "OpenStdin": execution.attach_stdin,
            "OpenStderr": execution.attach_stderr,
            "OpenStdout": execution.attach_stdout,
            "CanRemove": False,
            "ContainerID": execution.container.id,
            "DetachKeys": "",
            "Pid": execution.pid,
        }
    )


async def _resize(request: web.Request) -> web.Response:
    execution = _exec(request)
    rows, cols = query_int(request, "h", 24), query_int(request, "w", 80)
    if execution.tty and execution.running and execution.process is not None and rows and cols:
        with contextlib.suppress(OSError, SandboxError):
            execution.process.resize(rows, cols)
    return web.Response(status=200)


ROUTES: List[Route] = [
    ("POST", "/containers/{id}/exec", _create),
    ("POST", "/exec/{id}/start", _start),
    ("GET", "/exec/{id}/json", _inspect),
    ("POST", "/exec/{id}/resize", _resize),
]
