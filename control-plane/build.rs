//! Compiles our own extension proto with a vendored protoc, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Read when the script runs, not when it is compiled: a script binary cargo reuses for
    // another checkout sharing the target directory must read that checkout's protos.
    let proto_root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let extension = proto_root.join("edgexds/v1alpha1/extension.proto");
    println!("cargo:rerun-if-changed={}", extension.display());
    prost_build::Config::new().protoc_executable(protoc).compile_protos(&[extension], &[proto_root])?;
    Ok(())
}
