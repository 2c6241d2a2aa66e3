//! The container's network, handed to the VM (design decision 6): every
//! interface Docker put in the netns gets a passthru macvtap whose tap fd
//! QEMU uses as a virtio-net NIC with the interface's MAC; the interface
//! keeps no address (the guest has them now), and the guest learns the
//! addresses and routes. Reading and changing links uses iproute2's `ip`
//! (JSON output) from the QEMU tree.
//!
//! A macvtap cannot sit on a macvlan or ipvlan (it would stack onto their
//! lower device, outside this namespace): those get a tap device joined
//! to the interface by tc mirred redirects both ways instead.

use std::fs::{self, File, OpenOptions};
use std::os::fd::OwnedFd;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_protocol::wire::{NicConfig, RouteConfig};
use serde::Deserialize;

/// A container interface turned into a NIC of the VM.
pub struct Nic {
    pub config: NicConfig,
    /// The macvtap's character device, for QEMU's `-netdev tap,fd=`.
    pub tap: OwnedFd,
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
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
struct LinkInfo {
    #[serde(default)]
    info_kind: String,
}

/// How an interface is handed to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    Macvtap,
    TcRedirect,
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
fn nics_from_json(json: &str) -> Result<Vec<(NicConfig, Attach)>> {
    let links: Vec<Link> = serde_json::from_str(json).context("parsing `ip -j addr show`")?;
    Ok(links
        .into_iter()
        .filter(|l| l.link_type == "ether")
        .map(|l| {
            let kind = l
                .linkinfo
                .as_ref()
                .map(|i| i.info_kind.as_str())
                .unwrap_or("");
            let attach = match kind {
                "macvlan" | "ipvlan" | "macvtap" => Attach::TcRedirect,
                _ => Attach::Macvtap,
            };
            (nic_config(l), attach)
        })
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

/// Take over every Ethernet interface of the container's netns.
pub fn attach_all() -> Result<(Vec<Nic>, Vec<RouteConfig>)> {
    let found = nics_from_json(&ip(&["-d", "-j", "addr", "show"])?)?;
    let configs: Vec<NicConfig> = found.iter().map(|(c, _)| c.clone()).collect();
    let mut routes = routes_from_json(&ip(&["-j", "-4", "route", "show"])?, false, &configs)?;
    routes.extend(routes_from_json(
        &ip(&["-j", "-6", "route", "show"])?,
        true,
        &configs,
    )?);
    let mut nics = Vec::new();
    for (i, (config, attach)) in found.into_iter().enumerate() {
        let name = format!("rqtap{i}");
        ip(&["addr", "flush", "dev", &config.name])?;
        let tap = match attach {
            Attach::Macvtap => macvtap(&config.name, &name),
            Attach::TcRedirect => tc_redirected_tap(&config.name, &name, config.mtu),
        }
        .with_context(|| format!("attaching {} to the VM", config.name))?;
        nics.push(Nic { config, tap });
    }
    Ok((nics, routes))
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
            "opening /dev/net/tun (a macvlan/ipvlan interface becomes a tap device: \
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

/// Put a passthru macvtap on `dev` and open the
/// macvtap's character device (created here: runc's /dev has none, and
/// its minor is the macvtap's ifindex).
fn macvtap(dev: &str, name: &str) -> Result<OwnedFd> {
    ip(&[
        "link", "add", "link", dev, "name", name, "type", "macvtap", "mode", "passthru",
    ])?;
    // macvlan delivers multicast only for groups in the macvtap's own
    // list, which nothing fills from the guest's (QEMU does not): without
    // allmulticast, IPv6 neighbour discovery towards the guest is lost.
    ip(&["link", "set", name, "allmulticast", "on", "up"])?;
    let ifindex = fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    let ifindex = ifindex.trim();
    let devno = fs::read_to_string(format!("/sys/class/net/{name}/macvtap/tap{ifindex}/dev"))
        .context("reading the macvtap's device number")?;
    let (major, minor) = devno
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .context("malformed macvtap device number")?;
    let node = format!("/dev/tap{ifindex}");
    mknod(
        node.as_str(),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )
    .with_context(|| format!("mknod {node}"))?;
    let tap: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .with_context(|| format!("opening {node}"))?;
    let _ = fs::remove_file(&node);
    Ok(tap.into())
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

    #[test]
    fn macvlan_and_ipvlan_are_attached_by_tc_redirect() {
        let json = r#"[{"ifname":"eth0","link_type":"ether","address":"02:00:00:00:00:01","mtu":1500,
                        "linkinfo":{"info_kind":"macvlan"},"addr_info":[]},
                       {"ifname":"eth1","link_type":"ether","address":"02:00:00:00:00:02","mtu":1500,
                        "linkinfo":{"info_kind":"veth"},"addr_info":[]},
                       {"ifname":"eth2","link_type":"ether","address":"02:00:00:00:00:03","mtu":1500,
                        "linkinfo":{"info_kind":"ipvlan"},"addr_info":[]}]"#;
        let kinds: Vec<Attach> = nics_from_json(json)
            .unwrap()
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            kinds,
            [Attach::TcRedirect, Attach::Macvtap, Attach::TcRedirect]
        );
    }

    fn configs(json: &str) -> Vec<NicConfig> {
        nics_from_json(json)
            .unwrap()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
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
    fn garbage_from_ip_is_an_error() {
        assert!(nics_from_json("not json").is_err());
        assert!(routes_from_json("{}", false, &[]).is_err());
    }
}
