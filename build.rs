use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files([
        "keyward/v1/api_key.proto",
        "keyward/v1/api_key_service.proto",
        "keyward/v1/audit_service.proto",
        "keyward/v1/credit.proto",
        "keyward/v1/credit_service.proto",
        "keyward/v1/rate_limit_service.proto",
        "keyward/v1/role.proto",
        "keyward/v1/role_service.proto",
        "keyward/v1/rpc_provider_key.proto",
        "keyward/v1/rpc_provider_key_service.proto",
        "keyward/v1/webhook_service.proto",
    ])?;
    // Encoded by protox itself: prost_types' descriptors would drop the google.api.http
    // options, which reflection clients and the REST gateway read.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("keyward_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    // Written by hand (proto/verify_response.rs): a server answers with a key encoded once.
    tonic_prost_build::configure()
        .extern_path(".keyward.v1.VerifyApiKeyResponse", "crate::verify_response::VerifyApiKeyResponse")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
