fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "berth/v1/raft.proto",
        "berth/v1/control.proto",
        "berth/v1/identity.proto",
        "berth/v1/tasks.proto",
        "berth/v1/services.proto",
        "berth/v1/events.proto",
        "berth/v1/schedules.proto",
        "berth/v1/secrets.proto",
        "berth/v1/stats.proto",
        "berth/v1/backup.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    // The descriptors of every file, for berthd's gRPC server reflection.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("berth_descriptor.bin"))
        // Maps (tags) in key order, as the state keeps them and people read
        // them.
        .btree_map(["."])
        // Smaller per-call buffers than tonic's (see src/codec.rs).
        .codec_path("crate::codec::BerthCodec")
        .compile_protos(&files, &[root])?;
    Ok(())
}
