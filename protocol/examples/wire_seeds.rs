//! `cargo run -p runq-protocol --example wire_seeds DIR`: one framed
//! message of each type into DIR, the seed corpus of the `wire_decode`
//! fuzz target (`make fuzz`), written by the real encoder so that the
//! seeds follow the wire format as it changes.

use runq_protocol::spec::ProcessSpec;
use runq_protocol::wire::{
    self, ExecRequest, ExitStatus, GuestMsg, Hello, HostMsg, MAX_DATA_CHUNK,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: wire_seeds DIR")?;
    std::fs::create_dir_all(&dir)?;
    let hello = wire::encode(&Hello {
        version: runq_protocol::PROTOCOL_VERSION,
    })?;
    std::fs::write(format!("{dir}/hello"), &hello)?;
    let exec = wire::encode(&ExecRequest {
        process: ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "id".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
            uid: 65534,
            rlimits: vec![(7, 1024, 4096)],
            ..Default::default()
        },
        winsize: Some((24, 80)),
    })?;
    std::fs::write(format!("{dir}/exec"), &exec)?;
    let host = [
        HostMsg::Stdin(b"input\n".to_vec()),
        HostMsg::StdinEof,
        HostMsg::Signal(15),
        HostMsg::Resize { rows: 24, cols: 80 },
    ];
    let guest = [
        GuestMsg::Stdout(b"output\n".to_vec()),
        GuestMsg::Stderr(vec![0xff; 16]),
        // A chunk as large as the guest may send, and an exit of each kind.
        GuestMsg::Stdout(vec![b'x'; MAX_DATA_CHUNK]),
        GuestMsg::Exit(ExitStatus::Exited(3)),
        GuestMsg::Exit(ExitStatus::Signaled(9)),
        GuestMsg::Failed {
            code: 127,
            message: "exec: nosuchcmd: not found".into(),
        },
    ];
    for (i, msg) in host.iter().enumerate() {
        std::fs::write(format!("{dir}/host-{i:02}"), wire::encode(msg)?)?;
    }
    for (i, msg) in guest.iter().enumerate() {
        std::fs::write(format!("{dir}/guest-{i:02}"), wire::encode(msg)?)?;
    }
    // A conversation: the guest's Hello, then its frames one after another.
    let mut talk = hello;
    for m in [&guest[0], &guest[1], &guest[3]] {
        talk.extend(wire::encode(m)?);
    }
    std::fs::write(format!("{dir}/conversation"), talk)?;
    Ok(())
}
