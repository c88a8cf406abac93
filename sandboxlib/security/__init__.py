"""Capabilities and seccomp: policies, Docker/OCI profiles, BPF."""
