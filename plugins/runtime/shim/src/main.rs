//! `containerd-shim-berth-v1`: Berth's shim v2 binary. containerd (or berthd) runs
//! `<shim> … start` once per container; that prints the address of a server this binary starts
//! as a copy of itself, which then creates the container itself (no runc), reaps it and serves
//! containerd's task API until the container is deleted. `<shim> … delete` cleans up after a
//! server that died.

mod args;
mod cgroup;
mod error;
mod hooks;
mod initpid;
mod io;
mod log;
mod manager;
mod publish;
mod service;
mod spec;
mod task;

use std::process::ExitCode;

use args::{Action, Args};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            return ExitCode::from(2);
        }
    };
    let action = match args.action() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        Action::Version => {
            println!(
                "containerd-shim-berth-v1:\n  Version: {}",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Action::Start => manager::start(&args),
        Action::Delete => manager::delete(&args),
        // Started with no action, as `start` itself once did: the listener is fd 3.
        // SAFETY: by that convention fd 3 is a listening socket handed to this process, and
        // nothing else in it uses the descriptor.
        Action::Serve => manager::serve(&args, unsafe { std::os::fd::FromRawFd::from_raw_fd(3) }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-berth-v1: {e}");
            ExitCode::FAILURE
        }
    }
}
