//! Trees: one directory per blob, entries sorted by name bytes, encoded deterministically
//! (postcard) so identical directories deduplicate. Decoding rejects names that could
//! escape a restore target (`/`, `.`, `..`, NUL, empty) and unsorted or duplicate entries.

use super::FormatError;
use crate::ids::{DataId, TreeId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Full st_mode permission bits including setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: Time,
    pub atime: Time,
    pub ctime: Time,
    pub inode: u64,
    pub device: u64,
    pub nlink: u64,
    /// st_rdev of device nodes.
    pub rdev: u64,
    pub size: u64,
    pub link_target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// File content chunks in order (over the data extents when sparse).
    pub content: Vec<DataId>,
    pub subtree: Option<TreeId>,
    /// For sparse files: the (offset, length) data regions; everything else is a hole.
    /// Chunks never span two regions.
    pub extents: Option<Vec<(u64, u64)>>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn new(mut nodes: Vec<Node>) -> Tree {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        Tree { nodes }
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("tree serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let t: Tree = postcard::from_bytes(bytes)?;
        let invalid = |m: String| Err(FormatError::Invalid(m));
        for (i, n) in t.nodes.iter().enumerate() {
            if !is_safe_name(&n.name) {
                return invalid(format!("unsafe entry name {:?}", String::from_utf8_lossy(&n.name)));
            }
            if i > 0 && t.nodes[i - 1].name >= n.name {
                return invalid("entries not sorted or duplicated".into());
            }
            if n.is_dir() != n.subtree.is_some() {
                return invalid("directory without subtree or subtree on a non-directory".into());
            }
        }
        Ok(t)
    }
}

/// A single path component that cannot climb out of its directory.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            inode: 1,
            device: 1,
            nlink: 1,
            rdev: 0,
            size: 0,
            link_target: vec![],
            xattrs: vec![],
            content: vec![],
            subtree: if kind == NodeKind::Dir {
                Some(TreeId([0; 32]))
            } else {
                None
            },
            extents: None,
        }
    }

    #[test]
    fn sorted_deterministic_and_safe() {
        let t = Tree::new(vec![node(b"b", NodeKind::File), node(b"a\xff", NodeKind::Dir)]);
        assert_eq!(t.nodes[0].name, b"a\xff");
        let enc = t.encode();
        assert_eq!(Tree::decode(&enc).unwrap(), t);
        assert_eq!(Tree::new(t.nodes.clone()).encode(), enc);
        for bad in [&b".."[..], b"x/y", b"", b"."] {
            let t = Tree {
                nodes: vec![node(bad, NodeKind::File)],
            };
            assert!(Tree::decode(&t.encode()).is_err());
        }
        let unsorted = Tree {
            nodes: vec![node(b"b", NodeKind::File), node(b"a", NodeKind::File)],
        };
        assert!(Tree::decode(&unsorted.encode()).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&data);
        }
    }
}
