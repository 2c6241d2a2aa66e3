//! Docker's embedded DNS (127.0.0.11 on user-defined networks) lives in
//! the container's network namespace, which the proxy shares and the
//! guest does not. The guest sends every query as a DNS-over-TCP stream
//! over vsock; here each stream is spliced to 127.0.0.11:53 over TCP,
//! where Docker's own NAT rules lead to dockerd's resolver.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use runq_protocol::slots::Slots;
use runq_protocol::{DNS_PORT, DOCKER_DNS, MAX_DNS_RELAYS};

/// A stream that carries nothing for this long is closed (a DNS-over-TCP
/// answer takes milliseconds).
const IDLE: Duration = Duration::from_secs(10);

/// Listen where the vsock backend delivers the guest's calls to port
/// [`DNS_PORT`].
pub fn serve(vsock_uds: &str) -> Result<()> {
    let listener = UnixListener::bind(format!("{vsock_uds}_{DNS_PORT}"))
        .context("binding the DNS relay socket")?;
    thread::Builder::new()
        .name("dns-relay".into())
        .spawn(move || accept_loop(listener))
        .context("starting the DNS relay")?;
    Ok(())
}

fn accept_loop(listener: UnixListener) {
    let slots = Slots::new(MAX_DNS_RELAYS);
    for conn in listener.incoming().flatten() {
        let Some(slot) = slots.take() else {
            continue; // over the cap: dropped, so closed
        };
        // A thread that cannot be had is a refused stream too.
        let _ = thread::Builder::new().spawn(move || {
            let _slot = slot;
            let _ = splice_to_docker_dns(conn);
        });
    }
}

fn splice_to_docker_dns(guest: UnixStream) -> io::Result<()> {
    let addr = (DOCKER_DNS, 53u16);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let dns = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    guest.set_read_timeout(Some(IDLE))?;
    dns.set_read_timeout(Some(IDLE))?;
    let (mut g_in, mut d_out) = (guest.try_clone()?, dns.try_clone()?);
    let up = thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut g_in, &mut d_out);
        let _ = d_out.shutdown(Shutdown::Write);
    })?;
    let (mut d_in, mut g_out) = (dns, guest);
    let _ = io::copy(&mut d_in, &mut g_out);
    let _ = g_out.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
