//! The mount's bounded cache of decrypted data blobs: least recently used out first, at most
//! `capacity` bytes of blob data (one blob larger than that is still handed out, just not
//! kept). A blob that one reader (or the prefetcher) is already fetching is waited for, not
//! fetched a second time, so a prefetch and the read that catches up with it cost one GET.

use crate::error::Result;
use crate::ids::DataId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    blobs: HashMap<DataId, (Arc<Vec<u8>>, u64)>,
    /// Last use → blob: the first entry is the least recently used.
    by_use: BTreeMap<u64, DataId>,
    loading: HashSet<DataId>,
    bytes: usize,
    tick: u64,
}

pub struct BlobCache {
    capacity: usize,
    state: Mutex<State>,
    loaded: Condvar,
}

impl BlobCache {
    pub fn new(capacity: usize) -> BlobCache {
        BlobCache {
            capacity,
            state: Mutex::default(),
            loaded: Condvar::new(),
        }
    }

    /// Whether `id` is cached or being fetched (the prefetcher skips those).
    pub fn has(&self, id: &DataId) -> bool {
        let s = self.state.lock().expect("lock");
        s.blobs.contains_key(id) || s.loading.contains(id)
    }

    /// The blob `id`, from the cache or from `load` (called without the lock held).
    pub fn get(&self, id: &DataId, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<Arc<Vec<u8>>> {
        let mut s = self.state.lock().expect("lock");
        loop {
            if let Some((data, used)) = s.blobs.get(id).cloned() {
                s.tick += 1;
                let tick = s.tick;
                s.by_use.remove(&used);
                s.by_use.insert(tick, *id);
                s.blobs.get_mut(id).expect("present").1 = tick;
                return Ok(data);
            }
            if !s.loading.contains(id) {
                break;
            }
            s = self.loaded.wait(s).expect("lock");
        }
        s.loading.insert(*id);
        drop(s);
        let r = load().map(Arc::new);
        let mut s = self.state.lock().expect("lock");
        s.loading.remove(id);
        if let Ok(data) = &r {
            if data.len() <= self.capacity {
                s.tick += 1;
                let tick = s.tick;
                s.bytes += data.len();
                s.by_use.insert(tick, *id);
                s.blobs.insert(*id, (data.clone(), tick));
                while s.bytes > self.capacity {
                    let Some((_, old)) = s.by_use.pop_first() else { break };
                    if let Some((d, _)) = s.blobs.remove(&old) {
                        s.bytes -= d.len();
                    }
                }
            }
        }
        drop(s);
        self.loaded.notify_all();
        r
    }

    /// Bytes of blob data held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().expect("lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DataId {
        DataId([n; 32])
    }

    #[test]
    fn least_recently_used_goes_first_and_the_bound_holds() {
        let c = BlobCache::new(300);
        let loads = std::cell::Cell::new(0);
        let get = |n: u8| {
            c.get(&id(n), || {
                loads.set(loads.get() + 1);
                Ok(vec![n; 100])
            })
            .unwrap()
        };
        get(1);
        get(2);
        get(3);
        get(1); // 1 is now the most recently used
        get(4); // evicts 2
        assert_eq!(c.bytes(), 300);
        assert_eq!(loads.get(), 4);
        assert!(c.has(&id(1)) && c.has(&id(3)) && c.has(&id(4)) && !c.has(&id(2)));
        get(2);
        assert_eq!(loads.get(), 5);
        // A blob larger than the whole cache is returned but not kept.
        let big = c.get(&id(9), || Ok(vec![0; 1000])).unwrap();
        assert_eq!(big.len(), 1000);
        assert!(!c.has(&id(9)));
        assert!(c.bytes() <= 300);
    }

    #[test]
    fn a_failed_load_is_not_cached() {
        let c = BlobCache::new(1000);
        let r = c.get(&id(1), || Err(crate::error::Error::Usage("boom".into())));
        assert!(r.is_err());
        assert!(!c.has(&id(1)));
        assert_eq!(c.get(&id(1), || Ok(vec![1])).unwrap().as_slice(), &[1]);
    }
}
