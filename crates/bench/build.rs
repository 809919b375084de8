fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let file = root.join("etcd.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    // A client only: the bench drives etcd, it never serves its API.
    tonic_build::configure()
        .build_server(false)
        .compile_protos(&[file], &[root])?;
    Ok(())
}
