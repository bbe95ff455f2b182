//! The status file's layout (docs/status.md, "Layout"): the one definition
//! libshmnet (`interposer/src/platform/status/`, the writer) and `shmnet
//! ss` (`cli/src/status.rs`, the reader) both use. Byte offsets of words
//! in host byte order, naturally aligned.
#![no_std]

pub const MAGIC: [u8; 8] = *b"SHMNETS1";
/// 3: the sent and received counters on separate cache lines (2 had both
/// at 72 and 80: a connection with one thread sending and another
/// receiving wrote one line from both).
pub const VERSION: u32 = 3;
pub const HEADER_BYTES: usize = 256;
pub const ENTRY_BYTES: usize = 128;
pub const ENTRIES: usize = 1022;
pub const FILE_BYTES: usize = HEADER_BYTES + ENTRIES * ENTRY_BYTES;

// Header fields.
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8;
pub const H_HEADER_BYTES: usize = 12;
pub const H_ENTRY_BYTES: usize = 16;
pub const H_ENTRIES: usize = 20;
pub const H_PID: usize = 24;
pub const H_EUID: usize = 28;
pub const H_START: usize = 32;
pub const H_PIDNS: usize = 40;
/// Entries that found no free place (not listed), since the file was made.
pub const H_OVERFLOW: usize = 48;
/// Nonzero once the creator is exiting: its file may be removed, so a
/// forked child that claims in it makes a file of its own instead.
pub const H_CLOSING: usize = 52;

// Entry fields, within an entry. Its first cache line (0..64) holds what
// the claim writes, the flags and the sent counter; the second (64..128)
// the peer, the socket's identity and the received counter: the two
// counters, written on every send and every receive (possibly by two
// threads), never share a line.
pub const E_STATE: usize = 0;
pub const E_PID: usize = 4;
pub const E_START: usize = 8;
/// The application's fd number (0xffffffff unknown).
pub const E_FD: usize = 16;
pub const E_FLAGS: usize = 20;
pub const E_LOCAL: usize = 24;
/// Bytes written into our ring.
pub const E_SENT: usize = 48;
/// When the entry was made (Unix seconds).
pub const E_OPENED_S: usize = 56;
pub const E_PEER: usize = 64;
/// Bytes read from the peer's ring.
pub const E_RECEIVED: usize = 88;
/// The socket's identity: a connection's segment (the inode of its shared
/// memory, the same at both ends and in every process holding it); a
/// listener's kernel TCP listener (its inode; 0: none).
pub const E_IDENTITY: usize = 96;
pub const E_TCP_INO: usize = E_IDENTITY;
/// A listener's rendezvous sockets (inodes; 0: none).
pub const E_RDV_INO: usize = 104;
pub const E_RDV2_INO: usize = 112;
/// A connection's ring bytes per direction.
pub const E_RING_BYTES: usize = 120;
/// An address: family (u16) and port (u16, host order) in one u32, scope
/// id (u32), 16 bytes of address (IPv4 in the first 4).
pub const ADDR_BYTES: usize = 24;

// Entry states.
pub const FREE: u32 = 0;
pub const FILLING: u32 = 1;
pub const LISTENER: u32 = 2;
pub const CONNECTION: u32 = 3;

// Entry flags (the word at `E_FLAGS`).
pub const CONNECTOR: u32 = 1;
pub const SHUT_WR: u32 = 2;
pub const SHUT_RD: u32 = 4;
pub const PEER_EOF: u32 = 8;
pub const WAIT_READ: u32 = 16;
pub const WAIT_WRITE: u32 = 32;
/// The process is about to exec: the reader skips the entry.
pub const EXECING: u32 = 64;

const LINE: usize = 64;

// The fields tile the entry without overlap, each naturally aligned, and
// the two counters are on different cache lines.
const _: () = {
    let fields: [(usize, usize); 15] = [
        (E_STATE, 4),
        (E_PID, 4),
        (E_START, 8),
        (E_FD, 4),
        (E_FLAGS, 4),
        (E_LOCAL, ADDR_BYTES),
        (E_SENT, 8),
        (E_OPENED_S, 8),
        (E_PEER, ADDR_BYTES),
        (E_RECEIVED, 8),
        (E_IDENTITY, 8),
        (E_RDV_INO, 8),
        (E_RDV2_INO, 8),
        (E_RING_BYTES, 4),
        (ENTRY_BYTES, 0),
    ];
    let mut i = 0;
    while i + 1 < fields.len() {
        let (at, len) = fields[i];
        assert!(at + len <= fields[i + 1].0);
        assert!(at.is_multiple_of(if len >= 8 { 8 } else { 4 }));
        i += 1;
    }
    assert!(E_SENT / LINE != E_RECEIVED / LINE);
    assert!(HEADER_BYTES.is_multiple_of(LINE) && ENTRY_BYTES.is_multiple_of(LINE));
    assert!(FILE_BYTES == 128 << 10);
    assert!(H_CLOSING + 4 <= HEADER_BYTES);
};
