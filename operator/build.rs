fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The node's admin API, which the operator calls (client only).
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["../node/proto/admin.proto"], &["../node/proto"])?;
    println!("cargo:rerun-if-changed=../node/proto/admin.proto");
    Ok(())
}
