//! Generates the gRPC code for every `proto/*.proto` at build time.
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust, so a build
//! needs no system `protoc`; `tonic-prost-build` then turns the resulting descriptor set into
//! prost messages plus tonic clients and servers in `OUT_DIR`, one file per protobuf package,
//! which the crate includes with `tonic::include_proto!("<package>")`: `src/lib.rs` the
//! project's own (`fleet.proto`, `raft.proto`), `src/bench/peers/etcd.rs` the client side of
//! `etcd_kv.proto` (etcd's `KV.Put`, which `testfleet bench peers etcd` calls; its generated
//! server half goes unused).

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the protobuf files live, and where their `import` statements are resolved from.
const PROTO_DIR: &str = "proto";

fn main() -> ExitCode {
    // Rerun when anything under proto/ changes, a new file included (a changed build.rs
    // reruns it anyway).
    println!("cargo:rerun-if-changed={PROTO_DIR}");

    let protos = match proto_files() {
        Ok(protos) => protos,
        Err(e) => {
            eprintln!("error: cannot list the .proto files in {PROTO_DIR}/: {e}");
            eprintln!("run the build from the crate root, where {PROTO_DIR}/ must exist");
            return ExitCode::FAILURE;
        }
    };
    let fds = match protox::compile(&protos, [PROTO_DIR]) {
        Ok(fds) => fds,
        Err(e) => {
            // protox's Debug form carries file:line:column; its Display does not.
            eprintln!("error: cannot compile {protos:?}: {e:?}");
            eprintln!("fix the .proto file at the position above and build again");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tonic_prost_build::configure().compile_fds(fds) {
        eprintln!("error: generating Rust code from {protos:?} into OUT_DIR failed: {e}");
        eprintln!("check that the target directory is writable and has free space");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Every `*.proto` directly in [`PROTO_DIR`], sorted so the generated code is reproducible.
fn proto_files() -> std::io::Result<Vec<PathBuf>> {
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(PROTO_DIR)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            protos.push(path);
        }
    }
    protos.sort();
    Ok(protos)
}
