fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dockpod/shim/v1/shim.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/dockpod/shim/v1/shim.proto"], &["proto"])?;
    Ok(())
}
