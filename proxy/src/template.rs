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

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use runq_protocol::{TEMPLATE_READY, TEMPLATE_STATE};

use crate::helpers;
use crate::qemu::{self, FdLayout, HostInfo, Props};
use crate::qmp::Qmp;

/// Boot to the waiting guest: several seconds under TCG, far more on a
/// loaded host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
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
    let layout = FdLayout::new(&vm.machine.kernel, share, &[], &[]).with_qmp(false);
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
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "events", "state": true}]}),
        )?;
        qmp.execute("stop", json!({}))?;
        let tmp = dir.join(format!("{TEMPLATE_STATE}.tmp"));
        let out =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        qmp.execute_with_fd("getfd", json!({"fdname": "template"}), Some(out.as_fd()))?;
        drop(out);
        qmp.execute("migrate", json!({"uri": "fd:template"}))?;
        qmp.wait_migration(MIGRATION_TIMEOUT, "saving the template")?;
        std::fs::rename(&tmp, dir.join(TEMPLATE_STATE))?;
        let _ = qmp.execute("quit", json!({}));
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
                "the template guest was not ready within {}s (waited for {TEMPLATE_READY:?} on its console)",
                BOOT_TIMEOUT.as_secs()
            );
        }
        lines.get_ref().set_read_timeout(Some(left))?;
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) => bail!(
                "QEMU exited before the template guest was ready{}",
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

/// A clone's QEMU, paused with `-incoming defer`: load the template's
/// state from descriptor `state_fd`, plug the container's `devices` in,
/// run.
pub fn restore(qmp: UnixStream, state_fd: i32, devices: &[Props]) -> Result<()> {
    let mut qmp = Qmp::connect(qmp)?;
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "events", "state": true}]}),
    )?;
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
