fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = [
        "proto/dockpod/shim/v1/shim.proto",
        "proto/dockpod/manager/v1/manager.proto",
    ];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure().compile_protos(&PROTOS, &["proto"])?;
    Ok(())
}
