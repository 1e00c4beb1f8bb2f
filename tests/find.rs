//! `pbak find` (issue 15): names across snapshots, case, the newest N, and which files use a
//! given pack or blob.
mod common;

use common::pbak::*;
use std::fs;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn paths(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn find_names_and_the_files_of_a_pack() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("etc/ssh")).unwrap();
    fs::write(src.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
    fs::write(src.join("etc/hosts.conf"), "x").unwrap();
    fs::write(src.join("big.bin"), prng(5, 300_000)).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let s1 = p.backup_id(&src);
    fs::write(src.join("etc/NEW.CONF"), "y").unwrap();
    let s2 = p.backup_id(&src);
    let root = src.to_str().unwrap();

    let all = json(&p.ok(&["--json", "find", "*.conf", "*_config"]));
    let mut want = vec![
        format!("{root}/etc/hosts.conf"),
        format!("{root}/etc/ssh/sshd_config"),
        format!("{root}/etc/hosts.conf"),
        format!("{root}/etc/ssh/sshd_config"),
    ];
    assert_eq!(paths(&all), want, "{all}");
    assert_eq!(all[0]["snapshot"], s1.as_str());
    assert_eq!(all[2]["snapshot"], s2.as_str());
    assert_eq!(all[1]["size"], 8);
    // Case-insensitive finds the new file too; --newest 1 looks only at s2.
    let ci = json(&p.ok(&["--json", "find", "-i", "*.conf", "--newest", "1"]));
    want = vec![format!("{root}/etc/NEW.CONF"), format!("{root}/etc/hosts.conf")];
    assert_eq!(paths(&ci), want, "{ci}");
    let text = p.ok(&["find", "sshd_config", "--snapshot", &s1[..8]]);
    assert!(
        text.contains(&format!("{root}/etc/ssh/sshd_config")) && text.contains("1 found in 1 snapshots"),
        "{text}"
    );
    let none = p.run(&["find", "nothing-like-this"]);
    assert_eq!(none.status.code(), Some(1));

    // The largest pack holds big.bin's chunks: find names big.bin in both snapshots, and
    // not the small files (stored in the same pack or not, big.bin must be there).
    let big_pack = sh(&format!(
        "find '{}' -type f -printf '%s %f\\n' | sort -n | tail -1 | cut -d' ' -f2",
        p.repo.join("data").display()
    ));
    let by_pack = json(&p.ok(&["--json", "find", "--pack", &big_pack.trim()[..12]]));
    let hits = paths(&by_pack);
    assert!(
        hits.iter().filter(|h| h.ends_with("/big.bin")).count() == 2,
        "{by_pack}"
    );
    // A blob id prefix: the first chunk of big.bin, from the tree as `cat` prints it.
    let tree = json(&p.ok(&["cat", "tree", &format!("{}:{}", &s2[..8], root.trim_start_matches('/'))]));
    let name: Vec<serde_json::Value> = b"big.bin".iter().map(|b| (*b).into()).collect();
    let node = tree["tree"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_array() == Some(&name))
        .cloned();
    let first: String = node
        .and_then(|n| n["content"][0].as_array().cloned())
        .unwrap_or_else(|| panic!("no content for big.bin in {tree}"))
        .iter()
        .map(|b| format!("{:02x}", b.as_u64().unwrap()))
        .collect();
    let by_blob = json(&p.ok(&["--json", "find", "--blob", &first[..16]]));
    assert_eq!(paths(&by_blob), vec![format!("{root}/big.bin"); 2], "{by_blob}");
    let bad = p.run(&["find", "--pack", "zz"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no indexed pack starts with zz"));
}
