//! One entry whose metadata cannot be applied must not stop the others' (issue 11, found by
//! `scripts/attack-source-swap.sh`): as root, restoring a file with a `user.*` xattr onto a
//! filesystem without xattr support (ramfs) warns about that xattr, exits 3, and every other
//! entry still gets its mode, owner and times.
mod common;

use common::pbak::*;
use std::fs;

#[test]
fn an_xattr_the_target_refuses_is_a_warning_and_the_rest_of_the_metadata_follows() {
    if !is_root() {
        eprintln!("SKIP: needs root (to mount ramfs and to restore as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), b"data").unwrap();
    fs::write(src.join("plain"), b"plain").unwrap();
    sh(&format!(
        "cd '{}' && setfattr -n user.x -v 1 sub/f && chmod 0750 sub && chmod 0640 plain sub/f && chown 1000:1000 plain && touch -d '2001-02-03 04:05:06' plain sub",
        src.display()
    ));
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", "-q", src.to_str().unwrap()]);
    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    sh(&format!("mount -t ramfs none '{}'", target.display()));
    let o = p.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let listing = |root: &std::path::Path| {
        sh(&format!(
            "cd '{}' && stat -c '%n %a %u %g %Y' plain sub sub/f",
            root.display()
        ))
    };
    let restored = target.join(src.strip_prefix("/").unwrap());
    let (want, got) = (listing(&src), listing(&restored));
    sh(&format!("umount '{}'", target.display()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("sub/f") && err.contains("xattr user.x not set"), "{err}");
    assert_eq!(got, want, "modes, owners and times of the other entries");
}
