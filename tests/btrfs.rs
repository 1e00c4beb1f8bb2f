//! Tests against real Btrfs filesystems on loop devices (see common::BtrfsLoop).
mod common;

use common::{btrfs_or_skip, subvol_create};
use pbak::btrfs::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn snapshot_info_readonly_delete() {
    let Some(fs_) = btrfs_or_skip("snapshot_info_readonly_delete") else {
        return;
    };
    let mnt = fs_.path();
    let sv = mnt.join("sv");
    subvol_create(&sv);
    assert!(is_btrfs(&sv).unwrap());
    assert!(is_subvolume_root(&sv).unwrap() && is_subvolume_root(mnt).unwrap());
    fs::write(sv.join("a"), b"one").unwrap();
    sync_filesystem(&sv).unwrap();
    let info = subvolume_info(&sv).unwrap();
    assert!(info.id >= 256 && info.parent_id == 5 && info.name == "sv");
    assert_ne!(info.uuid, [0; 16]);
    assert_eq!(info.parent_uuid, [0; 16]);
    assert!(!info.readonly && !is_readonly(&sv).unwrap());
    assert_eq!(subvolume_info(mnt).unwrap().id, 5);

    fs::write(sv.join("b"), b"two").unwrap();
    sync_filesystem(&sv).unwrap();
    let info2 = subvolume_info(&sv).unwrap();
    assert!(
        info2.generation > info.generation,
        "{} !> {}",
        info2.generation,
        info.generation
    );

    let snap = create_snapshot(&sv, mnt, OsStr::new("snap"), true).unwrap();
    assert_eq!(snap, mnt.join("snap"));
    assert!(is_subvolume_root(&snap).unwrap());
    let si = subvolume_info(&snap).unwrap();
    assert_eq!(
        si.parent_uuid, info.uuid,
        "snapshot parent_uuid must be the source uuid"
    );
    assert_ne!(si.uuid, info.uuid);
    assert!(si.readonly && si.flags & ROOT_SUBVOL_RDONLY != 0 && is_readonly(&snap).unwrap());
    assert_eq!(fs::read(snap.join("b")).unwrap(), b"two");
    assert!(
        fs::write(snap.join("c"), b"x").is_err(),
        "read-only snapshot accepted a write"
    );
    println!("snapshot {} of {}", uuid_string(&si.uuid), uuid_string(&si.parent_uuid));

    set_readonly(&snap, false).unwrap();
    assert!(!is_readonly(&snap).unwrap() && !subvolume_info(&snap).unwrap().readonly);
    set_readonly(&snap, true).unwrap();
    assert!(is_readonly(&snap).unwrap());

    let rw = create_snapshot(&sv, mnt, OsStr::new("rw"), false).unwrap();
    assert!(!is_readonly(&rw).unwrap());
    fs::write(rw.join("c"), b"x").unwrap();
    assert!(matches!(
        create_snapshot(&sv, mnt, OsStr::new("snap"), true),
        Err(BtrfsError::AlreadyExists { .. })
    ));

    delete_subvolume(&snap).unwrap();
    delete_subvolume(&rw).unwrap();
    assert!(!snap.exists() && !rw.exists());
    let ids: Vec<u64> = list_subvolumes(mnt).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![info.id]);
}

#[test]
fn list_subvolumes_with_paths() {
    let Some(fs_) = btrfs_or_skip("list_subvolumes_with_paths") else {
        return;
    };
    let mnt = fs_.path();
    subvol_create(&mnt.join("sv"));
    fs::create_dir_all(mnt.join("sv/d/e")).unwrap();
    subvol_create(&mnt.join("sv/d/e/inner"));
    fs::create_dir(mnt.join("snaps")).unwrap();
    create_snapshot(&mnt.join("sv"), &mnt.join("snaps"), OsStr::new("s1"), true).unwrap();
    let list = list_subvolumes(mnt).unwrap();
    println!("{list:#?}");
    let sv = subvolume_info(&mnt.join("sv")).unwrap().id;
    let inner = subvolume_info(&mnt.join("sv/d/e/inner")).unwrap().id;
    let got: Vec<(u64, &str)> = list.iter().map(|e| (e.parent_id, e.path.to_str().unwrap())).collect();
    assert_eq!(got, vec![(5, "sv"), (sv, "sv/d/e/inner"), (5, "snaps/s1")]);
    assert_eq!(list[1].id, inner);
    // Listing works from any path on the filesystem.
    assert_eq!(list_subvolumes(&mnt.join("sv/d")).unwrap(), list);
}

