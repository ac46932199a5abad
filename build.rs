//! Build-time facts the binaries need:
//! - an rpath to the libtorch that torch-sys linked against, so that
//!   `dicoflow`, tests and examples run without LD_LIBRARY_PATH;
//! - whether `mozjpeg-sys` built libjpeg-turbo with its SIMD kernels (it does
//!   when `nasm` was on PATH; else it silently builds the portable C code, which
//!   gives the same pixels about twice as slowly). Read from the `jconfig.h` it
//!   generated, exported as `DICOFLOW_JPEG_SIMD` (`1`/`0`) for
//!   `dicoflow::image::jpeg::SIMD`, and warned about here.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    jpeg_simd();
}

fn jpeg_simd() {
    println!("cargo:rerun-if-env-changed=DEP_JPEG_INCLUDE");
    let config = std::env::var_os("DEP_JPEG_INCLUDE").and_then(|dirs| {
        std::env::split_paths(&dirs)
            .map(|d| d.join("jconfig.h"))
            .find(|p| p.is_file())
    });
    let simd = match &config {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read_to_string(path)
                .map(|s| s.contains("#define WITH_SIMD 1"))
                .unwrap_or(false)
        }
        None => false,
    };
    println!(
        "cargo:rustc-env=DICOFLOW_JPEG_SIMD={}",
        if simd { 1 } else { 0 }
    );
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !simd && matches!(arch.as_str(), "x86_64" | "x86") {
        let where_ = config
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "no jconfig.h found".into());
        println!(
            "cargo:warning=libjpeg-turbo was built without its SIMD kernels (nasm was not on PATH \
             when mozjpeg-sys was built; {where_}): same pixels, JPEG decoding about 2x slower. \
             Fix: `make nasm` (or install nasm), then `cargo clean -p mozjpeg-sys` and build again \
             (the Makefile's targets do both)."
        );
    }
}
