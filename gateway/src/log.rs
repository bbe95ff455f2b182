//! One line per event on stderr, prefixed like the library's.

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("shmnet-gateway: {}", format_args!($($arg)*))
    };
}
