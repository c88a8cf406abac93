"""``ImageStore.build``: the stages a target needs (independent ones side by side), each step
looked up in the cache first (``cache.py``), the target stage's image
tagged at the end.  A failed build references nothing new but the steps
that succeeded (the cache entries); what the failed step wrote is collected."""

from __future__ import annotations

import json
import os
import posixpath
import re
import threading
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..config.network import extra_hosts_option
from ..errors import BuildError, ConfigError, ImageFormatError, ImageNotFound, SandboxError, UnsupportedError
from ..images import Image, ImageStore
from ..images.newimage import host_platform
from . import cache, copy_step, run_step
from .context import Context, load_ignore
from .filehashes import FileHashes
from .parser import Instruction, parse, parse_line
from .progress import BuildEvent, Reporter, reporter
from .stages import Stage, dependencies, find, needed, split_stages, target_stage
from .steps import DEFAULT_PATH, METADATA, StageState, apply_metadata, pairs, unknown_flags, word, workdir
from .substitution import SubstitutionError, expand, expand_words

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["build", "PROXY_ARGS"]

PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
NETWORKS = ("none", "bridge", "host")
PARALLEL_STAGES = 2  # stages built at once, at most


def _platform_args() -> Dict[str, str]:
    os_name, arch = host_platform()
    found = {}
    for prefix in ("BUILD", "TARGET"):
        found.update({f"{prefix}PLATFORM": f"{os_name}/{arch}", f"{prefix}OS": os_name, f"{prefix}ARCH": arch})
        found[f"{prefix}VARIANT"] = ""
    return found


