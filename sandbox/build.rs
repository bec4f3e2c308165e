//! Builds Ember's init (`init/ember_init.rs`) into `$OUT_DIR/ember-init`, which the
//! sandbox embeds: no standard library and no libc, linked statically, so that it
//! runs in any image and costs a cold start next to nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/ember_init.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    assert!(
        ["x86_64", "aarch64"]
            .iter()
            .any(|arch| target.starts_with(arch))
            && target.contains("-linux-"),
        "Ember's init is written for x86_64 and aarch64 Linux, not {target}"
    );
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-name",
            "ember_init",
            "--crate-type",
            "bin",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .arg("-o")
        .arg(out.join("ember-init"))
        .arg(source)
        .output()
        .expect("running rustc for the init");
    assert!(
        output.status.success(),
        "building Ember's init ({source}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
