//! Types and wire format shared by the runtime (`runq`), the proxy
//! (`runq-proxy`, PID 1 of the container) and the guest init (`runq-init`).
//!
//! * [`VmSpec`] is the VM description that `runq create` derives from the
//!   OCI bundle and the proxy reads inside the container.
//! * [`HostMsg`], [`GuestMsg`] and [`wire`] are the framed, versioned
//!   protocol spoken over the vsock connections between proxy and guest.

pub mod bpf;
pub mod exec_args;
pub mod image;
pub mod resolve;
pub mod slots;
pub mod spec;
pub mod tree;
pub mod wire;

pub use spec::{
    rlimit_resource, Accel, Cap, CapSets, Disk, DiskCache, DiskFormat, DiskFs, Drive, GuestArch,
    GuestConfig, GuestDisk, HostFilters, HostSide, InitOptions, Machine, MountConfig, NinePCache,
    ProcessSpec, RootConfig, RootDisk, Share, TmpfsMount, VmSpec, DEFAULT_KERNEL, QEMU_GID,
    QEMU_UID, RLIMIT_NAMES, TEMPLATE_DIR, TEMPLATE_RAM, TEMPLATE_READY, TEMPLATE_STATE,
};
pub use wire::{ExitStatus, GuestMsg, Hello, HostMsg, WireError};

/// Wire protocol version; host and guest must agree exactly, since both are
/// built from the same tree and installed together.
pub const PROTOCOL_VERSION: u32 = 4;

/// vsock port on the host (CID 2) that the guest dials for its control
/// connection.
pub const CONTROL_PORT: u32 = 1024;

/// vsock port in the guest where runq-init accepts exec connections.
pub const EXEC_PORT: u32 = 1025;

/// vsock port on the host where the proxy relays DNS-over-TCP streams to
/// Docker's embedded DNS server (127.0.0.11 in the container's netns).
pub const DNS_PORT: u32 = 1053;

/// Docker's embedded DNS server address on user-defined networks.
pub const DOCKER_DNS: &str = "127.0.0.11";

/// Where the runtime mounts the per-container runq directory (holding
/// `vm.json`) inside the proxy's container.
pub const CONTAINER_RUNQ_DIR: &str = "/runq";
/// The container's own rootfs, as seen by the proxy.
pub const CONTAINER_ROOTFS: &str = "/rootfs";
/// Private tmpfs for the proxy's sockets and the guest console log.
pub const CONTAINER_RUN_DIR: &str = "/run";
/// The VM description file name inside [`CONTAINER_RUNQ_DIR`].
pub const VM_SPEC_FILE: &str = "vm.json";
/// virtiofs tag of the shared root filesystem.
pub const ROOTFS_TAG: &str = "rootfs";

/// TCG translation cache cap in MiB (QEMU's default reserves 1 GiB, which
/// a busy guest would fill); the runtime counts it in the VM's overhead.
/// Measured (make bench, 2 cores): a boot translates ~34 MiB, so below 32
/// every start flushes the cache (+70-100 ms at 16); and fork/exec-heavy
/// guests run faster with a smaller cache (300 shell loops: 44 s at 128,
/// 31 s at 32, 27 s at 16: stale translations of reused guest pages cost
/// more than retranslating after a flush). 32 keeps starts as fast as 128.
pub const TCG_TB_MIB: u32 = 32;

/// DNS streams relayed at once, at each end of the relay (two threads
/// each): a guest opening more gets the excess closed.
pub const MAX_DNS_RELAYS: usize = 32;
