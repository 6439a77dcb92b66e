//! The `pyexec` imports: the only channel between this guest and the host besides WASI stdio.
//!
//! They are reachable from Rust only; Python code has no way to call a wasm import.

#[link(wasm_import_module = "pyexec")]
unsafe extern "C" {
    /// Length in bytes of the request document.
    fn request_len() -> u32;
    /// Copies the request document into `buf`, which holds `request_len()` bytes.
    fn request_read(buf: *mut u8, len: u32);
    /// Hands the reply document to the host. The host stops the instance here: nothing runs
    /// after it, so nothing can follow the reply.
    fn reply(buf: *const u8, len: u32);
}

pub fn read_request() -> Vec<u8> {
    // SAFETY: the host writes exactly `len` bytes into a buffer of `len` bytes.
    unsafe {
        let len = request_len();
        let mut buf = vec![0u8; len as usize];
        request_read(buf.as_mut_ptr(), len);
        buf
    }
}

pub fn send_reply(document: &[u8]) {
    // SAFETY: the host only reads `len` bytes from `buf`.
    unsafe { reply(document.as_ptr(), document.len() as u32) }
}
