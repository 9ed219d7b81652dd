//! Regenerates the checked-in protobuf code with a vendored protoc and fails on any drift.

use std::path::Path;

#[test]
fn generated_code_matches_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("temp dir");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Results' (and findings') maps decode into BTreeMaps: no hasher to seed per result, and key
    // order for free where records are written (JSON with sorted keys).
    config.btree_map([".vigil.v1.ProbeResult", ".vigil.v1.DeepCheckFinding"]);
    tonic_prost_build::configure()
        // prost's codec, except that result batches decode into pooled results.
        .codec_path("crate::codec::VigilCodec")
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_with_config(
            config,
            &[
                root.join("vigil/v1/vigil.proto"),
                root.join("keda/externalscaler.proto"),
            ],
            &[root.to_path_buf()],
        )
        .expect("protoc compiles vigil.proto and externalscaler.proto");

    for name in ["vigil.v1.rs", "externalscaler.rs"] {
        let fresh = std::fs::read_to_string(out.path().join(name)).expect("generated file");
        let checked_in = root.join("src/gen").join(name);
        if std::env::var_os("VIGIL_UPDATE_PROTO").is_some() {
            std::fs::write(&checked_in, &fresh).expect("write generated code");
            continue;
        }
        let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
        assert!(
            current == fresh,
            "{} is out of date with the .proto files; run \
             `VIGIL_UPDATE_PROTO=1 cargo test -p vigil-proto --test codegen` and commit the result",
            checked_in.display()
        );
    }
}
