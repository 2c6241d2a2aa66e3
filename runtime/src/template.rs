//! VM templates in `/var/cache/runq/templates`: one per machine (kernel,
//! CPUs, RAM, accelerator, CPU model) and per QEMU, kernel, initrd and
//! proxy build, built on first use and validated before every use.
//!
//! An entry is a directory named after a hash of its inputs, holding
//! `state` (QEMU's migration stream), `inputs` (the inputs, in full) and
//! the build's logs. It is used only when its `inputs` equal today's,
//! word for word, and its state is whole (the size it was written with,
//! QEMU's magic); anything else is discarded and built again. Builds are
//! serialised by a lock and land with one rename, so a reader never sees
//! half an entry.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use runq_protocol::{GuestArch, VmSpec, TEMPLATE_RAM, TEMPLATE_STATE};

use crate::log::Logger;

/// The cache's root.
pub const CACHE: &str = "/var/cache/runq/templates";
/// The file of an entry that says what it was built from.
const INPUTS: &str = "inputs";
/// QEMU_VM_FILE_MAGIC, the first bytes of every migration stream.
const QEMU_MAGIC: &[u8; 4] = b"QEVM";

/// The template directory `vm` starts from, building it if need be, and
/// `vm` marked to restore from it; `None` when the VM boots as before: an
/// arch with no template machine (s390x), or a kernel without PCI
/// hot-plug (its `features` lack `template`: Debian's cloud kernel).
///
/// `may_build`: false when the container chose its own shape (RUNQ_CPU,
/// RUNQ_MEM, RUNQ_DEBUG, which an image's ENV sets as easily as a user):
/// such a shape uses a template that exists and never makes runq build
/// one, so an image cannot make the host build (and evict) templates at
/// will. Guests above [`MAX_MIB`] always boot: a build writes the
/// guest's whole RAM once (runq-init zeroes its free memory).
pub fn prepare(
    tree: &Path,
    vm: &mut VmSpec,
    may_build: bool,
    log: &Logger,
) -> Result<Option<PathBuf>> {
    use runq_protocol::tree as layout;
    let features = tree.join(layout::kernel_file(&vm.machine.kernel, layout::FEATURES));
    let features = fs::read_to_string(features).unwrap_or_default();
    if vm.machine.arch != GuestArch::X86_64
        || vm.machine.mem_mib > MAX_MIB
        || !features
            .split_whitespace()
            .any(|f| f == layout::FEATURE_TEMPLATE)
    {
        return Ok(None);
    }
    vm.machine.template = true;
    let found = find_or_build(tree, vm, may_build, log);
    if !matches!(found, Ok(Some(_))) {
        vm.machine.template = false;
    }
    found
}

/// The largest guest (MiB) that gets a template.
pub const MAX_MIB: u32 = 2048;

