# runq — see README.md. Everything here runs as root on Debian 12.
SHELL := /bin/bash
PREFIX      ?= /var/lib/runq
HELPERS     ?= /var/cache/runq/cargo
HOST_ARCH   := $(shell uname -m)
ARCH        ?= $(HOST_ARCH)
ARCH_TARGET ?= $(ARCH)-unknown-linux-gnu
# cargo's linker variable for the target, e.g. CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER
LINKER_VAR  := CARGO_TARGET_$(shell echo $(ARCH_TARGET) | tr 'a-z-' 'A-Z_')_LINKER
STATIC_DIR  := target/$(ARCH_TARGET)/release
TREE        := build/qemu
export PATH := $(HOME)/.cargo/bin:$(PATH)

# KERNEL=runq builds the minimal kernel from kernel-config/ (x86_64) and
# installs it beside Debian's cloud kernel; KERNEL=debian skips the build.
KERNEL      ?= $(if $(filter x86_64,$(ARCH)),runq,debian)
# The default guest kernel: the minimal one where it is built (0.32x the
# boot time of Debian's, half the memory); Debian's stays selectable
# (--kernel debian, RUNQ_KERNEL=debian) and is the default with
# KERNEL=debian or DEFAULT_KERNEL=debian.
DEFAULT_KERNEL ?= $(KERNEL)
KERNEL_DIR  := build/kernel
# (defined before APT_PACKAGES, which expands it at once)
KERNEL_PACKAGES := $(if $(filter runq,$(KERNEL)),linux-source-6.1 bc bison flex libelf-dev libssl-dev kmod)
APT_PACKAGES := qemu-system-x86 linux-image-cloud-amd64 docker.io containerd runc \
	busybox-static cpio libseccomp-dev libcap-ng-dev python3 e2fsprogs xfsprogs qemu-utils iproute2 \
	$(KERNEL_PACKAGES)

# apt_ensure PKGS: a shell line installing those of Debian's PKGS not yet installed
apt_ensure = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	  grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "==> packages: installing" $$missing "(apt, 1-3 min)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

.PHONY: all deps build tree helpers-cross install install-containerd demo test test-template test-soak test-cri test-podman test-s390x fuzz unit integration bench clean lint cross kernel

ifeq ($(ARCH),$(HOST_ARCH))
all: build tree
HELPER_BIN  := $(HELPERS)/bin
else
# Another arch: its binaries cross-built, and its QEMU tree assembled from
# Debian's packages of that arch (build/qemu-$(ARCH)).
all: cross tree
HELPER_BIN  := $(HELPERS)-$(ARCH)/bin
TREE        := build/qemu-$(ARCH)
endif
# Cross builds link the target's libraries (libseccomp, libcap-ng) from
# Debian's multiarch packages with Debian's cross gcc.
CROSS_ENV   := LIBSECCOMP_LIB_PATH=/usr/lib/$(ARCH)-linux-gnu PKG_CONFIG_ALLOW_CROSS=1 \
	PKG_CONFIG_LIBDIR=/usr/lib/$(ARCH)-linux-gnu/pkgconfig:/usr/share/pkgconfig \
	$(LINKER_VAR)=$(ARCH)-linux-gnu-gcc

