//! The pack reader: ranges of packs read in windows into one reused buffer per thread, and
//! blobs opened in place there.

/// Largest byte range of a pack that restore and `check --read-data` read at once; blobs
/// further apart are read separately (a single larger blob alone).
pub const READ_WINDOW: u64 = 4 << 20;

thread_local! {
    static WINDOW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lend this thread's pack read window (see `Backend::get_range_into`), reused for every
/// window of every pack: windows allocated afresh each time left the allocator holding
/// several times their size (check's peak RSS fell from 64–71 MB to 42 MB).
pub fn with_window<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    WINDOW.with_borrow_mut(f)
}
