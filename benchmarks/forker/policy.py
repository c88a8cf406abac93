"""Write Docker's default policy as the launchers load it, for forkbench.c's FB_POLICY=DIR:
whole.bpf (the container's filter) and opened.bpf (the same with clone3 allowed: the cgroup
launcher's).  Usage: SANDBOXLIB_DEV=1 PYTHONPATH=. python3 benchmarks/forker/policy.py DIR"""

import os
import sys

from sandboxlib.security.bpf import clone3_split, compile_policy
from sandboxlib.security.capabilities import DEFAULT_CAPABILITIES
from sandboxlib.security.seccomp import DEFAULT, seccomp_option

policy, caps = seccomp_option(DEFAULT), frozenset(DEFAULT_CAPABILITIES)
assert policy is not None
opened, small = clone3_split(policy, caps)
for name, program in (("whole.bpf", compile_policy(policy, caps)), ("opened.bpf", opened)):
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(program)
print(
    f"whole {len(compile_policy(policy, caps)) // 8}, opened {len(opened) // 8}, clone3 filter {len(small) // 8} insns"
)
