//! VM templates (after Kata's VM factory): a guest booted once on the
//! template machine, saved while runq-init waits for its devices, and
//! restored by each container's QEMU instead of a boot.
//!
//! The saved state holds the guest's RAM (the pages the boot wrote) and
//! the state of the few devices a template has: CPU, serial console,
//! virtio-rng. Everything a container brings (vsock and root share, which
//! are vhost-user devices QEMU 7.2 cannot migrate, NICs, disks) is
//! hot-plugged after the restore; the guest, still waiting, dials the
//! proxy as soon as its vsock device appears.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use runq_protocol::{TEMPLATE_RAM, TEMPLATE_READY, TEMPLATE_STATE};

use crate::helpers;
use crate::qemu::{self, FdLayout, HostInfo, Props};
use crate::qmp::Qmp;

/// Boot to the waiting guest (~1.5 s under TCG here, far more on a
/// loaded host): the same deadline as a booted VM's call to the proxy.
const BOOT_TIMEOUT: Duration = crate::vm::GUEST_CONNECT_TIMEOUT;
/// Saving or restoring the state: a few tens of MiB from or to a file.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// `runq-proxy template-build VM.json DIR`: boot `VM.json`'s machine as a
/// template and save it as `DIR/state` (the console in `DIR/console.log`,
/// QEMU's messages in `DIR/qemu.log`). Run by `runq create` in a private
/// mount namespace rooted at the QEMU tree, `DIR` bound in.
pub fn build(args: &[String]) -> Result<i32> {
    let [vm, dir] = args else {
        bail!("usage: runq-proxy template-build VM.json DIR");
    };
    let vm = crate::load_spec_from(Path::new(vm))?;
    let dir = Path::new(dir);
    let (console_host, console_qemu) = UnixStream::pair().context("console socket pair")?;
    let (qmp_host, qmp_qemu) = UnixStream::pair().context("QMP socket pair")?;
    let share = vm.guest.root.share;
    let layout = FdLayout::new(&vm.machine.kernel, share, &[], &[]).with_template(false);
    let ram = OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(TEMPLATE_RAM))
            .context("creating the template's RAM file")?,
    );
    // QEMU, unprivileged, reopens it through /proc/self/fd (as a memory
    // backend's mem-path); root's again once saved.
    let owner = |uid: u32, gid: u32| {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&ram),
            Some(uid.into()),
            Some(gid.into()),
        )
        .context("handing the template's RAM file over")
    };
    owner(runq_protocol::QEMU_UID, runq_protocol::QEMU_GID)?;
    // FdLayout numbers the console, then vsock and virtiofs slots a
    // template leaves unused: QEMU gets placeholders there.
    let placeholder = OwnedFd::from(std::fs::File::open("/dev/null").context("/dev/null")?);
    let console_fd = OwnedFd::from(console_qemu);
    let qmp_fd = OwnedFd::from(qmp_qemu);
    let mut fds: Vec<&OwnedFd> = vec![&console_fd, &placeholder];
    if layout.virtiofs_fd.is_some() {
        fds.push(&placeholder);
    }
    fds.push(&qmp_fd);
    fds.push(&ram);
    let mut cmd = Command::new(qemu::binary(vm.machine.arch));
    cmd.args(qemu::command_line(
        &vm.machine,
        share,
        &[],
        &HostInfo::probe(),
        &layout,
        qemu::Shape::Template,
    ));
    let confine = helpers::Confine {
        ids: Some((runq_protocol::QEMU_UID, runq_protocol::QEMU_GID)),
        caps: 0,
        filter: runq_protocol::bpf::unpack(&vm.host.filters.qemu),
    };
    let mut child = helpers::spawn(&mut cmd, &dir.join("qemu.log"), &fds, confine)?;
    drop((console_fd, qmp_fd));
    let saved = (|| -> Result<()> {
        wait_ready(console_host, &dir.join("console.log"))?;
        let mut qmp = Qmp::connect(qmp_host)?;
        set_capabilities(&mut qmp)?;
        qmp.execute("stop", json!({}))?;
        let tmp = dir.join(format!("{TEMPLATE_STATE}.tmp"));
        let out =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        qmp.execute_with_fd("getfd", json!({"fdname": "template"}), Some(out.as_fd()))?;
        drop(out);
        qmp.execute("migrate", json!({"uri": "fd:template"}))?;
        qmp.wait_migration(MIGRATION_TIMEOUT, "saving the template")?;
        let _ = qmp.execute("quit", json!({}));
        // Both on disk before the entry can be used (runq create records
        // and renames it next).
        owner(0, 0)?;
        let ram = std::fs::File::from(ram.try_clone()?);
        punch_zero_pages(&ram).context("making the template's RAM file sparse")?;
        ram.sync_all()?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(TEMPLATE_STATE))?;
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    saved.map(|()| 0)
}

