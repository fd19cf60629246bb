//! Compiles the vendored subset of etcd's v3 protos (`third_party/etcd`, etcd's own
//! definitions, Apache-2.0) with protox (pure Rust), so neither this crate nor its users
//! need a system `protoc` (the `etcd-client` crate does).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("third_party");
    let files = [root.join("etcd/rpc.proto"), root.join("etcd/kv.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