class Build:
    """One build: the store, context, options and the stages built so far."""

    def __init__(
        self,
        store: ImageStore,
        context: Context,
        *,
        file: str,
        escape: str,
        build_args: Dict[str, str],
        network: str,
        no_cache: bool,
        report: Reporter,
        stages: Tuple[Stage, ...],
        extra_hosts: Tuple[Tuple[str, str], ...] = (),
        cache_from: Optional[Sequence[str]] = None,
    ) -> None:
        self.store, self.context, self.file, self.escape = store, context, file, escape
        self.build_args, self.network, self.no_cache, self.report = build_args, network, no_cache, report
        self.stages = stages
        self.extra_hosts = extra_hosts
        # (history, diff_ids) of each cache_from image; None: every step of the cache may be used
        self.cache_sources = None if cache_from is None else self._sources(cache_from)
        self.used_args: set = set()
        self.global_args: Dict[str, str] = {}
        self.futures: Dict[int, Future[StageState]] = {}  # stage index -> its StageState, built in a worker thread
        self.cancelled = threading.Event()  # a stage failed, or the caller was interrupted: stop the others
        self.failure: Optional[BaseException] = None  # the first
        self.lock = threading.Lock()
        self.headers: Dict[str, list] = {}  # layer digest -> its tar headers (image views)

    # -- arguments -------------------------------------------------------------------
    def declare(self, ins: Instruction, scope: Dict[str, str], env: Dict[str, str], fallback: Dict[str, str]) -> None:
        for name, default in pairs(ins, _Scope(env, self.escape)):  # type: ignore[arg-type]
            if name in self.build_args:
                scope[name] = self.build_args[name]
                self.used_args.add(name)
            elif default is not None:
                scope[name] = default
            elif name in fallback:
                scope[name] = fallback[name]

    def global_arg_values(self, head: Tuple[Instruction, ...]) -> None:
        predefined = _platform_args()
        for ins in head:
            self.declare(ins, self.global_args, {**predefined, **self.global_args}, predefined)
        self.global_args = {**predefined, **self.global_args}

    # -- stages -------------------------------------------------------------------
    def base_of(self, stage: Stage) -> Tuple[Optional[StageState], Optional[str]]:
        """(the stage it builds on, or None; the base image's manifest digest, None for scratch)."""
        try:
            ref = expand(stage.base, self.global_args, self.escape)
        except SubstitutionError as err:
            raise stage.source.error(str(err)) from None
        if stage.platform:
            platform = expand(stage.platform, self.global_args, self.escape)
            host = self.global_args["TARGETPLATFORM"]
            if platform != host:
                raise UnsupportedError(
                    "platform", f"{self.file}:{stage.source.line}: only {host} builds here, not {platform}"
                )
        parent = find(self.stages, ref, stage.index)
        if parent is not None:
            return self.stage_result(parent, stage.source), None
        if ref.lower() == "scratch":
            return None, None
        return None, self.image(ref, stage.source).digest

    def image(self, ref: str, ins: Instruction) -> Image:
        """An image the Dockerfile names: from the store, else pulled (only
        with a network: ``network="none"`` builds reach nothing)."""
        try:
            return self.store.get(ref)
        except ImageNotFound:
            pass
        what = "neither a stage nor an image in the store" if ins.keyword != "FROM" else "not in the store"
        if self.network == "none":
            raise ins.error(f"{ref!r} is {what} (network=none: not pulled)")
        self.report(BuildEvent(kind="warning", text=f"pulling {ref}"))
        try:
            return self.store.pull(ref)
        except SandboxError as err:
            raise ins.error(f"{ref!r} is {what}, and pulling it failed: {err}") from err

    def run_stages(self, order: List[Stage]) -> None:
        """Build the stages, each in a worker thread once the stages it names are built:
        independent stages run side by side.  The first failure cancels the rest (a RUN
        in progress is killed) and is raised."""
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # (import sandboxlib stays light)

        workers = min(len(order), PARALLEL_STAGES)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandboxlib-build") as pool:
            for stage in order:  # (in order: a stage waits only for earlier ones, started before it)
                self.futures[stage.index] = pool.submit(self._build_after_dependencies, stage)
            try:
                wait(self.futures.values(), return_when=FIRST_EXCEPTION)
            finally:  # (also on Ctrl-C in this thread)
                if self.failure is not None or not all(f.done() for f in self.futures.values()):
                    self.cancelled.set()
                    for future in self.futures.values():
                        future.cancel()
        if self.failure is not None:
            raise self.failure

    def _build_after_dependencies(self, stage: Stage) -> StageState:
        try:
            for dep in dependencies(self.stages, stage):
                self.futures[dep.index].result()
            return self.build_stage(stage)
        except BaseException as err:
            with self.lock:
                if self.failure is None:
                    self.failure = err
            self.cancelled.set()
            raise

    def stage_result(self, stage: Stage, ins: Instruction) -> StageState:
        """A stage's result, waited for (a ``--from=$VAR`` named it only now)."""
        future = self.futures.get(stage.index)
        if future is None:
            raise ins.error(f"the stage {stage.label!r} is not built for this target (named through a variable?)")
        return future.result()

    def build_stage(self, stage: Stage) -> StageState:
        state = StageState(self.store, stage.label, self.escape)
        parent, manifest = self.base_of(stage)
        if parent is not None:
            manifest, state.key = parent.manifest, parent.key
            if manifest is not None:
                state.load(manifest)
        else:
            state.key = cache.base_key(manifest)
            if manifest is not None:
                state.load(manifest)
        state.manifest = manifest
        triggers = [parse_line(t, self.file, stage.source.line) for t in state.config.pop("OnBuild", None) or []]
        body = list(triggers) + list(stage.instructions)
        for number, ins in enumerate(body, 1):
            if self.cancelled.is_set():
                raise BuildError(self.file, ins.line, "cancelled: another stage failed")
            self.report(BuildEvent(kind="step", stage=stage.label, step=number, total=len(body), text=ins.original))
            self.step(state, ins)
        return state

    # -- steps ---------------------------------------------------------------------
    def _sources(self, refs: Sequence[str]) -> List[Tuple[list, list]]:
        """The cache_from images' histories and layers; a name the store does not
        have is skipped, with a warning (as the legacy builder does)."""
        found = []
        for ref in refs:
            try:
                found.append(_lineage(self.store, self.store.get(ref).digest))
            except ImageNotFound:
                self.report(BuildEvent(kind="warning", text=f"cache_from: no image {ref!r} here, skipped"))
        return found

    def cached(self, state: StageState, key: str) -> bool:
        found = None if self.no_cache else self.store.cached_step(key)
        if found is None or not self._from_sources(found):
            return False
        state.load(found)
        state.key = key
        self.report(BuildEvent(kind="cached", stage=state.name, text=key))
        return True

    def _from_sources(self, manifest: str) -> bool:
        """With cache_from, a step's cached result counts only when it is one of
        those images or an ancestor of one: its history and layers begin theirs."""
        if self.cache_sources is None:
            return True
        history, layers = _lineage(self.store, manifest)
        return any(h[: len(history)] == history and d[: len(layers)] == layers for h, d in self.cache_sources)

    def step(self, state: StageState, ins: Instruction) -> None:
        keyword = ins.keyword
        if keyword == "ARG":
            unknown_flags(ins, ())
            # no key of its own: a RUN's key has the args it sees, other steps their substituted text
            self.declare(ins, state.args, state.substitution_env(), self.global_args)
            return
        if keyword in METADATA or keyword == "WORKDIR":
            # the substituted text is in the key (through the config it makes)
            probe = StageState(self.store, state.name, self.escape)
            probe.image, probe.args, probe.cmd_set = {"config": dict(state.config)}, state.args, state.cmd_set
            created_by = apply_metadata(ins, probe) if keyword != "WORKDIR" else "WORKDIR " + workdir(ins, state)
            key = cache.step_key(state.key, created_by, {})
            if self.cached(state, key):
                state.cmd_set = probe.cmd_set
                return
            if keyword == "WORKDIR":
                self.workdir(state, ins, key)
                return
            state.image.update(
                {"config": probe.config, **({"author": probe.image["author"]} if "author" in probe.image else {})}
            )
            state.cmd_set = probe.cmd_set
            state.commit(created_by, None, key)
            return
        if keyword == "RUN":
            self.run(state, ins)
        elif keyword in ("COPY", "ADD"):
            self.copy(state, ins)
        else:  # FROM inside a stage cannot happen (split_stages)
            raise ins.error("unexpected instruction")

    def labels(self, state: StageState, labels: Dict[str, str]) -> None:
        """The build's ``labels=``, a last step of the target (as ``docker build --label``)."""
        created_by = "LABEL " + " ".join(f"{k}={v}" for k, v in labels.items())
        key = cache.step_key(state.key, "labels " + json.dumps(labels, sort_keys=True), {})
        if not self.cached(state, key):
            state.config["Labels"] = {**(state.config.get("Labels") or {}), **labels}
            state.commit(created_by, None, key)

    def workdir(self, state: StageState, ins: Instruction, key: str) -> None:
        path = workdir(ins, state)
        state.config["WorkingDir"] = path
        view = state.view(self.headers)
        layer = None
        if path != "/" and not view.is_dir(path):
            layer = copy_step.write_layer(
                self.store,
                view,
                [copy_step.Group(name="", is_dir=True, entries=(copy_step.Entry(rel="", mode=0o40755),))],
                path,
                True,
                (0, 0),
                None,
                f"{ins.file}:{ins.line}",
            )
        state.commit("WORKDIR " + path, layer, key)

    def run(self, state: StageState, ins: Instruction) -> None:
        unknown_flags(ins, ("network",))
        network = ins.flag("network") or "default"
        if network not in ("default", "none", self.network):  # a Dockerfile never widens the build's network
            raise ins.error(f"--network={network}: the build's network is {self.network}")
        network = self.network if network == "default" else network
        argv = self.command(ins, state)
        image_env = state.env()
        env = {k: v for k, v in state.args.items() if k not in image_env}  # what the key sees
        args_seen = dict(env)
        env.update({k: v for k, v in self.build_args.items() if k in PROXY_ARGS})  # never in the key
        if "PATH" not in image_env:
            env["PATH"] = DEFAULT_PATH
        created_by = "RUN " + " ".join(argv) if ins.exec_form is None else "RUN " + str(argv)
        hosts = "".join(f" host={name}:{ip}" for name, ip in self.extra_hosts)  # (what its /etc/hosts says)
        key = cache.step_key(state.key, created_by + f" network={network}" + hosts, args_seen)
        if self.cached(state, key):
            return
        if state.manifest is None:
            raise ins.error("RUN needs a base image with a command to run (FROM scratch has none)")
        layer = run_step.run_command(
            self.store,
            state.manifest,
            argv,
            env=env,
            user=state.config.get("User"),
            cwd=state.config.get("WorkingDir") or None,
            network=network,
            extra_hosts=self.extra_hosts,
            ins=ins,
            report=self.report,
            stage=state.name,
            cancelled=self.cancelled,
        )
        state.commit(created_by, layer, key)

    @staticmethod
    def command(ins: Instruction, state: StageState) -> List[str]:
        """RUN's argv: the exec form, or the shell with the script (a lone
        heredoc is the script; others stay in it for the shell to read)."""
        if ins.exec_form is not None:
            return list(ins.exec_form)
        lone = re.fullmatch(r"<<-?([\"']?)(\w+)\1", ins.args.strip())
        if lone and len(ins.heredocs) == 1:
            return state.shell() + [ins.heredocs[0].content]
        return state.shell() + [ins.args + "".join("\n" + h.content + h.name for h in ins.heredocs)]

    def copy(self, state: StageState, ins: Instruction) -> None:
        is_add = ins.keyword == "ADD"
        unknown_flags(ins, ("from", "chown", "chmod", "link") if not is_add else ("chown", "chmod", "link", "checksum"))
        env = state.substitution_env()
        if ins.exec_form is not None:
            words = [word(ins, state, w) for w in ins.exec_form]
        else:
            try:
                words = expand_words(ins.args, env, self.escape)
            except SubstitutionError as err:
                raise ins.error(str(err)) from None
        if len(words) < 2:
            raise ins.error("needs at least one source and a destination")
        *srcs, dest = words
        chmod = self.chmod(ins, state)
        heredocs = {h.name: h for h in ins.heredocs}
        groups: List[copy_step.Group] = []
        plain = []
        for src in srcs:
            name = src[2:].lstrip("-").strip("'\"") if src.startswith("<<") else None
            if name in heredocs:
                groups.append(copy_step.from_heredoc(heredocs[name], env))
            else:
                plain.append(src)
        source = ins.flag("from")
        if source is not None:
            source = word(ins, state, source)
            view = self.source_view(source, state, ins)
            groups += copy_step.from_image(view, plain, ins)
        else:
            urls = [s for s in plain if is_add and s.startswith(("http://", "https://"))]
            if urls and self.network == "none":
                raise ins.error('ADD of a URL needs a network: build with network="bridge" or "host"')
            checksum = ins.flag("checksum")
            groups += [copy_step.from_url(url, word(ins, state, checksum) if checksum else None, ins) for url in urls]
            plain = [s for s in plain if s not in urls]
            if any(s.startswith("git@") for s in plain):
                raise UnsupportedError("ADD", f"{ins.file}:{ins.line}: ADD of a git repository is not supported")
            if plain:
                groups += copy_step.from_context(self.context, plain, ins, extract=is_add)
        spec = ins.flag("chown")
        spec = word(ins, state, spec) if spec else None
        owner_key = (spec or "", chmod)
        dest_is_dir = dest.endswith("/") or len(groups) > 1 or any(g.is_dir for g in groups)
        if len(groups) > 1 and not dest.endswith("/"):
            raise ins.error("with several sources, the destination must be a directory ending with /")
        full_dest = posixpath.join(state.config.get("WorkingDir") or "/", dest)
        created_by = f"{ins.keyword} {' '.join(words)}" + (f" (from {source})" if source else "")
        digest = copy_step.content_hash(groups, (0, 0), chmod)
        key = cache.step_key(state.key, created_by, {"owner": str(owner_key)}, digest)
        if self.cached(state, key):
            return
        view = state.view(self.headers)
        owner = copy_step.owner_of(spec, view, ins)
        try:
            layer = copy_step.write_layer(
                self.store, view, groups, full_dest, dest_is_dir, owner, chmod, f"{ins.file}:{ins.line}"
            )
        except ImageFormatError as err:  # the layer check's refusal (an archive's hostile entries)
            raise ins.error(err.detail) from None
        state.commit(created_by, layer, key)

    def chmod(self, ins: Instruction, state: StageState) -> Optional[int]:
        value = ins.flag("chmod")
        if value is None:
            return None
        value = word(ins, state, value)
        try:
            mode = int(value, 8)
        except ValueError:
            raise ins.error(f"--chmod={value}: an octal mode was expected") from None
        if not 0 <= mode <= 0o7777:
            raise ins.error(f"--chmod={value}: out of range")
        return mode

    def source_view(self, source: str, state: StageState, ins: Instruction):
        current = next(s for s in self.stages if s.label == state.name)
        stage = find(self.stages, source, current.index)
        if stage is not None:
            return self.stage_result(stage, ins).view(self.headers)
        if source.isdigit():
            raise ins.error(f"--from={source}: no stage {source} before this one")
        image = self.image(source, ins)
        probe = StageState(self.store, source, self.escape)
        probe.load(image.digest)
        return probe.view(self.headers)


