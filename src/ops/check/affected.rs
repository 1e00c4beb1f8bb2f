//! Which snapshots a problem affects, found without a second walk and without a set of
//! snapshots per tree: the walk numbers every distinct tree and keeps one edge (child,
//! parent) per subdirectory entry of each distinct tree, 8 bytes each; a problem is noted
//! against the trees that refer to it. Afterwards each problem's trees are followed up the
//! edges to the roots, and a root names its snapshots. Memory is a number per tree beside
//! the walk's seen set and 8 bytes per subdirectory entry, whatever the number of
//! snapshots; the upward search runs only for problems, and visits only their ancestors.

use crate::ids::TreeId;
use std::collections::HashMap;

/// The trees the walk saw, numbered, and their parent edges.
#[derive(Default)]
pub(super) struct Graph {
    num: HashMap<TreeId, u32>,
    /// (child, parent)
    edges: Vec<(u32, u32)>,
}

impl Graph {
    /// The number of `id`, and whether it is new.
    pub(super) fn number(&mut self, id: &TreeId) -> (u32, bool) {
        let next = self.num.len() as u32;
        let n = *self.num.entry(*id).or_insert(next);
        (n, n == next)
    }

    /// `parent` (already numbered) refers to `child`; whether `child` is new.
    pub(super) fn edge(&mut self, parent: &TreeId, child: &TreeId) -> bool {
        let p = self.num[parent];
        let (c, new) = self.number(child);
        self.edges.push((c, p));
        new
    }

    pub(super) fn get(&self, id: &TreeId) -> u32 {
        self.num[id]
    }

    /// For each of `problems` problems, the snapshots (indices into `roots`, which gives
    /// each snapshot's root tree) whose trees reach one of its `hits` (problem, tree).
    pub(super) fn affected(self, roots: &[u32], mut hits: Vec<(u32, u32)>, problems: usize) -> Vec<Vec<usize>> {
        let n = self.num.len();
        drop(self.num);
        let mut edges = self.edges;
        edges.sort_unstable();
        let mut start = vec![0u32; n + 1];
        for &(c, _) in &edges {
            start[c as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let parents: Vec<u32> = edges.into_iter().map(|(_, p)| p).collect();
        let mut snaps_of: HashMap<u32, Vec<usize>> = HashMap::new();
        for (s, r) in roots.iter().enumerate() {
            snaps_of.entry(*r).or_default().push(s);
        }
        hits.sort_unstable();
        hits.dedup();
        let mut out = vec![Vec::new(); problems];
        // stamp[t] == k + 1: tree t was reached while following problem k.
        let mut stamp = vec![0u32; n];
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let k = group[0].0;
            let mut todo: Vec<u32> = group.iter().map(|h| h.1).collect();
            let found = &mut out[k as usize];
            while let Some(t) = todo.pop() {
                let t = t as usize;
                if stamp[t] == k + 1 {
                    continue;
                }
                stamp[t] = k + 1;
                found.extend(snaps_of.get(&(t as u32)).into_iter().flatten());
                todo.extend(&parents[start[t] as usize..start[t + 1] as usize]);
            }
            found.sort_unstable();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_reach_the_snapshots_above_them_only() {
        let t = |i: u8| TreeId([i; 32]);
        let mut g = Graph::default();
        // Snapshot 0: root 1 → 3 → 4; snapshot 1: root 2 → 3, 2 → 5; snapshot 2: root 2 too.
        g.number(&t(1));
        g.number(&t(2));
        assert!(g.edge(&t(1), &t(3)));
        assert!(g.edge(&t(3), &t(4)));
        assert!(!g.edge(&t(2), &t(3)), "a shared subtree is walked once");
        assert!(g.edge(&t(2), &t(5)));
        let roots = [g.get(&t(1)), g.get(&t(2)), g.get(&t(2))];
        let hits = vec![
            (0, g.get(&t(4))),
            (1, g.get(&t(5))),
            (1, g.get(&t(5))),
            (2, g.get(&t(1))),
        ];
        assert_eq!(
            g.affected(&roots, hits, 4),
            vec![vec![0, 1, 2], vec![1, 2], vec![0], vec![]]
        );
    }
}
