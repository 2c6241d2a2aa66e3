//! The guest end of the embedded-DNS relay (see the proxy's dns.rs): a
//! resolver at 127.0.0.11:53, UDP and TCP, that forwards everything to
//! the proxy as DNS-over-TCP over vsock.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use runq_protocol::slots::Slots;
use runq_protocol::{DNS_PORT, DOCKER_DNS, MAX_DNS_RELAYS};
use vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

/// A query's answer, and a TCP stream that carries nothing for this long,
/// are given up (the proxy's end closes idle streams after the same time).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn dial_proxy() -> io::Result<VsockStream> {
    VsockStream::connect(&VsockAddr::new(VMADDR_CID_HOST, DNS_PORT))
}

/// Serve 127.0.0.11:53 when the container's resolv.conf points there.
pub fn serve_if_used(resolv_conf: &str) -> Result<()> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    let used = text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nameserver", DOCKER_DNS]);
    if !used {
        return Ok(());
    }
    let udp = UdpSocket::bind((DOCKER_DNS, 53)).context("binding 127.0.0.11:53/udp")?;
    let tcp = TcpListener::bind((DOCKER_DNS, 53)).context("binding 127.0.0.11:53/tcp")?;
    // Queries and streams in flight share the proxy's cap: past it a UDP
    // query goes unanswered (the resolver retries) and a TCP stream is
    // closed; PID 1 never runs out of threads (a spawn that fails is a
    // refused query, never a panic).
    let slots = Slots::new(MAX_DNS_RELAYS);
    let udp_slots = slots.clone();
    thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, client)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let (Some(slot), Ok(reply_to)) = (udp_slots.take(), udp.try_clone()) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let _ = thread::Builder::new().spawn(move || {
                    let _slot = slot;
                    if let Ok(answer) = udp_query_over_tcp(&query) {
                        let _ = reply_to.send_to(&answer, client);
                    }
                });
            }
        })
        .context("starting the DNS relay (udp)")?;
    thread::Builder::new()
        .name("dns-tcp".into())
        .spawn(move || {
            for client in tcp.incoming().flatten() {
                let Some(slot) = slots.take() else {
                    continue; // dropped, so closed
                };
                let _ = thread::Builder::new().spawn(move || {
                    let _slot = slot;
                    let _ = splice(client);
                });
            }
        })
        .context("starting the DNS relay (tcp)")?;
    Ok(())
}

/// One UDP query as DNS-over-TCP: two-byte length prefix both ways.
fn udp_query_over_tcp(query: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = dial_proxy()?;
    conn.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let len = u16::try_from(query.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    conn.write_all(&framed)?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut answer)?;
    Ok(answer)
}

fn splice(client: TcpStream) -> io::Result<()> {
    let proxy = dial_proxy()?;
    client.set_read_timeout(Some(QUERY_TIMEOUT))?;
    proxy.set_read_timeout(Some(QUERY_TIMEOUT))?;
    let (mut c_in, mut p_out) = (client.try_clone()?, proxy.try_clone()?);
    let up = thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut c_in, &mut p_out);
        let _ = p_out.shutdown(Shutdown::Write);
    })?;
    let (mut p_in, mut c_out) = (proxy, client);
    let _ = io::copy(&mut p_in, &mut c_out);
    let _ = c_out.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
