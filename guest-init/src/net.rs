//! Guest network configuration: the container's interfaces, found by MAC
//! (the order virtio-mmio devices appear in is not the container's),
//! renamed to the container's names, with its addresses, MTU and routes.
//! Done with rtnetlink requests from init itself (netlink-packet-route):
//! under TCG each `ip` process costs ~15 ms, and a container needs 5-10.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use runq_protocol::wire::{NicConfig, RouteConfig};

/// An address or destination: `default`, `a.b.c.d/len`, `x::y/len`, or a
/// bare address (a host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    addr: Option<IpAddr>,
    len: u8,
}

fn parse_prefix(s: &str, ipv6: bool) -> Result<Prefix> {
    if s == "default" {
        return Ok(Prefix { addr: None, len: 0 });
    }
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().with_context(|| format!("bad address {s:?}"))?;
    if addr.is_ipv6() != ipv6 {
        bail!("{s:?} is not an IPv{} address", if ipv6 { 6 } else { 4 });
    }
    let max = if addr.is_ipv6() { 128 } else { 32 };
    let len = match len {
        Some(l) => l.parse().ok().filter(|l| *l <= max),
        None => Some(max),
    }
    .with_context(|| format!("bad prefix length in {s:?}"))?;
    Ok(Prefix {
        addr: Some(addr),
        len,
    })
}

/// The IPv4 broadcast address of `addr/len` (none for /31 and /32).
fn broadcast(addr: Ipv4Addr, len: u8) -> Option<Ipv4Addr> {
    (len < 31).then(|| Ipv4Addr::from(u32::from(addr) | (u32::MAX >> len)))
}

fn family(ipv6: bool) -> AddressFamily {
    if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn route_address(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// An rtnetlink socket; each request waits for the kernel's ACK.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        socket.bind_auto().context("netlink bind")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("netlink connect")?;
        Ok(Rtnl { socket, seq: 0 })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut rx = Vec::with_capacity(8192);
        loop {
            rx.clear();
            self.socket.recv(&mut rx, 0)?;
            let n = rx.len();
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| std::io::Error::other(format!("netlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = reply.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Change a link: name, MTU, and up.
    fn set_link(&mut self, index: u32, attrs: Vec<LinkAttribute>, up: bool) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes = attrs;
        let what = format!("{:?}", m.attributes);
        self.request(RouteNetlinkMessage::SetLink(m), 0)
            .with_context(|| format!("link {index}: set {what} up={up}"))
    }

    fn add_address(&mut self, index: u32, cidr: &str) -> Result<()> {
        let ipv6 = cidr.contains(':');
        let p = parse_prefix(cidr, ipv6)?;
        let Some(addr) = p.addr else {
            bail!("bad address {cidr:?}");
        };
        let mut m = AddressMessage::default();
        m.header.family = family(ipv6);
        m.header.prefix_len = p.len;
        m.header.index = index;
        m.header.scope = AddressScope::Universe;
        m.attributes = vec![AddressAttribute::Local(addr)];
        if let IpAddr::V4(v4) = addr {
            m.attributes.push(AddressAttribute::Address(addr));
            // as Docker sets it under runc (`brd` in `ip addr`)
            if let Some(b) = broadcast(v4, p.len) {
                m.attributes.push(AddressAttribute::Broadcast(b));
            }
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("address {cidr} on link {index}"))
    }

    fn add_route(&mut self, r: &RouteConfig, index: u32) -> Result<()> {
        let dst = parse_prefix(&r.dst, r.ipv6)?;
        let via = match &r.via {
            Some(v) => Some(parse_prefix(v, r.ipv6)?.addr.context("bad gateway")?),
            None => None,
        };
        let mut m = RouteMessage::default();
        m.header.address_family = family(r.ipv6);
        m.header.destination_prefix_length = dst.len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if let Some(a) = dst.addr {
            m.attributes
                .push(RouteAttribute::Destination(route_address(a)));
        }
        if let Some(g) = via {
            m.attributes.push(RouteAttribute::Gateway(route_address(g)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| {
                let via = r
                    .via
                    .as_deref()
                    .map(|v| format!(" via {v}"))
                    .unwrap_or_default();
                format!("route {}{via} dev {}", r.dst, r.dev)
            })
    }
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

fn ifindex(name: &str) -> Result<u32> {
    let s = fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .with_context(|| format!("no guest NIC {name}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("ifindex of {name}: {s:?}"))
}

pub fn configure(nics: &[NicConfig], routes: &[RouteConfig]) -> Result<()> {
    let mut nl = Rtnl::open()?;
    nl.set_link(ifindex("lo")?, Vec::new(), true)?;
    // Guest NICs by MAC. A rename costs an RCU grace period, so names are
    // changed only when they differ, through temporary ones (the guest's
    // own eth0 may be the container's eth1).
    let mut index = Vec::new();
    let mut current = Vec::new();
    for n in nics {
        let name = link_with_mac(&n.mac)?;
        index.push(ifindex(&name)?);
        current.push(name);
    }
    let all_named = nics.iter().zip(&current).all(|(n, c)| n.name == *c);
    if !all_named {
        for (i, ix) in index.iter().enumerate() {
            nl.set_link(*ix, vec![LinkAttribute::IfName(format!("rqnic{i}"))], false)?;
        }
    }
    for (nic, ix) in nics.iter().zip(&index) {
        let mut attrs = vec![LinkAttribute::Mtu(nic.mtu)];
        if !all_named {
            attrs.push(LinkAttribute::IfName(nic.name.clone()));
        }
        nl.set_link(*ix, attrs, false)?;
        // The addresses were the container's a moment ago: no need to
        // wait for duplicate address detection.
        let _ = fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/accept_dad", nic.name),
            "0",
        );
        for a in &nic.addrs {
            nl.add_address(*ix, a)?;
        }
        nl.set_link(*ix, Vec::new(), true)?;
    }
    for r in routes {
        nl.add_route(r, ifindex(&r.dev)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_as_the_proxy_reports_them() {
        let p = |s, v6| parse_prefix(s, v6).unwrap();
        assert_eq!(p("default", false), Prefix { addr: None, len: 0 });
        assert_eq!(p("default", true), Prefix { addr: None, len: 0 });
        assert_eq!(
            p("172.18.0.0/16", false),
            Prefix {
                addr: Some("172.18.0.0".parse().unwrap()),
                len: 16
            }
        );
        assert_eq!(
            p("10.1.2.3", false).len,
            32,
            "a bare address is a host route"
        );
        assert_eq!(p("fd00::/64", true).len, 64);
        assert_eq!(p("fd00::5", true).len, 128);
    }

    #[test]
    fn broadcast_as_docker_sets_it() {
        let b = |a: &str, l| broadcast(a.parse().unwrap(), l).map(|b| b.to_string());
        assert_eq!(b("172.17.0.2", 16).as_deref(), Some("172.17.255.255"));
        assert_eq!(b("10.1.2.3", 24).as_deref(), Some("10.1.2.255"));
        assert_eq!(b("10.1.2.3", 0).as_deref(), Some("255.255.255.255"));
        assert_eq!(b("10.1.2.3", 31), None);
        assert_eq!(b("10.1.2.3", 32), None);
    }

    #[test]
    fn malformed_prefixes_are_errors() {
        for (s, v6) in [
            ("172.18.0.0/33", false),
            ("fd00::/129", true),
            ("172.18.0.0/x", false),
            ("nonsense", false),
            ("fd00::/64", false),
            ("10.0.0.1", true),
            ("", false),
        ] {
            assert!(parse_prefix(s, v6).is_err(), "{s:?} v6={v6}");
        }
    }
}
