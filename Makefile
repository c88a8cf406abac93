# make demo  - install what is needed, build, run a sandboxed demo
# make test  - install, build, run the whole test suite
# make bench - install the peers, build, run the benchmarks
PYTHON ?= python3
APT_PACKAGES = build-essential libc6-dev musl-tools bubblewrap busybox-static uidmap util-linux iproute2 passwd procps libseccomp-dev skopeo docker.io
# The peers run_all.py measures against (only `make bench` installs them).
BENCH_APT_PACKAGES = bubblewrap busybox-static crun runc podman conmon docker.io uidmap \
	slirp4netns fuse-overlayfs containernetworking-plugins iptables util-linux
PIP_PACKAGES = setuptools wheel cffi attrs psutil cloudpickle pytest pytest-timeout pytest-xdist zstandard ipython ipykernel jupyter_client
STAMP = .make

.PHONY: deps build demo test bench clean

$(STAMP)/apt:
	@mkdir -p $(STAMP)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	@touch $@

$(STAMP)/pip:
	@mkdir -p $(STAMP)
	$(PYTHON) -m pip install -q --upgrade $(PIP_PACKAGES)
	@touch $@

$(STAMP)/bench-apt: $(STAMP)/apt
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_APT_PACKAGES)
	@touch $@

deps: $(STAMP)/apt $(STAMP)/pip

build: deps
	$(PYTHON) setup.py -q build_ext --inplace
	$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e .

demo: build
	$(PYTHON) examples/demo.py

test: build
	$(PYTHON) -m pytest -q tests

bench: build $(STAMP)/bench-apt
	$(PYTHON) benchmarks/run_all.py
	$(PYTHON) benchmarks/bench_spawn.py
	$(PYTHON) benchmarks/bench_seccomp.py
	$(PYTHON) benchmarks/bench_limits.py
	$(PYTHON) benchmarks/bench_images.py
	$(PYTHON) benchmarks/bench_call.py

clean:
	rm -rf build $(STAMP) sandboxlib/_native*.so sandboxlib/sbx-init *.egg-info
