//! The tree rebuild of `repair snapshots`: one snapshot's trees folded bottom up
//! ([`fold_tree`]), each entry whose data or tree is gone marked (the rules are in the
//! module comment of [`super::snapshots`] and the README's Decisions), every changed tree
//! stored through the pack writer's sink. A tree shared by several snapshots is rebuilt once.

use super::marks::{cut_missing, suffixed};
use super::{DAMAGED_SUFFIX, MISSING_TREE_SUFFIX};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::ids::{AnyBlobId, TreeId};
use crate::repo::index::Index;
use crate::repo::pack_writer::BlobSink;
use crate::repo::walk::{fold_tree, TreeFold, Visit};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};

/// What became of one snapshot's trees.
pub(super) enum Outcome {
    Unchanged,
    RootMissing,
    Changed { tree: TreeId, damage: Vec<Damage> },
}

/// Something gone: its path relative to the tree being folded, and whether it is a tree.
#[derive(Clone, Debug)]
pub(super) struct Damage {
    pub(super) path: Vec<u8>,
    pub(super) tree: bool,
}

fn prefixed(name: &[u8], damage: &[Damage]) -> Vec<Damage> {
    let at = |d: &Damage| [name, b"/", &d.path].concat();
    damage
        .iter()
        .map(|d| Damage {
            path: at(d),
            tree: d.tree,
        })
        .collect()
}

/// One entry after the rebuild: its node (`None` for the root), whether it changed, whether
/// it was renamed, and what is gone below it.
pub(super) struct Part {
    node: Option<Node>,
    changed: bool,
    renamed: bool,
    damage: Vec<Damage>,
}

impl Part {
    fn same(node: &Node) -> Part {
        Part {
            node: Some(node.clone()),
            changed: false,
            renamed: false,
            damage: Vec::new(),
        }
    }
}

/// A rebuilt tree, by its original id: its new id, and what is gone below it.
#[derive(Clone)]
enum Rebuilt {
    Missing,
    Tree {
        id: TreeId,
        changed: bool,
        damage: Vec<Damage>,
    },
}

/// The state of the rebuild, shared by every selected snapshot.
pub(super) struct Rebuild<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// Per pack of the index: still stored.
    present: &'a [bool],
    sink: &'a BlobSink<'a>,
    done: HashMap<TreeId, Rebuilt>,
    sent: HashSet<TreeId>,
    pub(super) trees_written: usize,
    /// The root being folded, and its new id once folded.
    root: TreeId,
    new_root: TreeId,
}

impl<'a> Rebuild<'a> {
    pub(super) fn new(repo: &'a Repository, index: &'a Index, present: &'a [bool], sink: &'a BlobSink<'a>) -> Self {
        Rebuild {
            repo,
            index,
            present,
            sink,
            done: HashMap::new(),
            sent: HashSet::new(),
            trees_written: 0,
            root: TreeId::default(),
            new_root: TreeId::default(),
        }
    }

    pub(super) fn snapshot(&mut self, s: &Snapshot) -> Result<Outcome> {
        let rebuilt = match self.done.get(&s.tree) {
            Some(r) => r.clone(),
            None => match self.load(&s.tree)? {
                None => Rebuilt::Missing,
                Some(tree) => {
                    self.root = s.tree;
                    let part = fold_tree(tree, self)?;
                    let (id, changed) = (self.new_root, part.changed);
                    Rebuilt::Tree {
                        id,
                        changed,
                        damage: part.damage,
                    }
                }
            },
        };
        Ok(match rebuilt {
            Rebuilt::Missing => Outcome::RootMissing,
            Rebuilt::Tree { changed: false, .. } => Outcome::Unchanged,
            Rebuilt::Tree { id, damage, .. } => Outcome::Changed { tree: id, damage },
        })
    }

    /// A blob is there if an index lists it in a pack that is still stored.
    fn available(&self, id: &impl AnyBlobId) -> bool {
        self.index.get(id).is_some_and(|l| self.present[l.pack as usize])
    }

