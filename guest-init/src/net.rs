//! Guest network configuration: the container's interfaces, found by MAC
//! (the order virtio-mmio devices appear in is not the container's),
//! renamed to the container's names, with its addresses, MTU and routes.
//! busybox's `ip` (Debian's busybox-static, in the initrd) does the
//! netlink work.

use std::fs;
use std::process::Command;

use anyhow::{bail, Context, Result};
use runq_protocol::wire::{NicConfig, RouteConfig};

const BUSYBOX: &str = "/bin/busybox";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(BUSYBOX)
        .arg("ip")
        .args(args)
        .output()
        .context("running busybox ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The guest interface that has `mac`.
fn link_with_mac(mac: &str) -> Result<String> {
    for entry in fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let addr = fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap_or_default();
        if addr.trim().eq_ignore_ascii_case(mac) {
            return Ok(name);
        }
    }
    bail!("no guest NIC has MAC {mac}")
}

pub fn configure(nics: &[NicConfig], routes: &[RouteConfig]) -> Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    // Guest names by MAC; a rename costs an RCU grace period, so names
    // are changed only when they differ, through temporary ones (the
    // guest's own eth0 may be the container's eth1).
    let current: Vec<String> = nics
        .iter()
        .map(|n| link_with_mac(&n.mac))
        .collect::<Result<_>>()?;
    let all_named = nics.iter().zip(&current).all(|(n, c)| n.name == *c);
    let mut temp = Vec::new();
    for (i, c) in current.iter().enumerate() {
        if all_named {
            temp.push(c.clone());
            continue;
        }
        let t = format!("rqnic{i}");
        ip(&["link", "set", "dev", c, "name", &t])?;
        temp.push(t);
    }
    for (nic, t) in nics.iter().zip(&temp) {
        let name = nic.name.as_str();
        if t != name {
            ip(&["link", "set", "dev", t, "name", name])?;
        }
        ip(&["link", "set", "dev", name, "mtu", &nic.mtu.to_string()])?;
        // The addresses were the container's a moment ago: no need to
        // wait for duplicate address detection.
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"), "0");
        for a in &nic.addrs {
            let family = if a.contains(':') { "-6" } else { "-4" };
            ip(&[family, "addr", "add", a, "dev", name])?;
        }
        ip(&["link", "set", "dev", name, "up"])?;
    }
    for r in routes {
        let mut args = vec![
            if r.ipv6 { "-6" } else { "-4" },
            "route",
            "add",
            r.dst.as_str(),
        ];
        if let Some(via) = &r.via {
            args.extend(["via", via.as_str()]);
        }
        args.extend(["dev", r.dev.as_str()]);
        ip(&args)?;
    }
    Ok(())
}