fn find_or_build(
    tree: &Path,
    vm: &VmSpec,
    may_build: bool,
    log: &Logger,
) -> Result<Option<PathBuf>> {
    let inputs = inputs(tree, vm)?;
    let cache = Path::new(CACHE);
    fs::create_dir_all(cache).with_context(|| format!("creating {CACHE}"))?;
    // Root's alone: the entries are the template guest's memory (set once,
    // not on every create).
    let mode = fs::metadata(cache).context(CACHE)?.mode() & 0o7777;
    if mode != 0o700 {
        fs::set_permissions(cache, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("{CACHE}: setting its mode"))?;
    }
    let dir = cache.join(key(&inputs));
    let ram = u64::from(vm.machine.mem_mib) << 20;
    if valid(&dir, &inputs, ram).is_ok() {
        used(&dir);
        return Ok(Some(dir));
    }
    if !may_build {
        return Ok(None);
    }
    let lock = fs::File::create(cache.join(".lock")).context("the template cache's lock")?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the template cache")?;
    match valid(&dir, &inputs, ram) {
        Ok(()) => {
            used(&dir); // another create built it meanwhile
            return Ok(Some(dir));
        }
        Err(why) if dir.exists() => {
            // Said in runq's log (the container's output stays as under
            // runc): a rebuild is how the cache heals, not an error.
            log.warn(&format!(
                "runq: VM template {} discarded ({why}), building it again",
                dir.display()
            ));
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Err(_) => {}
    }
    remove_leftovers(cache);
    build(tree, vm, &inputs, &dir)?;
    prune(cache, &inputs, &dir);
    Ok(Some(dir))
}

/// Remove the entries `new` supersedes (the same machine from the same
/// paths: an upgraded QEMU, kernel or runq) and those of a tree that is
/// gone; called under the lock, after a build.
fn prune(cache: &Path, new: &str, keep: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    let mut kept = vec![];
    for e in entries.flatten() {
        let dir = e.path();
        // symlink_metadata: an entry is a directory runq made, never a link.
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if dir == keep || !meta.is_dir() {
            continue;
        }
        // A build in progress would hold the lock: a leftover is a crash's.
        let recorded = fs::read_to_string(dir.join(INPUTS)).unwrap_or_default();
        if recorded.is_empty() || superseded(&recorded, new) {
            let _ = fs::remove_dir_all(&dir);
        } else {
            kept.push((meta.modified().ok(), dir));
        }
    }
    // Containers choose their CPUs and RAM (RUNQ_CPU, RUNQ_MEM), so the
    // shapes are theirs to multiply: the least recently used entries go
    // beyond MAX_ENTRIES (~30 MiB of disk each).
    kept.sort();
    let excess = (kept.len() + 1).saturating_sub(MAX_ENTRIES);
    for (_, dir) in kept.into_iter().take(excess) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Builds that never finished (their runq create was killed): under the
/// lock, no build is running.
fn remove_leftovers(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(".build-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Entries the cache keeps at most (the newest build among them).
const MAX_ENTRIES: usize = 8;

/// Mark an entry used now (its directory's mtime), for [`prune`]'s LRU.
fn used(dir: &Path) {
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    let _ = nix::sys::stat::utimensat(
        None,
        dir,
        &now,
        &now,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// `old` was built for the same machine from the same files as `new`, or
/// from files that are gone.
fn superseded(old: &str, new: &str) -> bool {
    let paths = |inputs: &str| -> Vec<String> {
        inputs
            .lines()
            .filter(|l| !l.starts_with("state "))
            .map(|l| match l.strip_prefix("file ") {
                Some(f) => format!("file {}", f.split(' ').next().unwrap_or("")),
                None => l.to_string(),
            })
            .collect()
    };
    let gone = old
        .lines()
        .filter_map(|l| l.strip_prefix("file "))
        .any(|f| !Path::new(f.split(' ').next().unwrap_or("")).exists());
    gone || paths(old) == paths(new)
}

/// Everything a template depends on, one per line: the machine, and the
/// identity (path, size, mtime, inode) of each file that makes the state:
/// QEMU, the kernel and initrd, and the proxy that builds the command
/// line; under KVM the host CPU's flags (`-cpu host`).
fn inputs(tree: &Path, vm: &VmSpec) -> Result<String> {
    let machine = serde_json::to_string(&vm.machine)?;
    let kernel_dir = tree
        .join(runq_protocol::tree::KERNELS)
        .join(&vm.machine.kernel);
    let kernel_dir = kernel_dir
        .canonicalize()
        .with_context(|| format!("guest kernel {}", kernel_dir.display()))?;
    let mut lines = vec![
        format!("protocol {}", runq_protocol::PROTOCOL_VERSION),
        format!("machine {machine}"),
    ];
    for f in [
        tree.join("usr/bin/qemu-system-x86_64"),
        tree.join("usr/bin/runq-proxy"),
        kernel_dir.join(runq_protocol::tree::KERNEL),
        kernel_dir.join(runq_protocol::tree::INITRD),
    ] {
        let m = fs::metadata(&f).with_context(|| format!("{}", f.display()))?;
        lines.push(format!(
            "file {} {} {}.{} {}",
            f.display(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ));
    }
    if vm.machine.accel == runq_protocol::Accel::Kvm {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        lines.push(format!("cpu {flags}"));
    }
    Ok(lines.join("\n") + "\n")
}

/// The entry's name: 16 hex digits of a hash of the inputs (which the
/// entry holds in full: a collision is caught by [`valid`]).
fn key(inputs: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    inputs.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Ok if `dir` is a whole entry built from `inputs` (guest RAM of `ram`
/// bytes), else why not.
fn valid(dir: &Path, inputs: &str, ram: u64) -> Result<(), String> {
    let recorded =
        fs::read_to_string(dir.join(INPUTS)).map_err(|e| format!("no {INPUTS} ({e})"))?;
    let (recorded, size) = recorded
        .rsplit_once("state ")
        .ok_or_else(|| format!("{INPUTS} without the state's size"))?;
    if recorded != inputs {
        return Err("built from other inputs".into());
    }
    let state = dir.join(TEMPLATE_STATE);
    let len = fs::metadata(&state)
        .map_err(|e| format!("no state ({e})"))?
        .len();
    if size.trim() != len.to_string() {
        return Err(format!(
            "state is {len} bytes, was written with {}",
            size.trim()
        ));
    }
    let mut magic = [0u8; 4];
    fs::File::open(&state)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| format!("state unreadable ({e})"))?;
    if &magic != QEMU_MAGIC {
        return Err("state is not a QEMU migration stream".into());
    }
    match fs::metadata(dir.join(TEMPLATE_RAM)) {
        Ok(m) if m.len() == ram => Ok(()),
        Ok(m) => Err(format!("ram is {} bytes, not the guest's {ram}", m.len())),
        Err(e) => Err(format!("no ram ({e})")),
    }
}

/// Boot and save the template into a fresh directory, then move it to
/// `dir` whole.
fn build(tree: &Path, vm: &VmSpec, inputs: &str, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let built = (|| -> Result<()> {
        fs::write(tmp.join("vm.json"), vm.to_json()?)?;
        run_builder(tree, &tmp)?;
        // The builder's input is this container's description: never
        // part of what other containers mount.
        fs::remove_file(tmp.join("vm.json"))?;
        let len = fs::metadata(tmp.join(TEMPLATE_STATE))
            .context("the builder wrote no state")?
            .len();
        fs::write(tmp.join(INPUTS), format!("{inputs}state {len}\n"))?;
        valid(&tmp, inputs, u64::from(vm.machine.mem_mib) << 20)
            .map_err(|why| anyhow::anyhow!("the new template is not whole: {why}"))?;
        fs::rename(&tmp, dir)?;
        Ok(())
    })();
    if built.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    built.context("building the VM template")
}

/// `runq-proxy template-build` in a private mount namespace rooted at the
/// QEMU tree, with the new entry at `/tmp`, a `/dev` of null, urandom
/// (and kvm) only, and `/proc`. The proxy runs QEMU as it does in a
/// container: its own uid, no capabilities, QEMU's seccomp filter.
fn run_builder(tree: &Path, out: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    use std::ffi::CString;
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).context("a path with NUL");
    let root = c(tree)?;
    let tree_tmp = c(&tree.join("tmp"))?;
    let tree_dev = c(&tree.join("dev"))?;
    let tree_proc = c(&tree.join("proc"))?;
    let out_c = c(out)?;
    let devices: Vec<(CString, CString)> = ["null", "urandom", "kvm"]
        .iter()
        .filter(|d| Path::new("/dev").join(d).exists())
        .map(|d| {
            Ok((
                c(&Path::new("/dev").join(d))?,
                c(&tree.join("dev").join(d))?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut cmd = Command::new(crate::bundle::PROXY_PATH);
    cmd.args(["template-build", "/tmp/vm.json", "/tmp"]);
    cmd.env_clear().env("PATH", "/usr/bin");
    // SAFETY: between fork and exec only system calls run (unshare,
    // mount, open, close, chroot, chdir, prctl) on C strings made before the
    // fork; nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            let io = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(io)?;
            let none: Option<&str> = None;
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(io)?;
            mount(
                Some(out_c.as_c_str()),
                tree_tmp.as_c_str(),
                none,
                MsFlags::MS_BIND,
                none,
            )
            .map_err(io)?;
            mount(
                Some("tmpfs"),
                tree_dev.as_c_str(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("mode=755,size=64k"),
            )
            .map_err(io)?;
            for (host, inside) in &devices {
                let fd = libc::open(
                    inside.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                mount(
                    Some(host.as_c_str()),
                    inside.as_c_str(),
                    none,
                    MsFlags::MS_BIND,
                    none,
                )
                .map_err(io)?;
            }
            mount(
                Some("proc"),
                tree_proc.as_c_str(),
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                none,
            )
            .map_err(io)?;
            nix::unistd::chroot(root.as_c_str()).map_err(io)?;
            nix::unistd::chdir("/").map_err(io)?;
            // As runc sets it for the proxy of a container: no privilege
            // gained by exec, and QEMU's seccomp filter can be installed.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Ends with runq create (killed by its shim, say); the proxy
            // takes its QEMU with it the same way.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().context("running the template builder")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let last = msg
            .trim()
            .lines()
            .last()
            .unwrap_or("no message")
            .to_string();
        bail!("{last}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("runq-template-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const RAM: u64 = 1 << 20;

    fn entry(name: &str, inputs: &str, state: &[u8], size: Option<usize>) -> PathBuf {
        let d = scratch(name);
        fs::write(d.join(TEMPLATE_STATE), state).unwrap();
        fs::File::create(d.join(TEMPLATE_RAM))
            .unwrap()
            .set_len(RAM)
            .unwrap();
        let size = size.unwrap_or(state.len());
        fs::write(d.join(INPUTS), format!("{inputs}state {size}\n")).unwrap();
        d
    }

    #[test]
    fn an_entry_is_used_only_whole_and_from_the_same_inputs() {
        let inputs = "protocol 4\nmachine {}\nfile /q 1 2.3 4\n";
        let good = entry("good", inputs, b"QEVM\0\0\0\x03rest", None);
        assert_eq!(valid(&good, inputs, RAM), Ok(()));
        // A RAM image of another size than the guest's.
        assert!(valid(&good, inputs, 2 * RAM)
            .unwrap_err()
            .starts_with("ram is 1048576 bytes"));
        // Another QEMU (or kernel, or machine) than the one it was built with.
        let other = inputs.replace("1 2.3 4", "1 2.3 5");
        assert_eq!(
            valid(&good, &other, RAM),
            Err("built from other inputs".into())
        );
        // Cut short (a crash while it was written, a full disk).
        let short = entry("short", inputs, b"QEVM\0\0", Some(12));
        assert!(valid(&short, inputs, RAM)
            .unwrap_err()
            .contains("was written with 12"));
        // Not a migration stream at all.
        let junk = entry("junk", inputs, b"\0\0\0\0junk", None);
        assert!(valid(&junk, inputs, RAM)
            .unwrap_err()
            .contains("not a QEMU migration stream"));
        // No inputs file: a build that never finished.
        let bare = scratch("bare");
        assert!(valid(&bare, inputs, RAM)
            .unwrap_err()
            .starts_with("no inputs"));
        for d in [good, short, junk, bare] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[test]
    fn an_upgrade_supersedes_the_entry_of_the_same_machine_and_paths() {
        let old = "protocol 4\nmachine {\"cpus\":1}\nfile / 1 2.3 4\nstate 9\n";
        let upgraded = "protocol 4\nmachine {\"cpus\":1}\nfile / 7 8.9 10\n";
        assert!(superseded(old, upgraded));
        // Another machine (2 CPUs) keeps its own entry.
        let other = "protocol 4\nmachine {\"cpus\":2}\nfile / 7 8.9 10\n";
        assert!(!superseded(old, other));
        // An entry of a tree that is gone goes.
        let gone = "protocol 4\nmachine {\"cpus\":2}\nfile /no/such/runq-tree/kernel 1 2.3 4\n";
        assert!(superseded(gone, other));
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_entries() {
        let cache = scratch("lru");
        let inputs = |i: usize| format!("protocol 4\nmachine {{\"mem\":{i}}}\nfile / 1 2.3 4\n");
        for i in 0..=MAX_ENTRIES {
            let d = cache.join(format!("e{i}"));
            fs::create_dir(&d).unwrap();
            fs::write(d.join(INPUTS), format!("{}state 1\n", inputs(i))).unwrap();
            // Used in the order of their names, e0 longest ago.
            let t = nix::sys::time::TimeSpec::new(1_000_000 + i as i64, 0);
            nix::sys::stat::utimensat(
                None,
                &d,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        let newest = cache.join(format!("e{MAX_ENTRIES}"));
        prune(&cache, &inputs(MAX_ENTRIES), &newest);
        let mut left: Vec<String> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let want: Vec<String> = (1..=MAX_ENTRIES).map(|i| format!("e{i}")).collect();
        assert_eq!(
            left, want,
            "the least recently used entry goes, the rest stay"
        );
        let _ = fs::remove_dir_all(cache);
    }

    #[test]
    fn the_key_follows_the_inputs() {
        assert_eq!(key("a\n"), key("a\n"));
        assert_ne!(key("a\n"), key("b\n"));
        assert_eq!(key("a\n").len(), 16);
    }
}
