//! The guest and proxy read each other's frames: any bytes must decode to
//! a message or an error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_protocol::{exec_args, wire};

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    while let Ok(Some(_)) = wire::read_msg(&mut cursor) {}
    let _ = wire::decode(data);
    // The exec argument encoding, fed the same bytes as argv words.
    let words: Vec<String> = String::from_utf8_lossy(data)
        .split('\0')
        .map(str::to_string)
        .collect();
    let _ = exec_args::from_argv(&words, vec![]);
});
