//! The library's face to C: the `#[no_mangle]` exports made from the
//! symbol list (`platform::symbols`), each running `dispatch`, and the
//! exec trampolines.

pub(crate) mod decode;
pub(crate) mod exports;
pub(crate) mod stdio;
