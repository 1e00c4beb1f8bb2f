//! Repack refuses to lose a used blob: when a pack it would repack does not yield every used
//! blob the index places in it (here: an index whose data offsets were forged), prune stops
//! before deleting anything.
mod common;

use common::pbak::*;
use pbak::backends::{Backend, Location};
use pbak::format::pack::BlobKind;
use pbak::repo::Repository;
use std::fs;
use std::path::Path;

fn count_files(dir: &Path) -> usize {
    sh(&format!("find '{}' -type f | wc -l", dir.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn repack_stops_when_a_used_blob_would_not_be_copied() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..40u64 {
        fs::write(src.join(format!("f{i}")), prng(100 + i, 60_000)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["backup", src.to_str().unwrap()]);
    for i in 0..20u64 {
        fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    p.ok(&["backup", src.to_str().unwrap()]);
    p.ok(&["forget", "--keep-last", "1"]);

    // Forge every data blob's offset in the index (trees stay right, so the plan can mark).
    let loc = Location::parse(p.repo.to_str().unwrap()).unwrap();
    let repo = Repository::open(Backend::open(&loc, false).unwrap(), p.password.as_bytes()).unwrap();
    for name in repo.backend().list("index").unwrap() {
        let mut f = repo.read_index_file(&name).unwrap();
        for b in f.packs.iter_mut().flat_map(|p| p.blobs.iter_mut()) {
            if b.kind == BlobKind::Data {
                b.offset += 1;
            }
        }
        repo.save_index(&f).unwrap();
        repo.backend().delete(&format!("index/{name}")).unwrap();
    }
    drop(repo);
    let packs = count_files(&p.repo.join("data"));
    let index = count_files(&p.repo.join("index"));

    let o = p.run(&["prune", "--delete-after", "0s", "--max-unused", "0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("prune stopped before deleting anything"), "{e}");
    assert_eq!(count_files(&p.repo.join("data")), packs, "no pack deleted");
    assert_eq!(count_files(&p.repo.join("index")), index, "no index file deleted");
}
