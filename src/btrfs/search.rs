//! Reading Btrfs trees: BTRFS_IOC_TREE_SEARCH_V2 over a key range, BTRFS_IOC_INO_LOOKUP, and the
//! decoding of the items they return.
//!
//! Invariants:
//! - On-disk items are little-endian packed structs: they are decoded from bounds-checked byte
//!   slices ([`le64`], [`le32`], [`le16`]), never cast; a short item is an `InvalidData` error.
//! - A search visits every item of its key range exactly once, in key order, however many
//!   ioctl calls it takes: each call resumes just after the last key returned.

use super::sys::{self, InoLookupArgs, SearchArgsV2, SearchKey, IOC_INO_LOOKUP};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One search result: header fields plus the item bytes.
pub(super) struct Item<'a> {
    pub(super) objectid: u64,
    pub(super) kind: u32,
    pub(super) offset: u64,
    pub(super) data: &'a [u8],
}

pub(super) fn bad_item() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated btrfs item in tree search result")
}
pub(super) fn le64(b: &[u8], at: usize) -> io::Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(at..at + 8).ok_or_else(bad_item)?.try_into().unwrap(),
    ))
}
pub(super) fn le32(b: &[u8], at: usize) -> io::Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(at..at + 4).ok_or_else(bad_item)?.try_into().unwrap(),
    ))
}
pub(super) fn le16(b: &[u8], at: usize) -> io::Result<usize> {
    Ok(u16::from_le_bytes(b.get(at..at + 2).ok_or_else(bad_item)?.try_into().unwrap()).into())
}

/// The bytes of `b` before its first NUL (all of `b` if there is none).
pub(super) fn cstr_bytes(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// BTRFS_IOC_TREE_SEARCH_V2 over the linear key range [min, max] of `key`, calling `visit`
/// for every item. V2 with a 64 KiB buffer, because v1 silently ends a search (nr_items = 0,
/// no error) at an item larger than its 3992-byte buffer, such as a big xattr.
pub(super) fn tree_search(
    f: &File,
    mut key: SearchKey,
    mut visit: impl FnMut(&Item) -> io::Result<()>,
) -> io::Result<()> {
    let mut a: Box<SearchArgsV2> = sys::boxed_zeroed();
    loop {
        key.nr_items = u32::MAX;
        a.key = key;
        sys::tree_search_v2(f, &mut a)?;
        let (n, buf) = (a.key.nr_items, &a.buf[..]);
        if n == 0 {
            return Ok(());
        }
        let (mut at, mut last) = (0usize, (0, 0, 0));
        for _ in 0..n {
            let h = buf.get(at..at + 32).ok_or_else(bad_item)?;
            let ne64 = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap());
            let ne32 = |i: usize| u32::from_ne_bytes(h[i..i + 4].try_into().unwrap());
            let len = ne32(28) as usize;
            let data = buf.get(at + 32..at + 32 + len).ok_or_else(bad_item)?;
            let item = Item {
                objectid: ne64(8),
                offset: ne64(16),
                kind: ne32(24),
                data,
            };
            visit(&item)?;
            last = (item.objectid, item.kind, item.offset);
            at += 32 + len;
        }
        // Continue just after the last returned key.
        (key.min_objectid, key.min_type, key.min_offset) = match last {
            (o, t, k) if k < u64::MAX => (o, t, k + 1),
            (o, t, _) if t < 255 => (o, t + 1, 0),
            (o, _, _) if o < u64::MAX => (o + 1, 0, 0),
            _ => return Ok(()),
        };
        if (key.min_objectid, key.min_type, key.min_offset) > (key.max_objectid, key.max_type, key.max_offset) {
            return Ok(());
        }
    }
}

/// BTRFS_IOC_INO_LOOKUP: (tree id, path of `objectid` inside tree `treeid`, with trailing '/').
/// `treeid == 0` means the fd's subvolume; `(0, 256)` is allowed unprivileged.
pub(super) fn ino_lookup(f: &File, treeid: u64, objectid: u64) -> io::Result<(u64, PathBuf)> {
    let mut a: InoLookupArgs = sys::zeroed();
    a.treeid = treeid;
    a.objectid = objectid;
    sys::ioctl(f, IOC_INO_LOOKUP, &mut a)?;
    Ok((
        a.treeid,
        PathBuf::from(OsString::from_vec(cstr_bytes(&a.name).to_vec())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_fields_are_bounds_checked() {
        let b = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0];
        assert_eq!(le64(&b, 0).unwrap(), 1);
        assert_eq!(le32(&b, 8).unwrap(), 2);
        assert_eq!(le16(&b, 12).unwrap(), 3);
        for e in [
            le64(&b, 7).unwrap_err(),
            le32(&b, 11).unwrap_err(),
            le16(&b, 13).unwrap_err(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn cstr_bytes_stops_at_first_nul() {
        assert_eq!(cstr_bytes(b"ab\0cd\0"), b"ab");
        assert_eq!(cstr_bytes(b"abc"), b"abc");
        assert_eq!(cstr_bytes(b""), b"");
    }
}