#[test]
fn change_detection() {
    let Some(fs_) = btrfs_or_skip("change_detection") else {
        return;
    };
    let mnt = fs_.path();
    let sv = mnt.join("sv");
    subvol_create(&sv);
    for d in ["keep", "rmdir", "from", "to"] {
        fs::create_dir(sv.join(d)).unwrap();
    }
    for f in ["keep/untouched", "modify", "chmod", "rmdir/gone", "from/moved"] {
        fs::write(sv.join(f), vec![b'x'; 10_000]).unwrap();
    }
    sync_filesystem(&sv).unwrap();
    let base = create_snapshot(&sv, mnt, OsStr::new("base"), true).unwrap();
    let g = subvolume_info(&base).unwrap().otransid;
    let again = create_snapshot(&sv, mnt, OsStr::new("again"), true).unwrap();
    for p in [&sv, &again] {
        let cs = changed_inodes_since(p, g + 1).unwrap();
        assert!(cs.inodes.is_empty(), "nothing changed yet, got {cs:?}");
    }

    let (untouched, keep) = (ino(&sv.join("keep/untouched")), ino(&sv.join("keep")));
    let (modified, chmodded, moved) = (
        ino(&sv.join("modify")),
        ino(&sv.join("chmod")),
        ino(&sv.join("from/moved")),
    );
    let (rmdir, from, to) = (ino(&sv.join("rmdir")), ino(&sv.join("from")), ino(&sv.join("to")));
    let mut f = fs::OpenOptions::new().append(true).open(sv.join("modify")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    fs::set_permissions(sv.join("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(sv.join("created"), b"new").unwrap();
    fs::remove_file(sv.join("rmdir/gone")).unwrap();
    fs::rename(sv.join("from/moved"), sv.join("to/moved")).unwrap();
    let created = ino(&sv.join("created"));

    sync_filesystem(&sv).unwrap();
    let snap = create_snapshot(&sv, mnt, OsStr::new("next"), true).unwrap();
    for p in [&sv, &snap] {
        let cs = changed_inodes_since(p, g + 1).unwrap();
        println!("{}: {cs:?}", p.display());
        for (what, i) in [
            ("modified", modified),
            ("chmodded", chmodded),
            ("created", created),
            ("renamed", moved),
        ] {
            assert!(cs.contains(i), "{what} inode {i} missing from {cs:?}");
        }
        for (what, d) in [
            ("root", 256),
            ("parent of removed", rmdir),
            ("rename source", from),
            ("rename target", to),
        ] {
            assert!(cs.dirs.contains(&d), "{what} dir {d} missing from {cs:?}");
        }
        assert!(
            !cs.contains(untouched) && !cs.contains(keep),
            "untouched file/dir reported: {cs:?}"
        );
        assert!(cs.dirs.is_subset(&cs.inodes));
    }
    // Inclusive lower bound: an old generation reports everything written since.
    assert!(changed_inodes_since(&sv, 0).unwrap().contains(untouched));
    assert_eq!(inode_paths(&sv, moved).unwrap(), vec![sv.join("to/moved")]);
    assert_eq!(inode_paths(&snap, created).unwrap(), vec![snap.join("created")]);
}

#[test]
fn error_cases() {
    let Some(fs_) = btrfs_or_skip("error_cases") else {
        return;
    };
    let mnt = fs_.path();
    let sv = mnt.join("sv");
    subvol_create(&sv);
    fs::create_dir_all(sv.join("plain/deeper")).unwrap();
    let show = |e: &BtrfsError| println!("{e}");

    // Not Btrfs: /proc is never Btrfs.
    assert!(!is_btrfs(Path::new("/proc")).unwrap());
    let e = subvolume_info(Path::new("/proc")).unwrap_err();
    show(&e);
    assert!(matches!(e, BtrfsError::NotBtrfs { fs_type: 0x9fa0, .. }), "{e:?}");
    assert!(matches!(
        is_subvolume_root(Path::new("/proc")),
        Err(BtrfsError::NotBtrfs { .. })
    ));
    let e = create_snapshot(Path::new("/proc"), mnt, OsStr::new("x"), true).unwrap_err();
    assert!(matches!(e, BtrfsError::NotBtrfs { .. }), "{e:?}");

    // Not a subvolume root: a plain directory inside the subvolume.
    let plain = sv.join("plain/deeper");
    assert!(!is_subvolume_root(&plain).unwrap());
    let e = create_snapshot(&plain, mnt, OsStr::new("x"), true).unwrap_err();
    show(&e);
    let id = subvolume_info(&sv).unwrap().id;
    match &e {
        BtrfsError::NotSubvolumeRoot {
            containing_id,
            containing_path,
            ..
        } => {
            assert_eq!(*containing_id, Some(id));
            assert_eq!(
                containing_path.as_deref(),
                Some(fs::canonicalize(&sv).unwrap().as_path())
            );
        }
        _ => panic!("{e:?}"),
    }
    assert!(e.to_string().contains(&format!("inside subvolume {id}")));
    for r in [
        delete_subvolume(&plain),
        set_readonly(&plain, true),
        subvolume_info(&plain).map(drop),
    ] {
        assert!(matches!(r, Err(BtrfsError::NotSubvolumeRoot { .. })), "{r:?}");
    }
    assert!(matches!(
        changed_inodes_since(&plain, 0),
        Err(BtrfsError::NotSubvolumeRoot { .. })
    ));

    // Snapshot into another filesystem: a non-Btrfs temp dir, then a second Btrfs (EXDEV).
    let elsewhere = [std::env::temp_dir(), "/dev/shm".into()]
        .into_iter()
        .find(|d| !is_btrfs(d).unwrap_or(true));
    let other = tempfile::tempdir_in(elsewhere.expect("no non-Btrfs temp directory")).unwrap();
    let e = create_snapshot(&sv, other.path(), OsStr::new("x"), true).unwrap_err();
    show(&e);
    assert!(matches!(e, BtrfsError::CrossFilesystem { .. }), "{e:?}");
    let fs2 = btrfs_or_skip("error_cases (second fs)").unwrap();
    let e = create_snapshot(&sv, fs2.path(), OsStr::new("x"), true).unwrap_err();
    assert!(matches!(e, BtrfsError::CrossFilesystem { .. }), "{e:?}");

    // Already exists (a plain file of that name), invalid names, missing paths.
    fs::write(mnt.join("taken"), b"").unwrap();
    let e = create_snapshot(&sv, mnt, OsStr::new("taken"), true).unwrap_err();
    show(&e);
    assert!(matches!(e, BtrfsError::AlreadyExists { .. }));
    for bad in ["", ".", "..", "a/b"] {
        let r = create_snapshot(&sv, mnt, OsStr::new(bad), true);
        assert!(matches!(r, Err(BtrfsError::InvalidName { .. })), "{bad:?}: {r:?}");
    }
    let e = subvolume_info(&mnt.join("missing")).unwrap_err();
    show(&e);
    assert!(matches!(e, BtrfsError::Io { .. }));
    // Deleting through a symlink is refused; deleting a subvolume with a nested one fails.
    std::os::unix::fs::symlink(&sv, mnt.join("link")).unwrap();
    assert!(matches!(
        delete_subvolume(&mnt.join("link")),
        Err(BtrfsError::NotSubvolumeRoot { .. })
    ));
    subvol_create(&sv.join("nested"));
    let e = delete_subvolume(&sv).unwrap_err();
    show(&e);
    assert!(matches!(e, BtrfsError::Io { .. }) && sv.exists());
}

const CHILD_ENV: &str = "PBAK_BTRFS_TEST_UNPRIVILEGED_SUBVOL";

/// Runs as `nobody` (spawned by `not_permitted_unprivileged`); a no-op otherwise.
#[test]
fn unprivileged_child() {
    let Ok(sv) = std::env::var(CHILD_ENV) else {
        return;
    };
    let sv = Path::new(&sv);
    let mnt = sv.parent().unwrap();
    let info = subvolume_info(sv).expect("GET_SUBVOL_INFO works unprivileged");
    assert!(info.id >= 256 && !is_readonly(sv).unwrap());
    let denied = [
        ("delete", delete_subvolume(sv)),
        ("snapshot", create_snapshot(sv, mnt, OsStr::new("x"), true).map(drop)),
        ("changed", changed_inodes_since(sv, 0).map(drop)),
        ("list", list_subvolumes(sv).map(drop)),
        ("setflags", set_readonly(sv, true)),
    ];
    for (what, r) in denied {
        match r {
            Err(e @ BtrfsError::NotPermitted { .. }) => println!("{what}: {e}"),
            other => panic!("{what}: expected NotPermitted, got {other:?}"),
        }
    }
}

#[test]
fn not_permitted_unprivileged() {
    let Some(fs_) = btrfs_or_skip("not_permitted_unprivileged") else {
        return;
    };
    let sv = fs_.path().join("sv");
    subvol_create(&sv);
    fs::set_permissions(fs_.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args(["--exact", "unprivileged_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &sv)
        .output()
        .expect("setpriv (util-linux) is needed to run a test as nobody");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "unprivileged child failed"
    );
    assert!(sv.exists());
}
