//! The marking rules of `repair snapshots` for one entry, as pure functions: the new name
//! of what lost data, and what is left of a file whose chunks are partly gone.

use crate::format::tree::Node;
use crate::ids::DataId;

/// `name` with `suffix`, unless it already ends so (a repaired snapshot repaired again).
pub(super) fn suffixed(name: &[u8], suffix: &str) -> Vec<u8> {
    match name.ends_with(suffix.as_bytes()) {
        true => name.to_vec(),
        false => [name, suffix.as_bytes()].concat(),
    }
}

/// Drop the chunks of `node` marked `gone` (`lens`: each chunk's raw length, where an index
/// still states it). A sparse file whose gone chunks all have known lengths keeps its size
/// and every byte's offset: each gone chunk becomes a hole. Otherwise the chunks are cut out
/// and the size shrinks to what is left, as restic does (without a length, nothing after a
/// gone chunk can be placed), and a sparse file becomes a dense one.
pub(super) fn cut_missing(node: &mut Node, lens: &[Option<u64>], gone: &[bool]) {
    let kept: Vec<DataId> = node
        .content
        .iter()
        .zip(gone)
        .filter(|(_, g)| !**g)
        .map(|(c, _)| *c)
        .collect();
    let known: Option<Vec<u64>> = lens.iter().copied().collect();
    if let (Some(ext), Some(known)) = (&node.extents, known) {
        if let Some(holed) = punch_holes(ext, &known, gone) {
            node.extents = Some(holed);
            node.content = kept;
            return;
        }
    }
    node.size = lens
        .iter()
        .zip(gone)
        .filter(|(_, g)| !**g)
        .map(|(l, _)| l.unwrap_or(0))
        .sum();
    node.content = kept;
    node.extents = None;
}

/// The data regions of a sparse file once its `gone` chunks are holes; `None` if the chunk
/// lengths do not cover the regions exactly.
fn punch_holes(ext: &[(u64, u64)], lens: &[u64], gone: &[bool]) -> Option<Vec<(u64, u64)>> {
    let (mut out, mut i) = (Vec::new(), 0);
    for &(off, len) in ext {
        let (mut pos, mut run): (u64, Option<(u64, u64)>) = (off, None);
        while pos < off + len {
            let l = *lens.get(i)?;
            match (gone[i], &mut run) {
                (true, _) => out.extend(run.take()),
                (false, Some(r)) => r.1 += l,
                (false, None) => run = Some((pos, l)),
            }
            pos += l;
            i += 1;
        }
        if pos != off + len {
            return None;
        }
        out.extend(run);
    }
    (i == lens.len()).then_some(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::format::tree::NodeKind;
    use crate::ops::repair::DAMAGED_SUFFIX;

    pub(crate) fn file(n: usize, extents: Option<Vec<(u64, u64)>>) -> Node {
        let t = crate::format::tree::Time::default();
        Node {
            name: b"f".to_vec(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: t,
            atime: t,
            ctime: t,
            inode: 1,
            device: 1,
            nlink: 1,
            rdev: 0,
            size: 100,
            link_target: vec![],
            xattrs: vec![],
            content: (0..n as u8).map(|i| DataId([i; 32])).collect(),
            subtree: None,
            extents,
        }
    }

    #[test]
    fn dense_files_lose_their_missing_chunks_and_shrink() {
        let mut f = file(3, None);
        cut_missing(&mut f, &[Some(10), None, Some(30)], &[false, true, false]);
        assert_eq!(f.content, vec![DataId([0; 32]), DataId([2; 32])]);
        assert_eq!((f.size, f.extents), (40, None));
    }

    #[test]
    fn sparse_files_get_holes_where_lengths_are_known() {
        // Regions 10..40 (chunks 10 + 20) and 60..70 (chunk 10); the 20-byte chunk is gone.
        let mut f = file(3, Some(vec![(10, 30), (60, 10)]));
        cut_missing(&mut f, &[Some(10), Some(20), Some(10)], &[false, true, false]);
        assert_eq!(f.extents, Some(vec![(10, 10), (60, 10)]));
        assert_eq!((f.size, f.content.len()), (100, 2));
        // Without the gone chunk's length: cut out, dense.
        let mut f = file(3, Some(vec![(10, 30), (60, 10)]));
        cut_missing(&mut f, &[Some(10), None, Some(10)], &[false, true, false]);
        assert_eq!((f.size, f.extents), (20, None));
        assert_eq!(
            punch_holes(&[(0, 5)], &[3], &[false]),
            None,
            "lengths must cover regions"
        );
    }

    #[test]
    fn marked_names_are_marked_once() {
        assert_eq!(suffixed(b"a", DAMAGED_SUFFIX), b"a.pbak-damaged");
        assert_eq!(suffixed(b"a.pbak-damaged", DAMAGED_SUFFIX), b"a.pbak-damaged");
    }
}
