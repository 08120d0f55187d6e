//! The shim is linked as a position-dependent executable, as containerd's Go shims are: a PIE
//! carries ~15,000 relative relocations the dynamic loader applies (and so dirties ~70 pages) every
//! time a shim starts, once per container.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
