"""Building images from Dockerfiles, daemonless and rootless, with a
content-addressed cache in the image store: ``ImageStore.build``."""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Union

from ..images import Image
from ..runtime import ImageStore as _RuntimeStore
from .builder import build
from .progress import BuildEvent, Reporter

__all__ = ["ImageStore", "BuildEvent", "build"]


class ImageStore(_RuntimeStore):
    """The image store (see :class:`sandboxlib.runtime.ImageStore`) that also builds images."""

    def build(
        self,
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
        """Build the Dockerfile in ``context`` (``dockerfile``: its path,
        relative to the context; default ``Dockerfile``) as ``docker build``
        does, tag the target stage's image ``tag`` and return it.

        Each ``RUN`` runs in a container with default security and
        ``network`` (``"none"``; ``"bridge"``: NAT to the outside, as
        ``docker build``'s default; or ``"host"``); every step is looked up in
        the store's build cache first (``no_cache=True``: never), which
        ``prune()`` empties.  ``build_args``: ``--build-arg`` values;
        ``target``: the stage to build (default: the last); ``labels``: added
        to the image; ``extra_hosts``: ``{name: address}`` lines of the
        ``RUN`` containers' ``/etc/hosts`` (``--add-host``; in their steps'
        cache keys); ``cache_from``: image names whose steps may be reused
        (``--cache-from``): given, a step is taken from the cache only when
        what it made is one of these images or an ancestor of one (its
        history and layers begin theirs; a name the store lacks is skipped,
        as Docker's legacy builder does); ``progress``: True prints steps and output on stderr, a
        callable receives each :class:`BuildEvent` (from the build's worker
        threads: independent stages are built side by side).

        Raises:
            BuildError: naming the file and line (a syntax error, an unknown
                stage, a missing or excluded source, a COPY out of the context).
            BuildStepFailed: a RUN failed (its exit status and last output lines).
        """
        return build(
            self,
            context,
            tag=tag,
            dockerfile=dockerfile,
            build_args=build_args,
            target=target,
            network=network,
            no_cache=no_cache,
            progress=progress,
            labels=labels,
            extra_hosts=extra_hosts,
            cache_from=cache_from,
        )
