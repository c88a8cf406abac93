"""``sandboxlib-runtime``, an OCI runtime (runtime-spec 1.1 and runc's CLI) on
sandboxlib's init: ``cli`` the command line, ``spec`` config.json, ``state`` the
per-container state, ``lifecycle`` the verbs, ``cgroup``, ``hooks``,
``console``, ``features``, ``default_spec``.  Nothing is imported here: the
command line loads what each verb needs."""