def _lineage(store: ImageStore, manifest: str) -> Tuple[list, list]:
    """(history, layer diff_ids) of an image's config."""
    config = json.loads(store.blobs.read(store.get(manifest).id))
    return config.get("history") or [], (config.get("rootfs") or {}).get("diff_ids") or []


class _Scope:
    """What ``pairs`` needs of a state for ARG lines: their substitution environment."""

    def __init__(self, env: Dict[str, str], escape: str) -> None:
        self.env, self.escape = env, escape

    def substitution_env(self) -> Dict[str, str]:
        return self.env


def build(
    store: ImageStore,
    context: str,
    *,
    tag: Union[str, List[str], None] = None,
    dockerfile: Optional[str] = None,
    build_args: Optional[Mapping[str, str]] = None,
    target: Optional[str] = None,
    network: str = "none",
    no_cache: bool = False,
    progress: Union[bool, Reporter, None] = False,
    labels: Optional[Mapping[str, str]] = None,
    extra_hosts: Optional[Mapping[str, str]] = None,
    cache_from: Optional[Sequence[str]] = None,
) -> Image:
    if not os.path.isdir(context):
        raise ConfigError("context", f"{context!r} is not a directory")
    if network not in NETWORKS:
        raise ConfigError("network", f"expected one of {', '.join(NETWORKS)}, got {network!r}")
    context = os.path.abspath(context)
    file = os.path.join(context, dockerfile or "Dockerfile")
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("dockerfile", f"{file} does not exist") from None
    build_args = {str(k): str(v) for k, v in (build_args or {}).items()}
    hosts = extra_hosts_option(extra_hosts)
    if isinstance(cache_from, str):
        cache_from = [cache_from]
    tags = [tag] if isinstance(tag, str) else list(tag or [])
    report = reporter(progress)
    dockerfile_parsed = parse(text, file)
    head, stages = split_stages(dockerfile_parsed, file)
    target_at = target_stage(stages, target, file)
    hashes = FileHashes(store.path, store.tmp)
    opened = Context(context, load_ignore(context, file), hashes)
    try:
        with store.writing():
            job = Build(
                store,
                opened,
                file=file,
                escape=dockerfile_parsed.escape,
                build_args=build_args,
                network=network,
                no_cache=no_cache,
                report=report,
                stages=stages,
                extra_hosts=hosts,
                cache_from=None if cache_from is None else [str(ref) for ref in cache_from],
            )
            job.global_arg_values(head)
            job.run_stages(needed(stages, target_at))
            final = job.futures[target_at.index].result()
            if labels:
                job.labels(final, {str(k): str(v) for k, v in labels.items()})
            if final.manifest is None:
                raise BuildError(file, 0, "the target stage is an empty scratch image: nothing to tag")
            unused = sorted(set(build_args) - job.used_args - PROXY_ARGS)
            if unused:
                report(BuildEvent(kind="warning", text=f"build arguments not consumed: {', '.join(unused)}"))
            image = store.add(final.manifest, tuple(tags))
            hashes.save()
    except BaseException:
        opened.close()
        store.collect()
        raise
    opened.close()
    report(BuildEvent(kind="done", text=image.id))
    return image
