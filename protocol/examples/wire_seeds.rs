//! `cargo run -p runq-protocol --example wire_seeds DIR`: one framed
//! message of each type into DIR, the seed corpus of the `wire_decode`
//! fuzz target (`make fuzz`), written by the real encoder so that the
//! seeds follow the wire format as it changes.

use runq_protocol::spec::ProcessSpec;
use runq_protocol::wire::{self, ExecRequest, ExitStatus, Msg, MAX_DATA_CHUNK};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: wire_seeds DIR")?;
    std::fs::create_dir_all(&dir)?;
    let msgs = [
        Msg::Hello {
            version: runq_protocol::PROTOCOL_VERSION,
        },
        Msg::Exec(Box::new(ExecRequest {
            process: ProcessSpec {
                args: vec!["sh".into(), "-c".into(), "id".into()],
                env: vec!["PATH=/usr/bin:/bin".into()],
                cwd: "/".into(),
                uid: 65534,
                rlimits: vec![(7, 1024, 4096)],
                ..Default::default()
            },
            winsize: Some((24, 80)),
        })),
        Msg::Stdin(b"input\n".to_vec()),
        Msg::StdinEof,
        Msg::Signal(15),
        Msg::Resize { rows: 24, cols: 80 },
        Msg::Stdout(b"output\n".to_vec()),
        Msg::Stderr(vec![0xff; 16]),
        // A chunk as large as the guest may send, and an exit of each kind.
        Msg::Stdout(vec![b'x'; MAX_DATA_CHUNK]),
        Msg::Exit(ExitStatus::Exited(3)),
        Msg::Exit(ExitStatus::Signaled(9)),
        Msg::Failed {
            code: 127,
            message: "exec: nosuchcmd: not found".into(),
        },
    ];
    for (i, msg) in msgs.iter().enumerate() {
        let path = format!("{dir}/{i:02}-{}", msg.kind());
        std::fs::write(path, wire::encode(msg)?)?;
    }
    // A conversation: the guest's frames one after another.
    let talk: Vec<u8> = [&msgs[0], &msgs[6], &msgs[7], &msgs[9]]
        .iter()
        .map(|m| wire::encode(m))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    std::fs::write(format!("{dir}/conversation"), talk)?;
    Ok(())
}
