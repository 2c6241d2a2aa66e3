//! The container's network, handed to the VM: every interface Docker put
//! in the netns gets a tap device of this namespace joined to it by tc
//! mirred redirects both ways, whose fd QEMU uses as a virtio-net NIC with
//! the interface's MAC; the interface keeps no address (the guest has them
//! now), and the guest learns the addresses and routes. Reading and
//! changing links uses iproute2's `ip` and `tc` (JSON output) from the
//! QEMU tree.
//!
//! Not macvtap (docs/design.md's first choice, and runq's until the device
//! cgroup was looked at): a macvtap's character device has a minor known
//! only after runc set the container's device cgroup, so the cgroup had
//! to allow every minor, and the kernel's tap_open does not check the
//! network namespace: anything in the container able to mknod could open
//! another container's macvtap. A tap comes from /dev/net/tun (one minor)
//! and TUNSETIFF names devices of the caller's own namespace only.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::process::Command;

use anyhow::{bail, Context, Result};
use runq_protocol::wire::{NicConfig, RouteConfig};
use serde::Deserialize;

/// A container interface turned into a NIC of the VM.
pub struct Nic {
    pub config: NicConfig,
    /// The tap's descriptor, for QEMU's `-netdev tap,fd=`.
    pub tap: OwnedFd,
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<Addr>,
}

#[derive(Deserialize)]
struct Addr {
    local: String,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct Route {
    dst: String,
    gateway: Option<String>,
    dev: Option<String>,
    #[serde(default)]
    protocol: String,
}

/// Ethernet interfaces and their global addresses from `ip -d -j addr
/// show` (link-local ones the guest derives itself from the same MAC).
fn nics_from_json(json: &str) -> Result<Vec<NicConfig>> {
    let links: Vec<Link> = serde_json::from_str(json).context("parsing `ip -j addr show`")?;
    Ok(links
        .into_iter()
        .filter(|l| l.link_type == "ether")
        .map(nic_config)
        .collect())
}

fn nic_config(l: Link) -> NicConfig {
    NicConfig {
        addrs: l
            .addr_info
            .iter()
            .filter(|a| a.scope == "global")
            .map(|a| format!("{}/{}", a.local, a.prefixlen))
            .collect(),
        name: l.ifname,
        mac: l.address,
        mtu: l.mtu,
    }
}

/// Routes the guest must add: those the kernel did not derive from an
/// address (`proto kernel`), on the interfaces being moved.
fn routes_from_json(json: &str, ipv6: bool, nics: &[NicConfig]) -> Result<Vec<RouteConfig>> {
    let routes: Vec<Route> = serde_json::from_str(json).context("parsing `ip -j route show`")?;
    Ok(routes
        .into_iter()
        .filter(|r| {
            r.protocol != "kernel" && !r.dst.starts_with("fe80:") && !r.dst.starts_with("ff00:")
        })
        .filter_map(|r| {
            let dev = r.dev.filter(|d| nics.iter().any(|n| &n.name == d))?;
            Some(RouteConfig {
                dst: r.dst,
                via: r.gateway,
                dev,
                ipv6,
            })
        })
        .collect())
}

/// Run an iproute2 tool from the QEMU tree; its stdout.
fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool} (iproute2, from the QEMU tree)"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

fn tc(args: &[&str]) -> Result<()> {
    run("tc", args).map(drop)
}

/// Take over every Ethernet interface of the container's netns. In a
/// namespace that outlives the container (`keep_addrs`: a pod's) the
/// interfaces keep their addresses for the pod's next container: the
/// ingress redirect hands every frame to the guest before this
/// namespace's IP stack could see it, and nothing here sends on them.
pub fn attach_all(keep_addrs: bool) -> Result<(Vec<Nic>, Vec<RouteConfig>)> {
    let found = nics_from_json(&ip(&["-d", "-j", "addr", "show"])?)?;
    let configs = found.clone();
    let mut routes = routes_from_json(&ip(&["-j", "-4", "route", "show"])?, false, &configs)?;
    routes.extend(routes_from_json(
        &ip(&["-j", "-6", "route", "show"])?,
        true,
        &configs,
    )?);
    let mut nics = Vec::new();
    for (i, config) in found.into_iter().enumerate() {
        let name = format!("rqtap{i}");
        if keep_addrs {
            // A pod's earlier container left its redirect to a tap now
            // gone (tc shows its target as `*`): that ingress qdisc goes,
            // and only one like it; any other makes the redirect below
            // fail with its reason.
            let filters = run(
                "tc",
                &["filter", "show", "dev", &config.name, "parent", "ffff:"],
            );
            if filters.is_ok_and(|f| is_stale_redirect(&f)) {
                tc(&["qdisc", "del", "dev", &config.name, "ingress"])?;
            }
        } else {
            ip(&["addr", "flush", "dev", &config.name])?;
        }
        let tap = tc_redirected_tap(&config.name, &name, config.mtu)
            .with_context(|| format!("attaching {} to the VM", config.name))?;
        nics.push(Nic { config, tap });
    }
    Ok((nics, routes))
}

