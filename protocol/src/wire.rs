//! Framed host<->guest messages.
//!
//! A frame is a little-endian `u32` payload length followed by the
//! payload, one message encoded with `postcard`: [`HostMsg`] from the
//! host, [`GuestMsg`] from the guest. The first frame in each direction
//! is a [`Hello`]; a version mismatch ends the session with a clear error
//! on both sides.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::ProcessSpec;

/// Largest payload we accept. The biggest legitimate message is `Start`
/// with a large environment (Docker allows ~1 MiB of it); data frames are
/// at most [`MAX_DATA_CHUNK`].
pub const MAX_FRAME: usize = 16 << 20;
/// Size of the stdio chunks senders put in one frame.
pub const MAX_DATA_CHUNK: usize = 64 << 10;

/// The largest frame the host accepts from the guest: output chunks and
/// short reports only (a `Start`, the one large message, goes the other
/// way). A bigger length prefix ends the container before any allocation.
pub const MAX_GUEST_FRAME: usize = 2 * MAX_DATA_CHUNK;

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell (and Docker) reports: N, or 128+S for signal S.
    /// The guest chooses S: any value maps into 128..=255, never overflows.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c & 0xff,
            ExitStatus::Signaled(s) => 128 + s.clamp(0, 127),
        }
    }
}

/// The first frame in each direction, before any message: both ends are
/// built from one tree, so the versions must be equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
}

/// What the host (the proxy) sends after the Hello and the request (a
/// [`StartRequest`] on the control connection, an [`ExecRequest`] on an
/// exec connection): each frame has its one type, so no side needs a
/// branch for a message out of place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    /// Bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// The container's stdin reached EOF.
    StdinEof,
    /// Deliver this signal to the process.
    Signal(i32),
    /// Terminal size changed.
    Resize { rows: u16, cols: u16 },
}

/// What the guest (runq-init) sends after the Hello. The host reads the
/// guest's frames as nothing else: a host message has no path there (its
/// bytes are read as whatever guest message they spell, or refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMsg {
    /// Workload output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The workload ended; all its output precedes this.
    Exit(ExitStatus),
    /// The workload could not be started or the guest failed; the text is
    /// for the user, the code is the exit status to report (126/127 as
    /// runc, else 1...).
    Failed {
        code: i32,
        message: String,
    },
}

/// What travels in a frame.
pub trait Message: Serialize + serde::de::DeserializeOwned {}
impl Message for Hello {}
impl Message for StartRequest {}
impl Message for ExecRequest {}
impl Message for HostMsg {}
impl Message for GuestMsg {}

/// What the guest needs to start the workload: the guest part of the VM
/// description as `runq create` wrote it, and what only the proxy learns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub guest: crate::spec::GuestConfig,
    /// The caller's terminal size (rows, cols), applied before the
    /// workload starts so that its first `stty size` is right.
    pub winsize: Option<(u16, u16)>,
    /// The container's interfaces, now the guest's NICs, in order.
    pub nics: Vec<NicConfig>,
    /// Routes beyond those the addresses imply (default gateways...).
    pub routes: Vec<RouteConfig>,
    /// Set when the VM was restored from a template rather than booted.
    pub restored: Option<Restored>,
}

/// What a guest restored from a template must renew before the workload
/// runs: every clone starts with the template's clock (stopped while it
/// was saved) and the template's random state, the same in every clone
/// (Firecracker documents both for its snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The host's wall clock when the proxy sent this (seconds, nanos).
    pub wall_clock: (i64, u32),
    /// Fresh host randomness, mixed into the guest's pool and credited,
    /// then the guest's RNG reseeded from it.
    pub seed: Vec<u8>,
}

/// One container interface as the guest must configure it: the NIC with
/// this MAC becomes `name` with these addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// `address/prefix`, IPv4 and IPv6.
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `default` or `address/prefix`.
    pub dst: String,
    pub via: Option<String>,
    pub dev: String,
    pub ipv6: bool,
}

/// What the guest needs to run an additional process (`docker exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub process: ProcessSpec,
    pub winsize: Option<(u16, u16)>,
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("control connection I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("undecodable frame: {0} bytes after the message")]
    Trailing(usize),
    #[error("protocol version mismatch: this side speaks {ours}, the other {theirs} (host and guest binaries from different builds?)")]
    Version { ours: u32, theirs: u32 },
    #[error("expected Hello as the first frame, got another message")]
    NoHello,
}

/// Encode `msg` into one frame (length prefix + payload).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_stdvec(msg)?;
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decode one payload (without its length prefix).
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, WireError> {
    // A frame is one message: bytes after it are not another.
    match postcard::take_from_bytes(payload)? {
        (msg, []) => Ok(msg),
        (_, rest) => Err(WireError::Trailing(rest.len())),
    }
}

