//! The `source-diff` binary linked at a fixed address (no PIE) on glibc Linux: a call is
//! mostly start-up, and a position-independent binary of this size spends it applying about
//! 50,000 relocations and copying the pages they write. The musl build is a static binary
//! already; the library is unaffected.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
