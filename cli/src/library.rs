//! Finding libshmnet.so, and what it says about itself without being
//! loaded: its version (a marked string) and its build id (the ELF note).

use std::path::{Path, PathBuf};

/// Where `shmnet run` looks, in order: `$SHMNET_LIB`, next to the shmnet
/// binary (a build tree's target/release, or a flat install), the install
/// prefix's `lib/` (`<prefix>/bin/shmnet` -> `<prefix>/lib`), the build
/// tree of a `cargo run` from elsewhere, then /usr/local/lib and /usr/lib.
pub(crate) fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(lib) = std::env::var_os("SHMNET_LIB").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(lib));
        return out;
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(bin.join("libshmnet.so"));
        if let Some(prefix) = bin.parent() {
            out.push(prefix.join("lib/libshmnet.so"));
            out.push(prefix.join("lib64/libshmnet.so"));
            out.push(prefix.join("release/libshmnet.so")); // target/debug/shmnet
        }
    }
    out.push(PathBuf::from("/usr/local/lib/libshmnet.so"));
    out.push(PathBuf::from("/usr/lib/libshmnet.so"));
    out
}

/// The library to use: `given`, or the first candidate that exists.
pub(crate) fn find(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(absolute(p))
        } else {
            Err(format!(
                "{} is not a file: give the path of libshmnet.so",
                p.display()
            ))
        };
    }
    let all = candidates();
    all.iter()
        .find(|p| p.is_file())
        .map(|p| absolute(p))
        .ok_or_else(|| {
            format!(
                "libshmnet.so not found (looked in {}): build it with `make`, install it with `make install`, or set SHMNET_LIB",
                all.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        })
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The version marked in the library file (`shmnet-version:X\0`).
pub(crate) fn version_of(bytes: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"shmnet-version:";
    let at = bytes.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let rest = bytes.get(at..)?;
    let end = rest.iter().take(64).position(|&b| b == 0)?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
        .then(|| v.to_owned())
}

/// The GNU build id (hex) of a 64-bit little-endian ELF file: the
/// NT_GNU_BUILD_ID note in a PT_NOTE segment. Every offset is checked.
pub(crate) fn build_id(bytes: &[u8]) -> Option<String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum.min(64) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let mut at = off;
        let end = off.checked_add(size)?.min(bytes.len());
        while at + 12 <= end {
            let namesz = u32_at(at)? as usize;
            let descsz = u32_at(at + 4)? as usize;
            let kind = u32_at(at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
            let next = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
            if next > end {
                break;
            }
            if kind == 3 && bytes.get(name_at..name_at + namesz)? == b"GNU\0" {
                let desc = bytes.get(desc_at..desc_at + descsz)?;
                return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
            }
            at = next;
        }
    }
    None
}

/// The library's identity, for `--version` and `check`.
pub(crate) struct Identity {
    pub(crate) path: PathBuf,
    pub(crate) version: Option<String>,
    pub(crate) build_id: Option<String>,
}

pub(crate) fn identify(path: &Path) -> Result<Identity, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Identity {
        path: path.to_path_buf(),
        version: version_of(&bytes),
        build_id: build_id(&bytes),
    })
}

/// `shmnet --version`: this binary's version and the library's.
pub(crate) fn version_line() -> String {
    let lib = match find(None).and_then(|p| identify(&p)) {
        Ok(id) => format!(
            "library {} ({}, build-id {})",
            id.version.as_deref().unwrap_or("unknown"),
            id.path.display(),
            id.build_id.as_deref().unwrap_or("none")
        ),
        Err(_) => "library not found".to_owned(),
    };
    format!("{}\n{lib}", env!("CARGO_PKG_VERSION"))
}