/// Write one message as a single `write_all`, so that frames written by
/// several threads under one lock never interleave.
pub fn write_msg<W: Write, M: Message>(w: &mut W, msg: &M) -> Result<(), WireError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Read one message; `Ok(None)` on a clean EOF between frames.
pub fn read_msg<R: Read, M: Message>(r: &mut R) -> Result<Option<M>, WireError> {
    read_msg_max(r, MAX_FRAME)
}

/// Read one message of at most `max` bytes (the host reads the guest's
/// with [`MAX_GUEST_FRAME`]).
pub fn read_msg_max<R: Read, M: Message>(r: &mut R, max: usize) -> Result<Option<M>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(&payload).map(Some)
}

/// Send our Hello and check the peer's (read with the limit `max`).
fn handshake<S: Read + Write>(s: &mut S, max: usize) -> Result<(), WireError> {
    write_msg(
        s,
        &Hello {
            version: crate::PROTOCOL_VERSION,
        },
    )?;
    match read_msg_max::<_, Hello>(s, max) {
        Ok(Some(Hello { version })) if version == crate::PROTOCOL_VERSION => Ok(()),
        Ok(Some(Hello { version })) => Err(WireError::Version {
            ours: crate::PROTOCOL_VERSION,
            theirs: version,
        }),
        Ok(None) | Err(WireError::Decode(_) | WireError::Trailing(_)) => Err(WireError::NoHello),
        Err(e) => Err(e),
    }
}

/// The host's side of the handshake (the guest's frames held to
/// [`MAX_GUEST_FRAME`]).
pub fn host_handshake<S: Read + Write>(s: &mut S) -> Result<(), WireError> {
    handshake(s, MAX_GUEST_FRAME)
}

