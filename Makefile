# make demo  - install what is needed, build the wheel, install it into a fresh build/venv, run a sandboxed demo
# make test  - make lint, then the whole suite (root and rootless) against that wheel installed in build/venv
# make lint  - ruff (lint and format check), clang-format (csrc/), mypy (the public modules)
# make bench - install the peers, build, run the benchmarks
# make conformance - runtime-tools' validation tests against sandboxlib-runtime, runc and crun (docs/oci-runtime.md),
#                    and docker-py's integration suite against dockerd and sandboxlib daemon (conformance/DOCKER_PY.md)
# make build - the checkout built in place, for `SANDBOXLIB_DEV=1 python3 -m pytest` (needs cffi in $(PYTHON))
PYTHON ?= python3
# The venv's interpreter: Debian's, which the rootless test users can execute
# (the machine's default may live under root's 0700 home).
VENV_PYTHON ?= /usr/bin/python3
VENV = build/venv
TOOLS = build/tools
DIST = build/dist
# python3-venv and python3-dev: the venv and the extension's build with Debian's python3;
# clang-format: make lint.
APT_PACKAGES = build-essential libc6-dev musl-tools bubblewrap busybox-static uidmap util-linux iproute2 passwd \
	procps libseccomp-dev skopeo docker.io docker-registry buildah runc apache2-utils python3-venv python3-dev clang-format \
	nftables passt slirp4netns iperf3 \
	podman conmon containerd crun golang-go
# The peers run_all.py measures against (only `make bench` installs them).
BENCH_APT_PACKAGES = bubblewrap busybox-static crun runc podman conmon docker.io buildah uidmap \
	slirp4netns fuse-overlayfs containernetworking-plugins iptables util-linux
# make lint's tools, pinned: another ruff or clang-format may format differently.
# attrs and types-psutil: what mypy needs to see the types of the modules it checks.
LINT_PACKAGES = ruff==0.17.6 mypy==2.4.1 attrs types-psutil
PYTEST_ARGS ?= -q
# tests/test_pytest_plugin.py's oldest pytest, and what the sandbox imports
# from its interpreter's own prefix (cloudpickle): wheels, with their dependencies.
OLDEST_PYTEST = pytest==7.4.0 pluggy==1.0.0 cloudpickle
OLDEST_PYTEST_WHEELS = build/oldest-pytest
TESTS ?= $(CURDIR)/tests
STAMP = .make

.PHONY: deps install test-deps build demo lint suite test bench conformance conformance-runtime conformance-docker-py clean

$(STAMP)/apt:
	@mkdir -p $(STAMP)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	@touch $@

$(STAMP)/bench-apt: $(STAMP)/apt
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_APT_PACKAGES)
	@touch $@

$(TOOLS)/.stamp: $(STAMP)/apt
	rm -rf $(TOOLS)
	$(VENV_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q $(LINT_PACKAGES)
	@touch $@

deps: $(STAMP)/apt

# A fresh venv with the wheel built from this checkout and only its run-time
# dependencies: what a user's `pip install` gives.
install: $(STAMP)/apt
	rm -rf $(VENV) $(DIST) build/lib.* build/temp.* build/bdist.*  # nothing of an earlier build
	$(VENV_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip wheel -q --no-deps -w $(DIST) .
	$(VENV)/bin/pip install -q $(DIST)/sandboxlib-*.whl

# The test extras (the runner, and the optional parts the suite tests) on top;
# and the wheels of the oldest pytest and pluggy the pytest plugin supports
# (pyproject's floor, and the pluggy it allows), which its test installs.
test-deps: install
	$(VENV)/bin/pip install -q "$$(ls $(DIST)/sandboxlib-*.whl)[test]"
	rm -rf $(OLDEST_PYTEST_WHEELS)
	$(VENV)/bin/pip download -q --only-binary=:all: -d $(OLDEST_PYTEST_WHEELS) $(OLDEST_PYTEST)

build: $(STAMP)/apt
	$(PYTHON) setup.py -q build_ext --inplace

demo: install
	$(VENV)/bin/python examples/demo.py

lint: $(TOOLS)/.stamp
	$(TOOLS)/bin/ruff check .
	$(TOOLS)/bin/ruff format --check .
	clang-format --dry-run -Werror csrc/*.c csrc/*.h
	$(TOOLS)/bin/mypy

# The suite against the installed wheel: pytest runs from build/ (not the
# checkout) with --import-mode=importlib, so that the checkout's sandboxlib
# is not importable; tests/conftest.py and tests/test_installed.py check it.
suite: test-deps
	cd build && SANDBOXLIB_EXPECT_INSTALLED=$(CURDIR)/$(VENV) $(CURDIR)/$(VENV)/bin/pytest \
		--import-mode=importlib --rootdir=$(CURDIR) -c $(CURDIR)/pyproject.toml $(PYTEST_ARGS) $(TESTS)

test: lint
	$(MAKE) suite

bench: test-deps $(STAMP)/bench-apt
	$(VENV)/bin/python benchmarks/run_all.py
	$(VENV)/bin/python benchmarks/bench_spawn.py
	$(VENV)/bin/python benchmarks/bench_seccomp.py
	$(VENV)/bin/python benchmarks/bench_limits.py
	$(VENV)/bin/python benchmarks/bench_images.py
	$(VENV)/bin/python benchmarks/bench_cpu.py
	$(VENV)/bin/python benchmarks/bench_call.py
	$(VENV)/bin/python benchmarks/bench_pytest_marker.py
	$(VENV)/bin/python benchmarks/bench_async.py
	$(VENV)/bin/python benchmarks/bench_build.py
	$(VENV)/bin/python benchmarks/bench_registry.py
	$(VENV)/bin/python benchmarks/bench_dask.py
	$(VENV)/bin/python benchmarks/bench_daemon.py
	$(VENV)/bin/python benchmarks/bench_oci.py

# opencontainers/runtime-tools' validation tests, built from source (a git
# directory: RUNTIME_TOOLS_GIT, cloned when missing) with Debian's Go, run
# against sandboxlib-runtime, runc and crun; conformance/EXCLUSIONS.md lists
# what sandboxlib-runtime does not pass.  As root.
RUNTIME_TOOLS_GIT ?= build/runtime-tools.git
$(RUNTIME_TOOLS_GIT):
	git clone --bare -q https://github.com/opencontainers/runtime-tools $@

conformance: conformance-runtime conformance-docker-py

conformance-runtime: install $(RUNTIME_TOOLS_GIT)
	$(VENV)/bin/python conformance/run.py --source $(RUNTIME_TOOLS_GIT) --runtime $(VENV)/bin/sandboxlib-runtime

# docker/docker-py's tests/integration (a git directory: DOCKER_PY_GIT, cloned
# when missing) against a private dockerd and against `sandboxlib daemon`, in a
# network namespace of their own; conformance/DOCKER_PY.md lists what passes on
# dockerd and not on ours.  The suite runs in a venv of its own (its imports,
# pinned in the script).  As root.
DOCKER_PY_GIT ?= build/docker-py.git
$(DOCKER_PY_GIT):
	git clone --bare -q https://github.com/docker/docker-py $@

conformance-docker-py: test-deps $(DOCKER_PY_GIT)
	$(VENV)/bin/python conformance/docker_py.py --source $(DOCKER_PY_GIT)

clean:
	rm -rf build $(STAMP) sandboxlib/native/_native*.so sandboxlib/native/sbx-init sandboxlib/native/sbx-runtime *.egg-info