# The Rust toolchain the workspace needs (rust-version in Cargo.toml).
RUST_MIN    := $(shell sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
rust_check  = v=$$(rustc --version 2>/dev/null | cut -d' ' -f2); \
	if [ -z "$$v" ] || [ "$$(printf '%s\n' $(RUST_MIN) "$$v" | sort -V | head -n1)" != $(RUST_MIN) ]; then \
	  echo "runq needs a Rust toolchain >= $(RUST_MIN) (found: $${v:-none}); install it with rustup, see README.md" >&2; exit 1; \
	fi

## deps: Debian packages and the vhost-user helpers from crates.io (each
## helper validated, rebuilt when bad: qemu/helpers.sh)
deps:
	@$(rust_check)
	@$(call apt_ensure,$(APT_PACKAGES))
	@qemu/helpers.sh $(HELPERS)

## build: the host runtime, and static proxy/init binaries
build:
	@$(rust_check)
	@echo "==> build: runq, runq-proxy, runq-init (cargo; 2-4 min on 2 cores the first time)"
	cargo build --release -p runq
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $(ARCH_TARGET) -p runq-proxy -p runq-init

## kernel: the minimal guest kernel (cached by content in /var/cache/runq/kernel)
kernel:
	kernel-config/build.sh $(KERNEL_DIR)

## tree: the QEMU tree (QEMU, helpers, kernels, initrds, proxy)
ifneq ($(ARCH),$(HOST_ARCH))
tree: cross helpers-cross
	TREE_ARCH=$(ARCH) qemu/build-tree.sh $(TREE) $(STATIC_DIR) $(HELPER_BIN)
else ifeq ($(KERNEL),runq)
tree: build kernel
	DEFAULT_KERNEL=$(DEFAULT_KERNEL) qemu/build-tree.sh $(TREE) $(STATIC_DIR) $(HELPER_BIN) $(KERNEL_DIR)
else
tree: build
	qemu/build-tree.sh $(TREE) $(STATIC_DIR) $(HELPER_BIN)
endif

## helpers-cross: virtiofsd and vhost-device-vsock for ARCH (cached)
helpers-cross: cross
	@$(CROSS_ENV) qemu/helpers.sh $(HELPERS)-$(ARCH) $(ARCH_TARGET)

## install: everything, then register runtime "runq" with dockerd
install: deps tree
	@echo "==> install: $(PREFIX)/{runq,runq-exec,qemu}, runtime runq registered with dockerd (seconds)"
	install -d $(PREFIX)
	install -m 0755 target/release/runq $(PREFIX)/runq.new && mv -f $(PREFIX)/runq.new $(PREFIX)/runq
	install -m 0755 contrib/runq-exec $(PREFIX)/runq-exec
	rm -rf $(PREFIX)/qemu.new && cp -a $(TREE) $(PREFIX)/qemu.new
	rm -rf $(PREFIX)/qemu.old; [ ! -d $(PREFIX)/qemu ] || mv $(PREFIX)/qemu $(PREFIX)/qemu.old
	mv $(PREFIX)/qemu.new $(PREFIX)/qemu && rm -rf $(PREFIX)/qemu.old
	contrib/daemon-json.py register $(PREFIX)/runq
	contrib/dockerd.sh ensure

## install-containerd (opt-in): runtime handler "runq" in CONTAINERD_CONFIG
CONTAINERD_CONFIG ?= /etc/containerd/config.toml
install-containerd: install
	contrib/containerd-register.sh $(CONTAINERD_CONFIG) $(PREFIX)/runq
	@echo "restart containerd to pick it up"

## demo: install if needed, then run a container in a VM and show it
demo:
	@[ -x $(PREFIX)/runq ] && [ -f $(PREFIX)/qemu/kernels/default/kernel ] || $(MAKE) install
	@test/demo.sh

## test: unit tests, then integration tests against a real dockerd
test: unit integration

unit: deps
	cargo test --workspace

integration: install
	test/run

## test-template: the integration suite again, every VM started from a VM template (--template)
test-template: install
	RUNQ_TEST_TEMPLATE=1 test/run

## test-soak: churn (200 sequential + 20x10 parallel runs), host state before/after
test-soak: install
	test/soak

## test-cri: pods through containerd's CRI plugin with handler runq (a private containerd, CNI bridge in a netns of its own)
test-cri: install
	@$(call apt_ensure,containerd containernetworking-plugins python3-venv gcc libc6-dev)
	test/cri

## test-podman: Debian's podman with --runtime /var/lib/runq/runq (no Docker daemon in the path)
test-podman: install
	@$(call apt_ensure,podman)
	test/podman

## test-s390x: cross-arch boot test: s390x guest (Debian kernel, s390x
## runq-init, s390x busybox image) under qemu-system-s390x, through docker;
## and the native s390x tree's programs under qemu-user
test-s390x: install
	@$(call apt_ensure,qemu-system-misc qemu-user-static)
	$(MAKE) ARCH=s390x
	test/s390x

## fuzz: cargo-fuzz targets (wire decoder, config.json rewrite, disk specs), FUZZ_SECONDS each
fuzz:
	fuzz/run

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd fuzz && cargo check --bins --quiet

## bench: runq (booting and from a VM template) vs runc vs gVisor vs bare QEMU, side by side (RUNS=10)
bench: install
	@$(call apt_ensure,runsc)
	bench/run

## cross: all binaries for another arch, e.g. `make ARCH=s390x` (Debian's cross gcc links)
# runq links libseccomp (as runc does): the target's libseccomp-dev comes
# from Debian's $(ARCH) packages (multiarch).
cross:
	@dpkg --print-foreign-architectures | grep -qx $(ARCH) || { dpkg --add-architecture $(ARCH) && apt-get update -qq; }
	@$(call apt_ensure,gcc-$(ARCH)-linux-gnu libc6-dev-$(ARCH)-cross libseccomp-dev:$(ARCH) libcap-ng-dev:$(ARCH))
	rustup target list --installed | grep -qx $(ARCH_TARGET) || rustup target add $(ARCH_TARGET)
	$(CROSS_ENV) cargo build --release --target $(ARCH_TARGET) -p runq
	$(LINKER_VAR)=$(ARCH)-linux-gnu-gcc RUSTFLAGS="-C target-feature=+crt-static" \
	  cargo build --release --target $(ARCH_TARGET) -p runq-proxy -p runq-init
	@ls -l target/$(ARCH_TARGET)/release/runq target/$(ARCH_TARGET)/release/runq-proxy target/$(ARCH_TARGET)/release/runq-init

clean:
	cargo clean
	rm -rf build
