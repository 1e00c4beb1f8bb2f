//! `pbak cat`: one decrypted object as JSON, for debugging.

use crate::cli::args::Cli;
use crate::cli::{open_repo, output};
use anyhow::Result;
use clap::Args;
use pbak::ops::cat::{self, Object, Shown};
use pbak::repo::index::IndexFile;
use serde_json::json;

#[derive(Args, Debug)]
pub struct CatArgs {
    pub kind: String,
    pub id: Option<String>,
}

pub fn run(cli: &Cli, a: &CatArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let what = Object::parse(&a.kind, a.id.as_deref())?;
    match cat::read(&repo, &what)? {
        Shown::Config(c) => println!("{}", serde_json::to_string_pretty(&c)?),
        Shown::Snapshot(id, s) => println!("{}", serde_json::to_string_pretty(&output::snap_json(&id, &s))?),
        Shown::Index(f) => println!("{}", serde_json::to_string_pretty(&index_json(&f))?),
        Shown::Key(_, bytes) => println!("{}", String::from_utf8_lossy(&bytes)),
        Shown::Tree(id, tree) => println!("{}", json!({"id": id.to_hex(), "tree": tree})),
    }
    Ok(0)
}

fn index_json(f: &IndexFile) -> serde_json::Value {
    f.packs
        .iter()
        .map(|p| json!({"pack": p.id.to_hex(), "blobs": p.blobs.iter().map(|b| json!({"id": b.id.to_hex(), "type": format!("{:?}", b.kind), "offset": b.offset, "length": b.length, "raw_length": b.raw_length})).collect::<Vec<_>>()}))
        .collect()
}