/// An ingress filter list (`tc filter show`) that only redirects to a
/// runq tap or to a device gone since.
fn is_stale_redirect(filters: &str) -> bool {
    let targets: Vec<&str> = filters
        .split("Redirect to device ")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap_or(""))
        .collect();
    !targets.is_empty() && targets.iter().all(|t| *t == "*" || t.starts_with("rqtap"))
}

/// A tap device `name` whose traffic and `dev`'s are redirected to each
/// other at ingress.
fn tc_redirected_tap(dev: &str, name: &str, mtu: u32) -> Result<OwnedFd> {
    let tap = open_tap(name)?;
    ip(&["link", "set", name, "mtu", &mtu.to_string(), "up"])?;
    for (from, to) in [(dev, name), (name, dev)] {
        tc(&["qdisc", "add", "dev", from, "ingress"])?;
        tc(&[
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ])?;
    }
    Ok(tap)
}

/// Create tap device `name` through /dev/net/tun; the fd is QEMU's.
fn open_tap(name: &str) -> Result<OwnedFd> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let tun: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context(
            "opening /dev/net/tun (each container interface becomes a tap device: \
             the host needs the TUN driver)",
        )?
        .into();
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        bail!("tap name {name} too long");
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    use std::os::fd::AsRawFd;
    // SAFETY: TUNSETIFF reads an ifreq-sized struct (name + flags) that
    // lives on our stack for the duration of the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TUNSETIFF");
    }
    Ok(tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip -j addr show` in a container on a user-defined network.
    const ADDRS: &str = r#"[{"ifindex":1,"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","mtu":65536,
      "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
     {"ifindex":945,"link_index":946,"ifname":"eth0","mtu":1450,"link_type":"ether","address":"02:42:ac:12:00:02",
      "addr_info":[{"family":"inet","local":"172.18.0.2","prefixlen":16,"scope":"global"},
                   {"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global"},
                   {"family":"inet6","local":"fe80::42:acff:fe12:2","prefixlen":64,"scope":"link"}]},
     {"ifindex":950,"ifname":"eth1","mtu":1500,"link_type":"ether","address":"02:42:ac:13:00:03","addr_info":[]}]"#;

    fn configs(json: &str) -> Vec<NicConfig> {
        nics_from_json(json).unwrap()
    }

    #[test]
    fn ethernet_interfaces_with_global_addresses() {
        let nics = configs(ADDRS);
        assert_eq!(nics.len(), 2, "lo is not moved");
        assert_eq!(nics[0].name, "eth0");
        assert_eq!(nics[0].mac, "02:42:ac:12:00:02");
        assert_eq!(nics[0].mtu, 1450);
        assert_eq!(nics[0].addrs, ["172.18.0.2/16", "fd00::2/64"]);
        assert!(nics[1].addrs.is_empty());
    }

    #[test]
    fn gateway_routes_but_not_kernel_or_link_local_ones() {
        let nics = configs(ADDRS);
        let v4 = r#"[{"dst":"default","gateway":"172.18.0.1","dev":"eth0","flags":[]},
                     {"dst":"172.18.0.0/16","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"172.18.0.2"},
                     {"dst":"10.9.0.0/16","gateway":"172.18.0.254","dev":"eth0"},
                     {"dst":"192.168.7.0/24","dev":"docker9"}]"#;
        let r = routes_from_json(v4, false, &nics).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            RouteConfig {
                dst: "default".into(),
                via: Some("172.18.0.1".into()),
                dev: "eth0".into(),
                ipv6: false
            }
        );
        assert_eq!(r[1].dst, "10.9.0.0/16");
        let v6 = r#"[{"dst":"fd00::/64","dev":"eth0","protocol":"kernel"},
                     {"dst":"fe80::/64","dev":"eth0","protocol":"kernel"},
                     {"dst":"default","gateway":"fd00::1","dev":"eth0","protocol":"static"}]"#;
        let r = routes_from_json(v6, true, &nics).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].ipv6 && r[0].via.as_deref() == Some("fd00::1"));
    }

    #[test]
    fn only_runqs_own_redirects_are_stale() {
        let gone = "filter parent ffff: protocol all pref 49152 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 terminal flowid ??? not_in_hw\n  match 00000000/00000000 at 0\n\taction order 1: mirred (Egress Redirect to device *) stolen\n";
        assert!(is_stale_redirect(gone));
        assert!(is_stale_redirect(&gone.replace('*', "rqtap0")));
        assert!(!is_stale_redirect(&gone.replace('*', "ifb0")));
        assert!(!is_stale_redirect(
            "filter parent ffff: protocol ip pref 1 bpf chain 0"
        ));
        assert!(!is_stale_redirect(""));
    }

    #[test]
    fn garbage_from_ip_is_an_error() {
        assert!(nics_from_json("not json").is_err());
        assert!(routes_from_json("{}", false, &[]).is_err());
    }
}
