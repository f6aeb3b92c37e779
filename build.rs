//! Generates the DPDK bindings: pkg-config finds `libdpdk`, bindgen writes the Rust
//! declarations to `OUT_DIR/dpdk_bindings.rs`, and cc compiles the C wrappers for DPDK's
//! static-inline fast-path functions (bindgen's `wrap_static_fns`) plus `src/dpdk/shim.c`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/dpdk/shim.h");
    println!("cargo:rerun-if-changed=src/dpdk/shim.c");
    println!("cargo:rerun-if-changed=build.rs");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "error: DPDK (pkg-config libdpdk >= 22.11) not found: {e}\n\
                 fix: run `sudo scripts/setup-host.sh` (installs libdpdk-dev, pkg-config, clang)"
            );
            std::process::exit(1);
        }
    };

    // pkg-config's cflags carry `-include rte_config.h -march=corei7` besides -I paths;
    // bindgen (clang) and cc must see the same ones.
    let mut clang_args: Vec<String> = dpdk
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    let extra = cflags_from_pkg_config();
    clang_args.extend(extra.iter().cloned());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let header = manifest.join("src/dpdk/shim.h");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let wrappers_c = out.join("dpdk_static_wrappers");

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_args(&clang_args)
        .allowlist_function("rte_.*")
        .allowlist_function("kubypass_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("rte_.*")
        // Packed-with-aligned types bindgen cannot lay out; kubypass never touches them.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers_c)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen failed on DPDK headers: {e}");
            std::process::exit(1);
        });
    bindings
        .write_to_file(out.join("dpdk_bindings.rs"))
        .expect("write dpdk_bindings.rs to OUT_DIR");

    let mut build = cc::Build::new();
    build
        .file(wrappers_c.with_extension("c"))
        .file("src/dpdk/shim.c")
        .include(manifest.join("src/dpdk"))
        .includes(&dpdk.include_paths)
        .warnings(false)
        .opt_level(3);
    for flag in &extra {
        build.flag(flag);
    }
    build.compile("kubypass_dpdk_shim");

    println!("cargo:rustc-env=KUBYPASS_DPDK_PMD_DIR={}", pmd_dir());
}

/// Where this DPDK keeps its PMD plugins: pkg-config's `pmdsdir`, or else
/// `<libdir>/dpdk/pmds-*` (Debian's packages leave `pmdsdir` empty). Empty if none found.
fn pmd_dir() -> String {
    if let Ok(dir) = pkg_config::get_variable("libdpdk", "pmdsdir") {
        if !dir.trim().is_empty() {
            return dir.trim().to_owned();
        }
    }
    let Ok(libdir) = pkg_config::get_variable("libdpdk", "libdir") else {
        return String::new();
    };
    let base = PathBuf::from(libdir.trim()).join("dpdk");
    let Ok(entries) = std::fs::read_dir(&base) else {
        return String::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pmds-"))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The non `-I` cflags pkg-config reports for libdpdk (`-include rte_config.h`,
/// `-march=...`), split into single arguments.
fn cflags_from_pkg_config() -> Vec<String> {
    let output = std::process::Command::new("pkg-config")
        .args(["--cflags-only-other", "libdpdk"])
        .output()
        .expect("run pkg-config");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace().map(str::to_owned).collect()
}