    /// Tree `id`, or `None` if it is gone or damaged; a backend failure is an error.
    fn load(&self, id: &TreeId) -> Result<Option<Tree>> {
        if !self.available(id) {
            return Ok(None);
        }
        match self.repo.load_tree(self.index, id) {
            Ok(t) => Ok(Some(t)),
            Err(Error::Corrupt { .. }) => Ok(None),
            Err(Error::Backend(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Store a tree unless the repository or this run has it.
    fn save(&mut self, nodes: Vec<Node>) -> Result<TreeId> {
        let plain = Tree::new(nodes).encode();
        let id = TreeId::of(self.repo.key().blob_id(&plain));
        if !self.available(&id) && self.sent.insert(id) {
            self.sink.send(self.repo.seal_blob(BlobKind::Tree, &plain))?;
            self.trees_written += 1;
        }
        Ok(id)
    }

    fn file(&self, node: &Node) -> Part {
        let gone: Vec<bool> = node.content.iter().map(|c| !self.available(c)).collect();
        if !gone.contains(&true) {
            return Part::same(node);
        }
        let lens: Vec<Option<u64>> = node
            .content
            .iter()
            .map(|c| self.index.get(c).map(|l| l.raw_length as u64))
            .collect();
        let mut new = node.clone();
        cut_missing(&mut new, &lens, &gone);
        new.name = suffixed(&node.name, DAMAGED_SUFFIX);
        Part {
            node: Some(new),
            changed: true,
            renamed: true,
            damage: vec![Damage {
                path: node.name.clone(),
                tree: false,
            }],
        }
    }

    /// The entry of directory `node` whose subtree `st` was already rebuilt or is gone.
    fn rebuilt_dir(&mut self, node: &Node, rebuilt: Rebuilt) -> Result<Part> {
        let mut new = node.clone();
        Ok(match rebuilt {
            Rebuilt::Missing => {
                new.subtree = Some(self.save(Vec::new())?);
                new.name = suffixed(&node.name, MISSING_TREE_SUFFIX);
                let damage = vec![Damage {
                    path: node.name.clone(),
                    tree: true,
                }];
                Part {
                    node: Some(new),
                    changed: true,
                    renamed: true,
                    damage,
                }
            }
            Rebuilt::Tree { id, changed, damage } => {
                new.subtree = Some(id);
                let damage = prefixed(&node.name, &damage);
                Part {
                    node: Some(new),
                    changed,
                    renamed: false,
                    damage,
                }
            }
        })
    }
}

impl TreeFold for Rebuild<'_> {
    type Out = Part;

    fn entry(&mut self, _dir: &[Vec<u8>], node: &Node) -> Result<Visit<Part>> {
        let st = match (node.kind, node.subtree) {
            (NodeKind::File, _) => return Ok(Visit::Done(self.file(node))),
            (NodeKind::Dir, Some(st)) => st,
            _ => return Ok(Visit::Done(Part::same(node))),
        };
        if let Some(r) = self.done.get(&st).cloned() {
            return Ok(Visit::Done(self.rebuilt_dir(node, r)?));
        }
        match self.load(&st)? {
            Some(tree) => Ok(Visit::Descend(tree)),
            None => {
                self.done.insert(st, Rebuilt::Missing);
                Ok(Visit::Done(self.rebuilt_dir(node, Rebuilt::Missing)?))
            }
        }
    }

    fn finish(&mut self, _dir: &[Vec<u8>], node: Option<Node>, mut outs: Vec<Part>) -> Result<Part> {
        let orig = node.as_ref().and_then(|n| n.subtree).unwrap_or(self.root);
        let changed = outs.iter().any(|p| p.changed);
        let id = match changed {
            true => {
                unique_names(&mut outs);
                self.save(outs.iter_mut().filter_map(|p| p.node.take()).collect())?
            }
            false => orig,
        };
        let damage: Vec<Damage> = outs.into_iter().flat_map(|p| p.damage).collect();
        let rebuilt = Rebuilt::Tree {
            id,
            changed,
            damage: damage.clone(),
        };
        self.done.insert(orig, rebuilt.clone());
        match node {
            Some(n) => self.rebuilt_dir(&n, rebuilt),
            None => {
                self.new_root = id;
                Ok(Part {
                    node: None,
                    changed,
                    renamed: false,
                    damage,
                })
            }
        }
    }
}

/// Renamed entries must not take a name already in their directory (`Tree::new` keeps one
/// entry per name): such a one gets `.2`, `.3`, … appended.
fn unique_names(parts: &mut [Part]) {
    let names = |renamed: bool| {
        parts
            .iter()
            .filter(move |p| p.renamed == renamed)
            .filter_map(|p| p.node.as_ref().map(|n| n.name.clone()))
    };
    let mut taken: HashSet<Vec<u8>> = names(false).collect();
    for n in parts.iter_mut().filter(|p| p.renamed).filter_map(|p| p.node.as_mut()) {
        let base = n.name.clone();
        let mut k = 1;
        while !taken.insert(n.name.clone()) {
            k += 1;
            n.name = [&base[..], format!(".{k}").as_bytes()].concat();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::repair::marks::tests::file;

    #[test]
    fn renamed_entries_get_unique_names() {
        let part = |name: &[u8], renamed| {
            let mut n = file(0, None);
            n.name = name.to_vec();
            Part {
                node: Some(n),
                changed: renamed,
                renamed,
                damage: vec![],
            }
        };
        let mut parts = vec![part(b"a.pbak-damaged", false), part(b"a.pbak-damaged", true)];
        unique_names(&mut parts);
        assert_eq!(parts[1].node.as_ref().unwrap().name, b"a.pbak-damaged.2");
    }
}