/// The guest's side of the handshake.
pub fn guest_handshake<S: Read + Write>(s: &mut S) -> Result<(), WireError> {
    handshake(s, MAX_FRAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msg: M) {
        let frame = encode(&msg).unwrap();
        let mut r = Cursor::new(frame);
        assert_eq!(read_msg::<_, M>(&mut r).unwrap(), Some(msg));
        assert_eq!(
            read_msg::<_, M>(&mut r).unwrap(),
            None,
            "clean EOF after the frame"
        );
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Hello { version: 7 });
        round_trip(HostMsg::Stdin(b"abc".to_vec()));
        round_trip(HostMsg::StdinEof);
        round_trip(HostMsg::Signal(15));
        round_trip(HostMsg::Resize { rows: 24, cols: 80 });
        round_trip(GuestMsg::Stdout(vec![0; MAX_DATA_CHUNK]));
        round_trip(GuestMsg::Stderr(vec![]));
        round_trip(GuestMsg::Exit(ExitStatus::Signaled(9)));
        round_trip(GuestMsg::Failed {
            code: 127,
            message: "not found".into(),
        });
        round_trip(ExecRequest {
            process: ProcessSpec {
                args: vec!["id".into()],
                uid: 65534,
                ..Default::default()
            },
            winsize: None,
        });
        let guest = crate::GuestConfig {
            process: ProcessSpec {
                args: vec!["true".into()],
                env: (0..1000)
                    .map(|i| format!("V{i}={}", "x".repeat(1024)))
                    .collect(),
                cwd: "/".into(),
                ..Default::default()
            },
            hostname: None,
            root: crate::RootConfig {
                share: crate::Share::NineP,
                ninep_cache: crate::NinePCache::Mmap,
                readonly: false,
                rootdisk: Some(crate::RootDisk {
                    id: "d1".into(),
                    exclude: vec!["/var/cache".into()],
                }),
            },
            mounts: crate::MountConfig {
                binds: vec!["/etc/hosts".into()],
                shm_size: Some(1 << 20),
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                ..Default::default()
            },
            disks: vec![crate::GuestDisk {
                id: "d1".into(),
                fs: Some(crate::DiskFs::Ext4),
                mountpoint: Some("/data".into()),
                readonly: true,
            }],
            devices: vec![],
            privileged: false,
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            seccomp: vec![vec![0x0006_0000_7fff_0000]],
            memory_bytes: 512 << 20,
            init: crate::InitOptions {
                runqenv: true,
                ..Default::default()
            },
            resolv_conf: Some("nameserver 10.0.0.1\n".into()),
        };
        round_trip(StartRequest {
            guest,
            winsize: Some((24, 80)),
            nics: vec![NicConfig {
                name: "eth0".into(),
                mac: "02:42:ac:11:00:02".into(),
                mtu: 1500,
                addrs: vec!["172.17.0.2/16".into(), "fd00::2/64".into()],
            }],
            routes: vec![RouteConfig {
                dst: "default".into(),
                via: Some("172.17.0.1".into()),
                dev: "eth0".into(),
                ipv6: false,
            }],
            restored: Some(Restored {
                wall_clock: (1_796_000_000, 123_456_789),
                seed: (0..64).collect(),
            }),
        });
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut r = Cursor::new(((MAX_FRAME + 1) as u32).to_le_bytes().to_vec());
        assert!(matches!(
            read_msg::<_, HostMsg>(&mut r),
            Err(WireError::TooLarge { .. })
        ));
    }

    /// The bytes test/lib/hostile-init.c writes by hand.
    #[test]
    fn encodings_the_hostile_test_guest_spells_out() {
        fn payload<M: Message>(m: &M) -> Vec<u8> {
            encode(m).unwrap()[4..].to_vec()
        }
        assert_eq!(
            payload(&Hello {
                version: crate::PROTOCOL_VERSION
            }),
            [0x04]
        );
        assert_eq!(
            payload(&GuestMsg::Stdout(b"hi".to_vec())),
            [0x00, 0x02, b'h', b'i']
        );
        assert_eq!(
            payload(&GuestMsg::Exit(ExitStatus::Signaled(i32::MAX))),
            [0x02, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f]
        );
        // The bytes of a host message (Resize { 24, 80 }) read as a guest
        // message: here a Failed cut short, refused.
        let resize = encode(&HostMsg::Resize { rows: 24, cols: 80 }).unwrap()[4..].to_vec();
        assert_eq!(resize, [0x03, 0x18, 0x50]);
        assert!(decode::<GuestMsg>(&resize).is_err());
        assert!(decode::<GuestMsg>(&[0x7f, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_guests_frames_are_held_to_the_guest_limit() {
        // A full output chunk passes; a frame one byte over the limit is
        // refused from its length prefix alone (nothing else was sent).
        let chunk = encode(&GuestMsg::Stdout(vec![7; MAX_DATA_CHUNK])).unwrap();
        let got = read_msg_max(&mut Cursor::new(chunk), MAX_GUEST_FRAME).unwrap();
        assert!(matches!(got, Some(GuestMsg::Stdout(d)) if d.len() == MAX_DATA_CHUNK));
        let mut r = Cursor::new(((MAX_GUEST_FRAME + 1) as u32).to_le_bytes().to_vec());
        let e = read_msg_max::<_, GuestMsg>(&mut r, MAX_GUEST_FRAME).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "frame of {} bytes exceeds the {MAX_GUEST_FRAME}-byte limit",
                MAX_GUEST_FRAME + 1
            )
        );
        // A Start (host -> guest) may be far larger.
        let big = encode(&HostMsg::Stdin(vec![0; MAX_GUEST_FRAME * 4])).unwrap();
        assert!(read_msg::<_, HostMsg>(&mut Cursor::new(big))
            .unwrap()
            .is_some());
    }

    #[test]
    fn truncated_frame_is_an_error_not_eof() {
        let mut frame = encode(&HostMsg::Signal(2)).unwrap();
        frame.pop();
        assert!(matches!(
            read_msg::<_, HostMsg>(&mut Cursor::new(frame)),
            Err(WireError::Io(_))
        ));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_msg::<_, GuestMsg>(&mut Cursor::new(frame)),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(42).code(), 42);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(
            ExitStatus::Signaled(i32::MAX).code(),
            255,
            "a guest-chosen signal"
        );
        assert_eq!(ExitStatus::Signaled(-5).code(), 128);
    }

    /// A peer that answers with another version is refused by name.
    #[test]
    fn handshake_refuses_other_versions() {
        struct Peer {
            input: Cursor<Vec<u8>>,
        }
        impl Read for Peer {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.input.read(b)
            }
        }
        impl Write for Peer {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let theirs = encode(&Hello { version: 99 }).unwrap();
        let mut p = Peer {
            input: Cursor::new(theirs),
        };
        assert!(matches!(
            host_handshake(&mut p),
            Err(WireError::Version { theirs: 99, .. })
        ));
        let mut p = Peer {
            input: Cursor::new(
                encode(&GuestMsg::Failed {
                    code: 1,
                    message: "x".into(),
                })
                .unwrap(),
            ),
        };
        assert!(matches!(host_handshake(&mut p), Err(WireError::NoHello)));
        let mut p = Peer {
            input: Cursor::new(vec![]),
        };
        assert!(matches!(guest_handshake(&mut p), Err(WireError::NoHello)));
    }
}
