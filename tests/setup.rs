//! `scripts/setup.sh` itself, run where a fresh machine of this kind stands:
//! only `libclang-cpp` (the C++ interface) present, no `libclang.so*` that
//! bindgen can load. A mount namespace (`unshare -m`) lays an overlay over
//! each library folder and removes every libclang but the C++ one; an
//! `apt-get` shim first on `PATH` records what it was asked to do.
//!
//! Needs root (mount namespaces); CI runs as root. Without root the tests
//! say so and pass, as they cannot set up the machine they describe.

use std::path::Path;
use std::process::Command;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs `setup.sh` in a mount namespace; with `hide`, every libclang other
/// than libclang-cpp is removed from the library folders there first.
/// Returns what the `apt-get` shim was asked, one call a line, and the
/// script's exit status.
fn run_setup(hide: bool) -> (String, bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("bin");
    std::fs::create_dir(&shim).unwrap();
    let log = dir.path().join("apt.log");
    let apt = shim.join("apt-get");
    std::fs::write(&apt, format!("#!/bin/sh\necho \"$*\" >> {}\nexit 0\n", log.display())).unwrap();
    std::fs::set_permissions(&apt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
    let work = dir.path().join("ov");
    let script = format!(
        r#"set -eu
hide={hide}
if [ "$hide" = true ]; then
    mount -t tmpfs tmpfs {work}
    i=0
    # only the folders that hold a libclang (an overlay on a parent would
    # hide the overlays below it)
    for d in /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
        [ -d "$d" ] || continue
        i=$((i+1))
        mkdir -p {work}/u$i {work}/w$i
        mount -t overlay overlay -o "lowerdir=$d,upperdir={work}/u$i,workdir={work}/w$i" "$d"
        for f in "$d"/libclang*.so*; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            case "${{f##*/}}" in libclang-cpp*) ;; *) rm -f "$f" ;; esac
        done
    done
    # what a fresh machine has: the C++ interface only
    ls /usr/lib/llvm-*/lib/libclang-cpp.so* /usr/lib/x86_64-linux-gnu/libclang-cpp.so* >/dev/null 2>&1 \
        || {{ echo "no libclang-cpp to keep: this machine is not the kind the test describes" >&2; exit 3; }}
    if ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1; then
        echo "libclang still visible" >&2; exit 3
    fi
fi
unset LIBCLANG_PATH
PATH={shim}:$PATH bash {setup}
"#,
        work = work.display(),
        shim = shim.display(),
        setup = setup.display(),
    );
    std::fs::create_dir(&work).unwrap();
    let out = Command::new("unshare").args(["-m", "--propagation", "private", "bash", "-c", &script]).output().unwrap();
    let asked = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (asked, out.status.success(), stderr)
}

/// The bug: `libclang*.so*` matched `libclang-cpp.so.14`, so a fresh machine
/// skipped the install and the RocksDB build failed in bindgen.
#[test]
fn setup_installs_libclang_where_only_libclang_cpp_is_present() {
    if !is_root() {
        eprintln!("skipped: a mount namespace needs root (CI runs as root)");
        return;
    }
    let (asked, ok, stderr) = run_setup(true);
    assert!(ok, "setup.sh failed: {stderr}");
    assert!(
        asked.lines().any(|l| l.split_whitespace().any(|w| w == "install") && l.contains("libclang-dev")),
        "setup.sh did not install libclang-dev where only libclang-cpp is present; apt-get was asked: {asked:?}\n{stderr}"
    );
    assert!(asked.lines().next().is_some_and(|l| l.contains("update")), "apt-get update comes first: {asked:?}");
}

#[test]
fn setup_installs_nothing_where_libclang_is_present() {
    if !is_root() {
        eprintln!("skipped: a mount namespace needs root (CI runs as root)");
        return;
    }
    // This machine has libclang (setup.sh ran before the build); with
    // nothing hidden the script must leave apt-get alone.
    let (asked, ok, stderr) = run_setup(false);
    assert!(ok, "setup.sh failed: {stderr}");
    assert_eq!(asked, "", "setup.sh called apt-get although libclang is present");
}
