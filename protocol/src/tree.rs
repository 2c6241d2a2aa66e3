//! The QEMU tree's layout, one contract: the runtime checks it, the proxy
//! hands its paths to QEMU (the tree is the proxy container's root), the
//! guest reads the module lists from its initrd. `qemu/build-tree.sh`
//! and `qemu/tree-lib.sh` write these names.
//!
//! ```text
//! kernels/<name>/{kernel,initrd,version,features}   each guest kernel
//! kernels/default -> <name>                         unless --kernel says
//! (initrd) /modules.list, /modules.<fs>.list         modules to load
//! ```

/// The directory of guest kernels, at the tree's top.
pub const KERNELS: &str = "kernels";
/// The kernel image QEMU boots.
pub const KERNEL: &str = "kernel";
/// The initrd with runq-init and the module lists.
pub const INITRD: &str = "initrd";
/// The kernel's release string (`uname -r` in the guest).
pub const VERSION: &str = "version";
/// Words naming what the kernel can do beyond the common path (`9p`).
pub const FEATURES: &str = "features";
/// The feature word of a kernel that can mount a 9p root.
pub const FEATURE_9P: &str = "9p";
/// The feature word of a kernel a VM template can run (PCI hot-plug).
pub const FEATURE_TEMPLATE: &str = "template";

/// `kernels/<name>/<file>`, relative to the tree.
pub fn kernel_file(name: &str, file: &str) -> String {
    format!("{KERNELS}/{name}/{file}")
}

/// Modules runq-init loads at boot, in order (in the initrd).
pub const MODULES_LIST: &str = "/modules.list";

/// Modules a filesystem group needs, loaded before its first mount.
pub fn fs_modules_list(group: &str) -> String {
    format!("/modules.{group}.list")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_as_the_shell_writes_it() {
        assert_eq!(kernel_file("runq", KERNEL), "kernels/runq/kernel");
        assert_eq!(kernel_file("default", VERSION), "kernels/default/version");
        assert_eq!(fs_modules_list("ext4"), "/modules.ext4.list");
        // The same names in the scripts that build the tree.
        let build = include_str!("../../qemu/build-tree.sh");
        assert!(build.contains("/kernels/<name>/{kernel,initrd,version,features}"));
        let lib = include_str!("../../qemu/tree-lib.sh");
        assert!(lib.contains("modules.list") && lib.contains("\"modules.$g.list\""));
        assert!(build.contains(&format!("template={FEATURE_TEMPLATE}")));
    }
}