/// Copy the template guest's console to `log` until it says it is ready.
fn wait_ready(console: UnixStream, log: &Path) -> Result<()> {
    use std::io::Write;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut copy = std::fs::File::create(log)?;
    let mut lines = BufReader::new(console);
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the template guest was not ready within {}s (stage: kernel boot to runq-init; it did not say {TEMPLATE_READY:?}){}",
                BOOT_TIMEOUT.as_secs(),
                qemu::console_tail(log)
            );
        }
        lines.get_ref().set_read_timeout(Some(left))?;
        line.clear();
        // A console line is short; a longer one is taken in pieces.
        match (&mut lines).take(4096).read_until(b'\n', &mut line) {
            Ok(0) => bail!(
                "QEMU exited before the template guest was ready: {}{}",
                helpers::last_line(&log.with_file_name("qemu.log"))
                    .unwrap_or_else(|| "no message".into()),
                qemu::console_tail(log)
            ),
            Ok(_) => {
                copy.write_all(&line)?;
                if String::from_utf8_lossy(&line).trim_end() == TEMPLATE_READY {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("reading the template console"),
        }
    }
}

/// The guest zeroed its free memory before it was saved: give those
/// pages back to the filesystem (the cache holds what the guest uses).
fn punch_zero_pages(ram: &std::fs::File) -> Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    for_each_page(ram, |off, page| {
        if page.iter().all(|&b| b == 0) {
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            fallocate(ram.as_raw_fd(), punch, off as i64, page.len() as i64)?;
        }
        Ok(())
    })
}

/// Each page of `f`'s data (holes skipped) with its offset, read in
/// chunks of 1 MiB.
fn for_each_page(f: &std::fs::File, mut each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 256 * PAGE];
    for (start, end) in data_extents(f, f.metadata()?.len())? {
        let mut off = start;
        while off < end {
            let want = buf.len().min((end - off) as usize);
            let n = f.read_at(&mut buf[..want], off)?;
            if n == 0 {
                break;
            }
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                each(off + (i * PAGE) as u64, page)?;
            }
            off += n as u64;
        }
    }
    Ok(())
}

/// The `[start, end)` ranges of `f` that hold data (SEEK_DATA/SEEK_HOLE).
fn data_extents(f: &std::fs::File, size: u64) -> Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let mut out = vec![];
    let mut off = 0i64;
    while (off as u64) < size {
        let start = match lseek(f.as_raw_fd(), off, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break, // no data past off
            Err(e) => return Err(e).context("SEEK_DATA on the template's RAM"),
        };
        let end = lseek(f.as_raw_fd(), start, Whence::SeekHole)
            .context("SEEK_HOLE on the template's RAM")?;
        out.push((start as u64, end as u64));
        off = end;
    }
    Ok(out)
}

/// Guest pages, as the template's RAM file is read and written.
const PAGE: usize = 4096;

/// MIGRATION events; guest RAM (shared, file-backed) not in the stream.
fn set_capabilities(qmp: &mut Qmp) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [
            {"capability": "events", "state": true},
            {"capability": "x-ignore-shared", "state": true},
        ]}),
    )?;
    Ok(())
}

/// A clone's guest RAM: a memfd of the template's `ram`, with only the
/// pages that hold something (holes and zero pages stay unallocated, so
/// the clone's RAM costs what the template guest really uses).
pub fn ram_copy(mib: u32) -> Result<OwnedFd> {
    use std::os::unix::fs::FileExt;
    let path = Path::new(runq_protocol::TEMPLATE_DIR).join(TEMPLATE_RAM);
    let src = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let size = u64::from(mib) << 20;
    if src.metadata()?.len() != size {
        bail!("{}: not a RAM image of {mib} MiB", path.display());
    }
    let memfd = nix::sys::memfd::memfd_create(
        c"runq-guest-ram",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .context("memfd_create for the guest's RAM")?;
    let dst = std::fs::File::from(memfd);
    dst.set_len(size)?;
    // Only the file's data (the template's punched holes are the pages
    // its guest left zero), and of that only the pages that are not zero.
    for_each_page(&src, |off, page| {
        if page.iter().any(|&b| b != 0) {
            dst.write_all_at(page, off)?;
        }
        Ok(())
    })?;
    Ok(OwnedFd::from(dst))
}

/// A clone's QEMU, paused with `-incoming defer`: load the template's
/// state from descriptor `state_fd`, plug the container's `devices` in,
/// run.
pub fn restore(qmp: UnixStream, state_fd: i32, devices: &[Props]) -> Result<()> {
    let mut qmp = Qmp::connect(qmp)?;
    set_capabilities(&mut qmp)?;
    qmp.execute("migrate-incoming", json!({"uri": format!("fd:{state_fd}")}))?;
    qmp.wait_migration(MIGRATION_TIMEOUT, "restoring the template")?;
    crate::trace("template restored");
    for d in devices {
        qmp.execute("device_add", d.to_qmp())
            .with_context(|| format!("plugging {d} in"))?;
    }
    qmp.execute("cont", json!({}))?;
    crate::trace("devices plugged, running");
    Ok(())
}
