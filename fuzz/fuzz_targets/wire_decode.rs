//! The guest and proxy read each other's frames: any bytes must decode to
//! a message or an error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_protocol::wire::{ExecRequest, GuestMsg, Hello, HostMsg, StartRequest};
use runq_protocol::{exec_args, wire};

fuzz_target!(|data: &[u8]| {
    // As the guest reads the host's frames (up to the 16 MiB of Start)...
    let mut cursor = std::io::Cursor::new(data);
    while let Ok(Some(_)) = wire::read_msg::<_, HostMsg>(&mut cursor) {}
    // ...and as the host reads the guest's: nothing over the guest limit
    // is ever decoded (its length prefix is refused before any allocation).
    let mut cursor = std::io::Cursor::new(data);
    loop {
        let at = cursor.position() as usize;
        match wire::read_msg_max::<_, GuestMsg>(&mut cursor, wire::MAX_GUEST_FRAME) {
            Ok(Some(_)) => {
                let took = cursor.position() as usize - at;
                assert!(took <= 4 + wire::MAX_GUEST_FRAME, "decoded a {took}-byte guest frame");
            }
            _ => break,
        }
    }
    let _ = wire::decode::<Hello>(data);
    let _ = wire::decode::<StartRequest>(data);
    let _ = wire::decode::<ExecRequest>(data);
    let _ = wire::decode::<HostMsg>(data);
    let _ = wire::decode::<GuestMsg>(data);
    // The exec argument encoding, fed the same bytes as argv words.
    let words: Vec<String> = String::from_utf8_lossy(data)
        .split('\0')
        .map(str::to_string)
        .collect();
    let _ = exec_args::from_argv(&words, vec![]);
});
