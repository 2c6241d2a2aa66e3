//! `runq-proxy exec ...`: started by runc for `runq exec`, inside the
//! container. Dials runq-init's exec port through the vsock backend's host
//! socket and relays one process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use runq_protocol::wire::{self, ExecRequest};
use runq_protocol::{exec_args, EXEC_PORT};

use crate::relay::{self, Relay};
use crate::vm::VSOCK_UDS;

pub fn run(args: &[String]) -> Result<i32> {
    // The container's strict filter from the start (runc gives an exec'd
    // process no capabilities here, and no filter: the container's
    // profile is the workload's, in the guest).
    let vm = crate::load_spec()?;
    if !vm.host.filters.strict.is_empty() {
        runq_protocol::bpf::install_all_threads(&runq_protocol::bpf::unpack(
            &vm.host.filters.strict,
        ))
        .context("installing the exec proxy's seccomp filter")?;
    }
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let process = exec_args::from_argv(args, env)?;
    let terminal = process.terminal;
    let mut conn =
        UnixStream::connect(VSOCK_UDS).context("connecting to the VM's vsock backend")?;
    dial_guest_port(&mut conn, EXEC_PORT)?;
    wire::host_handshake(&mut conn).context("exec handshake with runq-init")?;
    let winsize = if terminal { relay::window_size() } else { None };
    wire::write_msg(&mut conn, &ExecRequest { process, winsize })?;
    relay::run(
        conn,
        Relay {
            terminal,
            systemd: false,
            qemu: None,
        },
    )
}

/// vhost-device-vsock's host side: `CONNECT <port>\n`, answered by
/// `OK <local port>\n` once the guest accepted.
fn dial_guest_port(conn: &mut UnixStream, port: u32) -> Result<()> {
    conn.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: what follows the line is already our protocol.
    while byte[0] != b'\n' {
        if conn.read(&mut byte)? == 0 || line.len() > 64 {
            bail!("the guest did not accept the exec connection (is the workload still running?)");
        }
        line.push(byte[0]);
    }
    if !line.starts_with(b"OK ") {
        bail!(
            "vsock backend answered {:?}",
            String::from_utf8_lossy(&line).trim()
        );
    }
    Ok(())
}
