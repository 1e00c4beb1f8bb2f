//! `cat`: one repository object, decrypted and decoded, for debugging. Every object is read
//! the way the other operations read it: index files and snapshots through their content-hash
//! check, trees through the index, object names from [`crate::format::layout`].

use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::ids::{IndexId, KeyId, SnapshotId, TreeId};
use crate::repo::filter::parse_snapshot_path;
use crate::repo::index::IndexFile;
use crate::repo::Repository;

const USAGE: &str = "usage: pbak cat config | snapshot ID | index ID | key ID | tree SNAPSHOT[:DIR]";

/// Which object to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Config,
    /// `latest` or a snapshot id prefix.
    Snapshot(String),
    Index(IndexId),
    /// A key id prefix.
    Key(String),
    /// The directory `subpath` of a snapshot (its root when empty).
    Tree {
        snapshot: String,
        subpath: String,
    },
}

impl Object {
    /// `config`, `snapshot ID`, `index ID` (a whole index id), `key ID`, `tree SNAPSHOT[:DIR]`.
    pub fn parse(kind: &str, id: Option<&str>) -> Result<Object> {
        Ok(match (kind, id) {
            ("config", _) => Object::Config,
            ("snapshot", Some(id)) => Object::Snapshot(id.into()),
            ("index", Some(id)) => Object::Index(IndexId::from_hex(id).ok_or_else(|| {
                Error::Usage(format!(
                    "cat index: {id:?} is not an index id (the 64 hex digits of a name under index/)"
                ))
            })?),
            ("key", Some(id)) => Object::Key(id.into()),
            ("tree", Some(spec)) => {
                let (snapshot, subpath) = parse_snapshot_path(spec);
                Object::Tree {
                    snapshot: snapshot.into(),
                    subpath: subpath.into(),
                }
            }
            _ => return Err(Error::Usage(USAGE.into())),
        })
    }
}

/// An object as read.
#[derive(Debug)]
pub enum Shown {
    Config(Config),
    Snapshot(SnapshotId, Box<Snapshot>),
    Index(IndexFile),
    /// A key file's bytes (JSON; its secret part is sealed).
    Key(KeyId, Vec<u8>),
    Tree(TreeId, Tree),
}

pub fn read(repo: &Repository, what: &Object) -> Result<Shown> {
    Ok(match what {
        Object::Config => Shown::Config(repo.config().clone()),
        Object::Snapshot(spec) => {
            let (id, s) = repo.find_snapshot(spec)?;
            Shown::Snapshot(id, Box::new(s))
        }
        Object::Index(id) => Shown::Index(repo.read_index_file(&id.to_hex())?),
        Object::Key(prefix) => {
            let id = repo.find_key(prefix)?;
            Shown::Key(id, repo.backend().get(&layout::key(&id))?)
        }
        Object::Tree { snapshot, subpath } => {
            let index = repo.load_index()?;
            let (_, s) = repo.find_snapshot(snapshot)?;
            let (id, _) = repo.resolve_path(&index, &s.tree, subpath)?;
            Shown::Tree(id, repo.load_tree(&index, &id)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_kinds() {
        assert_eq!(Object::parse("config", None).unwrap(), Object::Config);
        let hex = "ab".repeat(32);
        assert_eq!(
            Object::parse("index", Some(&hex)).unwrap(),
            Object::Index(IndexId([0xab; 32]))
        );
        let e = Object::parse("index", Some("abcd")).unwrap_err().to_string();
        assert!(e.contains("\"abcd\" is not an index id"), "{e}");
        assert_eq!(
            Object::parse("tree", Some("latest:/a")).unwrap(),
            Object::Tree {
                snapshot: "latest".into(),
                subpath: "/a".into()
            }
        );
        for (k, id) in [("tree", None), ("bogus", Some("x")), ("snapshot", None)] {
            assert_eq!(Object::parse(k, id).unwrap_err().to_string(), USAGE);
        }
    }
}
