//! What every public method counts, pinned on a local repository (the S3 tests in `tests/`
//! assert the same counts against a real server, through the binary).

use super::{Backend, Location, OpCounts};

fn at(counts: OpCounts, (a, b, c, up, down): (u64, u64, u64, u64, u64)) {
    let want = OpCounts {
        class_a: a,
        class_b: b,
        class_c: c,
        bytes_up: up,
        bytes_down: down,
    };
    assert_eq!(counts, want);
}

#[test]
fn each_method_counts_its_class_and_bytes_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), false).unwrap();
    assert!(b.is_local());
    b.put("a/x", b"0123456789".to_vec()).unwrap();
    b.put_parts("a/y", vec![b"abc".to_vec(), b"defg".to_vec()]).unwrap();
    at(b.counts(), (2, 0, 0, 17, 0));

    assert_eq!(b.get("a/y").unwrap(), b"abcdefg");
    assert!(b.get("a/missing").unwrap_err().is_not_found());
    at(b.counts(), (2, 2, 0, 17, 7));

    assert_eq!(b.get_range("a/x", 2, 5).unwrap(), b"23456");
    assert_eq!(b.get_range("a/x", 8, 10).unwrap(), b"89", "short at the end");
    let mut buf = vec![1; 100];
    b.get_range_into("a/x", 0, 3, &mut buf).unwrap();
    assert_eq!(buf, b"012");
    assert!(b
        .get_range_into("a/missing", 0, 3, &mut buf)
        .unwrap_err()
        .is_not_found());
    assert!(b.get_range("a/missing", 0, 3).unwrap_err().is_not_found());
    at(b.counts(), (2, 7, 0, 17, 17));

    assert_eq!(b.size("a/x").unwrap(), 10);
    assert!(b.exists("a/x").unwrap());
    assert!(!b.exists("a/missing").unwrap());
    assert!(b.size("a/missing").unwrap_err().is_not_found());
    at(b.counts(), (2, 11, 0, 17, 17));

    let mut names = b.list("a").unwrap();
    names.sort();
    assert_eq!(names, ["x", "y"]);
    // OpenDAL's fs lists a missing directory as empty, a listing like any other (a store
    // answering NotFound is not counted).
    assert!(b.list("none").unwrap().is_empty());
    at(b.counts(), (2, 11, 2, 17, 17));
    let mut sized = b.list_sized("a").unwrap();
    sized.sort();
    assert_eq!(sized, [("x".to_string(), 10), ("y".to_string(), 7)]);
    at(b.counts(), (2, 13, 3, 17, 17));

    b.delete("a/y").unwrap();
    let mut s = b.spool().unwrap();
    s.push(b"spool!".to_vec()).unwrap();
    b.put_spool("data/ab/cd", s).unwrap();
    let mut m = super::Spool::memory();
    m.push(b"mem".to_vec()).unwrap();
    b.put_spool("data/ab/ef", m).unwrap();
    b.barrier().unwrap();
    at(b.counts(), (5, 13, 3, 26, 17));
    assert_eq!(b.get("data/ab/cd").unwrap(), b"spool!");
    assert_eq!(b.get("data/ab/ef").unwrap(), b"mem");
}

#[test]
fn stale_spools_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(b.remove_stale_spools(hour).unwrap(), 0, "no .tmp yet");
    let tmp = dir.path().join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("pack-0011"), b"x").unwrap();
    std::fs::write(tmp.join("other"), b"y").unwrap();
    let live = b.spool().unwrap();
    assert_eq!(b.remove_stale_spools(hour).unwrap(), 0, "younger than an hour: kept");
    assert_eq!(
        b.remove_stale_spools(std::time::Duration::ZERO).unwrap(),
        3,
        "a live spool is a file like any other"
    );
    drop(live);
    assert!(!tmp.join("other").exists());
    at(b.counts(), (0, 0, 0, 0, 0));
}

#[test]
fn a_missing_local_repository_is_an_error_unless_created() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("repo");
    let loc = Location::parse(p.to_str().unwrap()).unwrap();
    assert!(matches!(
        Backend::open(&loc, false),
        Err(super::BackendError::Missing(_))
    ));
    let b = Backend::open(&loc, true).unwrap();
    b.put("config", b"c".to_vec()).unwrap();
    assert!(p.join("config").is_file());
}

#[test]
fn put_new_creates_only_a_free_name_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), false).unwrap();
    assert_eq!(b.put_new("marker", b"first"), Some(true));
    assert_eq!(b.put_new("marker", b"second"), Some(false));
    assert_eq!(b.get("marker").unwrap(), b"first");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join(".tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    at(b.counts(), (2, 1, 0, 11, 5));
}
