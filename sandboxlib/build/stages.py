"""The stages of a Dockerfile: the global ``ARG``s before the first
``FROM``, each ``FROM ... [AS name]`` and its instructions, which stages a
stage depends on (``FROM <stage>``, ``COPY --from=<stage>``), and the ones a
target needs: the others are never built."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import attrs

from ..errors import BuildError
from .parser import Dockerfile, Instruction

__all__ = ["Stage", "split_stages", "needed", "dependencies", "find", "target_stage"]

_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]*")


@attrs.frozen(kw_only=True)
class Stage:
    index: int
    name: Optional[str]  # lower case, as Docker compares them
    base: str  # the FROM argument as written (substituted later)
    platform: Optional[str]
    source: Instruction  # the FROM line
    instructions: Tuple[Instruction, ...]

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


def split_stages(dockerfile: Dockerfile, file: str) -> Tuple[Tuple[Instruction, ...], Tuple[Stage, ...]]:
    """(global ARG instructions, stages)."""
    head: List[Instruction] = []
    stages: List[Stage] = []
    current: Optional[Tuple[Instruction, List[Instruction]]] = None
    for ins in dockerfile.instructions:
        if ins.keyword == "FROM":
            if current:
                stages.append(_stage(len(stages), *current))
            current = (ins, [])
        elif current is None:
            if ins.keyword != "ARG":
                raise ins.error("only ARG may come before the first FROM")
            head.append(ins)
        else:
            current[1].append(ins)
    if current is None:
        raise BuildError(file, 0, "the Dockerfile has no FROM instruction")
    stages.append(_stage(len(stages), *current))
    seen: Dict[str, Stage] = {}
    for stage in stages:
        if stage.name and stage.name in seen:
            raise stage.source.error(f"the stage name {stage.name!r} is used twice")
        if stage.name:
            seen[stage.name] = stage
    return tuple(head), tuple(stages)


def _stage(index: int, source: Instruction, body: List[Instruction]) -> Stage:
    words = source.args.split()
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        if not _NAME.fullmatch(words[2]):
            raise source.error(f"invalid stage name {words[2]!r}")
        name = words[2].lower()
    elif len(words) != 1:
        raise source.error("expected FROM [--platform=...] IMAGE [AS NAME]")
    return Stage(
        index=index,
        name=name,
        base=words[0],
        platform=source.flag("platform"),
        source=source,
        instructions=tuple(body),
    )


def find(stages: Tuple[Stage, ...], ref: str, before: int) -> Optional[Stage]:
    """The stage ``ref`` names (its name, or its index) among the first ``before``, or None."""
    for stage in stages[:before]:
        if stage.name == ref.lower() or (ref.isdigit() and int(ref) == stage.index):
            return stage
    return None


def target_stage(stages: Tuple[Stage, ...], target: Optional[str], file: str) -> Stage:
    if target is None:
        return stages[-1]
    found = find(stages, target, len(stages))
    if found is None:
        known = ", ".join(s.name for s in stages if s.name) or "none"
        raise BuildError(file, 0, f"target stage {target!r} could not be found (named stages: {known})")
    return found


def dependencies(stages: Tuple[Stage, ...], stage: Stage) -> List[Stage]:
    """The earlier stages ``stage`` names as written (``FROM <stage>``, ``COPY --from=<stage>``); a name
    made of variables is resolved at build time, and waited for then."""
    refs = [stage.base] + [f for ins in stage.instructions for f in [ins.flag("from")] if f]
    found = [find(stages, ref, stage.index) for ref in refs]
    return [s for s in dict.fromkeys(found) if s is not None]


def needed(stages: Tuple[Stage, ...], target: Stage) -> List[Stage]:
    """The stages the target needs, in build order."""
    want = {target.index}
    for stage in reversed(stages[: target.index + 1]):
        if stage.index in want:
            want.update(dep.index for dep in dependencies(stages, stage))
    return [s for s in stages if s.index in want]
