//! Links the `envelope-runner` command as a position-dependent executable in optimised builds.
//!
//! A position-independent build of this binary carries about 87,000 relative relocations
//! (vtables and static tables of the AWS SDKs, h2, SQLite), which the dynamic loader applies
//! to every page of `.data.rel.ro` at each start: about 1 ms and 400 page faults of a 4 ms
//! `validate`. Linked with `-no-pie` they are resolved at link time. The cost is that the
//! executable's own image loads at a fixed address (the stack, heap and shared libraries are
//! still randomised); `envelope-agent`, a long-running server, stays position-independent.
//! Debug builds are left alone. See scripts/bench-frontend for the measure.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux {
        println!("cargo:rustc-link-arg-bin=envelope-runner=-no-pie");
    }
}
