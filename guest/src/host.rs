//! The guest's channels to the host besides Python's stdout and stderr: the request arrives on
//! WASI stdin, which Rust reads to the end before any Python runs (so user code finds stdin
//! empty), and the reply leaves through `pyexec.reply`, the guest's one import of its own.
//!
//! `pyexec.reply` is reachable from Rust only: Python code has no way to call a wasm import, so
//! nothing the code prints or reads can pass for the reply.

use std::io::Read;

#[link(wasm_import_module = "pyexec")]
unsafe extern "C" {
    /// Hands the reply document to the host. The host stops a one-request instance here
    /// (nothing runs after it, so nothing can follow the reply); in a session it returns and
    /// `run` returns to the host.
    fn reply(buf: *const u8, len: u32);
}

/// The request document: everything on stdin.
pub fn read_request() -> Vec<u8> {
    let mut request = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut request)
        .expect("reading the request from stdin");
    request
}

pub fn send_reply(document: &[u8]) {
    // SAFETY: the host only reads `len` bytes from `buf`.
    unsafe { reply(document.as_ptr(), document.len() as u32) }
}

/// Makes a panic end the run with a reply that carries the panic's text to the host, which
/// logs it and answers `internal`. The default hook would print the text, with the build
/// machine's paths, on stderr, where the client reads it.
pub fn reply_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let document = serde_json::json!({ "ok": false, "panic": info.to_string() });
        send_reply(document.to_string().as_bytes());
    }));
}
