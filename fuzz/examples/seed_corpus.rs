//! Writes one valid input per fuzz target into `corpus/<target>/`, so the fuzzer starts
//! from the real formats instead of having to discover JSON and postcard layouts itself.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus

use pbak::ids::{DataId, PackId, SnapshotId, TreeId};
use pbak::format::config::Config;
use pbak::format::crypto::{Kind, MasterKey};
use pbak::format::index::{IndexFile, IndexPack, MarkedPack};
use pbak::format::keyfile::{KdfParams, KeyFile};
use pbak::format::pack::{BlobKind, SealedBlob};
use pbak::repo::pack_writer::PackBuilder;
use pbak::format::snapshot::{BtrfsOrigin, Snapshot, Summary};
use pbak::format::tree::{Node, NodeKind, Time, Tree};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: "user".into(),
        group: "user".into(),
        mtime: Time {
            sec: 1_700_000_000,
            nsec: 5,
        },
        atime: Time::default(),
        ctime: Time {
            sec: 1_700_000_001,
            nsec: 0,
        },
        inode: 42,
        device: 7,
        nlink: 1,
        rdev: 0,
        size: 0,
        link_target: Vec::new(),
        xattrs: Vec::new(),
        content: Vec::new(),
        subtree: None,
        extents: None,
    }
}

fn main() {
    // Must match the fuzz targets' key.
    let key = MasterKey::from_secret(&[7; 32]);

    let cheap = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::create(&MasterKey::generate(), b"pw", cheap, "host", "user", &[5; 32]).expect("key file");
    write("keyfile", "valid", &kf.encode());

    write("config", "valid", &Config::new().encode());

    let mut builder = PackBuilder::default();
    for (i, kind) in [BlobKind::Data, BlobKind::Tree, BlobKind::Data].into_iter().enumerate() {
        let plain = vec![i as u8; 100 + i];
        builder.add(SealedBlob {
            id: key.blob_id(&plain),
            kind,
            sealed: key.seal(&plain),
            raw_length: plain.len() as u32,
            compressed: i == 1,
        })
        .expect("memory pack");
    }
    let pack = builder.finish(&key).expect("memory pack");
    let (pack_id, pack_blobs) = (pack.id, pack.blobs.clone());
    let bytes = pack.body.into_bytes().expect("memory pack");
    write("pack_header", "valid", &bytes);
    let n = bytes.len();
    let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes")) as usize;
    let area = n - 4 - hlen;
    let header = key.open_as(Kind::PackHeader, &bytes[area..n - 4]).expect("own header opens");
    let mut plain = (area as u16).to_le_bytes().to_vec();
    plain.extend_from_slice(&header);
    write("pack_header_plain", "valid", &plain);

    let index = IndexFile {
        packs: vec![
            IndexPack {
                id: pack_id,
                blobs: pack_blobs.clone(),
            },
            IndexPack {
                id: PackId([9; 32]),
                blobs: pack_blobs[..1].to_vec(),
            },
        ],
        marked: vec![MarkedPack {
            id: PackId([8; 32]),
            marked_at: 1_700_000_000,
            delete_after: 1_700_086_400,
            host: "prune-host".into(),
            blobs: pack_blobs[..1].to_vec(),
        }],
    };
    let sealed = index.encode(&key);
    write("index", "valid", &sealed);
    write("index_plain", "valid", &key.open_as(Kind::Index, &sealed).expect("own index opens"));

    let mut file = node("file.txt", NodeKind::File);
    file.size = 201;
    file.content = vec![DataId([1; 32]), DataId([2; 32])];
    file.extents = Some(vec![(0, 100), (4096, 101)]);
    file.xattrs = vec![(b"user.comment".to_vec(), b"hi".to_vec())];
    let mut dir = node("dir", NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(TreeId([3; 32]));
    let mut link = node("link", NodeKind::Symlink);
    link.link_target = b"../elsewhere".to_vec();
    let tree = Tree::new(vec![file, dir, link, node("dev", NodeKind::CharDev)]);
    write("tree", "valid", &tree.encode());

    let snap = Snapshot {
        time: Time {
            sec: 1_700_000_000,
            nsec: 123,
        },
        host: "host".into(),
        user: "user".into(),
        paths: vec!["/home".into(), "/etc".into()],
        tags: vec!["daily".into()],
        tree: TreeId([4; 32]),
        parent: Some(SnapshotId([5; 32])),
        btrfs: Some(BtrfsOrigin {
            subvol_uuid: [6; 16],
            generation: 1234,
            snapshot_path: "/.snapshots/home".into(),
            options_digest: [7; 32],
        }),
        summary: Summary {
            files_new: 1,
            total_files: 3,
            total_bytes: 201,
            ..Summary::default()
        },
        partial: false,
        program_version: "0.1.0".into(),
    };
    write("snapshot", "valid", &snap.encode());

    write("names", "id", PackId::from_hex(&"ab".repeat(32)).expect("hex").to_hex().as_bytes());
    write("names", "spec", b"1a2b3c4d:/home/user/docs");
    write("names", "duration", b"1y2m3w4d5h");
    let lock = pbak::format::lock::LockInfo {
        time: 1_700_000_000,
        host: "zephyrus".into(),
        user: "root".into(),
        pid: 4242,
        exclusive: true,
        command: "prune".into(),
        boot: "b1e5/pid:[4026531836]".into(),
    };
    write("lock_plain", "valid", &key.open_as(Kind::PruneMarker, &lock.seal(&key)).expect("own lock opens"));
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
