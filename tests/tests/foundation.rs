//! Issue 2, end to end: berthd driven by containerd's own `ctr` and by `bctr`, compared with a
//! real containerd where the outputs can be compared.

use std::io::Write;
use std::process::Command;

use berth_api::namespaces::{namespaces_client::NamespacesClient, GetNamespaceRequest};
use berth_api::tasks::{tasks_client::TasksClient, CheckpointTaskRequest};
use berth_api::version::version_client::VersionClient;
use berth_tests::{bin, fails, ok, require_root, Berthd, Containerd};

/// The label column of each line (`Version:`, `UUID:`…), which must be the same on both daemons.
fn shape(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split(':').next().unwrap_or("").trim().to_owned())
        .collect()
}

#[test]
fn ctr_namespaces_sequence_matches_containerd() {
    require_root("comparing ctr against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let steps: &[&[&str]] = &[
        &["namespaces", "create", "a"],
        &["namespaces", "label", "a", "k=v"],
        &["namespaces", "ls"],
        &["namespaces", "create", "a"],
        &["namespaces", "create", "bad/name"],
        &["namespaces", "create", "b", "x=1", "y=2"],
        &["namespaces", "label", "b", "x="],
        &["namespaces", "ls"],
        &["namespaces", "ls", "-q"],
        // Labelling a namespace that does not exist yet creates it (issue 15, 12c).
        &["namespaces", "label", "fresh", "k=v"],
        &["namespaces", "ls"],
        &["namespaces", "rm", "a", "b"],
        &["namespaces", "ls"],
    ];
    for step in steps {
        let ours = berthd.ctr(step);
        let theirs = containerd.ctr(step);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "exit code of ctr {step:?}\nberthd: {}\ncontainerd: {}",
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "stdout of ctr {step:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr),
            "stderr of ctr {step:?}"
        );
    }
}

#[test]
fn ctr_version_and_plugins_ls_have_containerds_shape() {
    require_root("comparing ctr against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();

    let ours = ok(&berthd.ctr(&["version"]));
    let theirs = ok(&containerd.ctr(&["version"]));
    assert_eq!(shape(&ours), shape(&theirs));
    assert!(
        ours.contains(&format!("  Version:  {}", env!("CARGO_PKG_VERSION"))),
        "{ours}"
    );

    let ours = ok(&berthd.ctr(&["plugins", "ls"]));
    let theirs = ok(&containerd.ctr(&["plugins", "ls"]));
    let header = |s: &str| {
        s.lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(header(&ours), header(&theirs));
    for line in ours.lines().skip(1) {
        let cols: Vec<_> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{line}");
        // As containerd's: btrfs and devmapper skip on a root that is not btrfs, a kernel without
        // device-mapper, or without a configured pool. Everything else is ready.
        let skips =
            cols[0] == "io.containerd.snapshotter.v1" && ["btrfs", "devmapper"].contains(&cols[1]);
        assert_eq!(cols[3], if skips { "skip" } else { "ok" }, "{line}");
    }
    for (ty, id) in [
        ("io.containerd.metadata.v1", "redb"),
        ("io.containerd.grpc.v1", "namespaces"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.grpc.v1", "version"),
    ] {
        assert!(
            ours.lines()
                .any(|l| l.split_whitespace().take(2).eq([ty, id])),
            "plugins ls lacks {ty} {id}:\n{ours}"
        );
    }

    // Filters go to the server and are applied there.
    let only = ok(&berthd.ctr(&["plugins", "ls", "id==version"]));
    assert_eq!(only.lines().count(), 2, "{only}");
    let detailed = ok(&berthd.ctr(&["plugins", "ls", "-d", "type==io.containerd.metadata.v1"]));
    assert!(detailed.contains("meta.redb"), "{detailed}");
}

#[test]
fn bctr_matches_ctr_on_berthd_and_works_against_containerd() {
    require_root("comparing bctr against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    for target in [berthd.socket(), containerd.socket()] {
        let run = |args: &[&str]| berth_tests::run_client(&bin("bctr"), &target, args);
        ok(&run(&["namespaces", "create", "a"]));
        ok(&run(&["namespaces", "label", "a", "k=v"]));
        assert_eq!(
            ok(&run(&["namespaces", "ls"])),
            "NAME LABELS \na    k=v    \n"
        );
        let err = fails(&run(&["namespaces", "create", "a"]));
        assert_eq!(err, "bctr: namespace \"a\": already exists\n");
        assert_eq!(ok(&run(&["namespaces", "rm", "a"])), "a\n");
        assert_eq!(ok(&run(&["ns", "ls", "-q"])), "");
        let plugins = ok(&run(&["plugins", "ls"]));
        assert!(plugins.starts_with("TYPE "), "{plugins}");
        assert!(plugins.contains("io.containerd.grpc.v1"), "{plugins}");
        let version = ok(&run(&["version"]));
        assert!(
            version.contains("Server:") && version.contains("UUID: "),
            "{version}"
        );
    }
    // bctr's table is ctr's table, byte for byte.
    ok(&berthd.ctr(&["ns", "create", "z", "a=b"]));
    assert_eq!(
        ok(&berthd.bctr(&["ns", "ls"])),
        ok(&berthd.ctr(&["ns", "ls"]))
    );
    assert_eq!(
        ok(&berthd.bctr(&["plugins", "ls"])),
        ok(&berthd.ctr(&["plugins", "ls"]))
    );
}

#[test]
fn bctr_without_daemon_says_which_socket_and_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = berth_tests::run_client(&bin("bctr"), &sock, &["version"]);
    let err = fails(&out);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("berthd --address"), "{err}");
}

#[test]
fn bctr_completion_scripts_need_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for (shell, marks) in [
        ("bash", ["_bctr()", "complete -F _bctr"]),
        ("zsh", ["#compdef bctr", "'images:Manage images'"]),
        ("fish", ["complete -c bctr", "images"]),
    ] {
        let out = berth_tests::run_client(&bin("bctr"), &sock, &["completion", shell]);
        let script = ok(&out);
        for mark in marks {
            assert!(script.contains(mark), "{shell}: no {mark:?} in:\n{script}");
        }
        // Every subcommand is offered, down to the transfer ones.
        for sub in ["pull", "push", "tag", "snapshots", "tasks"] {
            assert!(script.contains(sub), "{shell}: no {sub:?}");
        }
    }
    let bad = berth_tests::run_client(&bin("bctr"), &sock, &["completion", "tcsh"]);
    assert!(fails(&bad).contains("tcsh"));
}

#[test]
fn second_daemon_on_the_same_socket_refuses_to_start() {
    let berthd = Berthd::start();
    let out = berthd.command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another daemon is already serving {}",
            berthd.socket().display()
        )),
        "{err}"
    );
    // The first one is unharmed.
    ok(&berthd.bctr(&["version"]));
}

#[test]
fn second_daemon_on_the_same_root_refuses_to_start() {
    // Issue 15, defect 10: with another socket it used to start and serve broken stores.
    let berthd = Berthd::start();
    let pid = berthd.child.as_ref().unwrap().id();
    let other = berthd.dir.path().join("other.sock");
    let out = Command::new(bin("berthd"))
        .arg("--root")
        .arg(berthd.root())
        .arg("--state")
        .arg(berthd.dir.path().join("other-state"))
        .arg("--address")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "root {} is in use by another berthd (pid {pid})",
            berthd.root().display()
        )),
        "{err}"
    );
    assert!(!other.exists(), "the refused daemon left its socket");
    ok(&berthd.bctr(&["version"]));
}

#[test]
fn root_is_private_and_state_traversable() {
    // Issue 15, defect 6: any local user could read every namespace's layers.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("berthd.sock");
    let log = dir.path().join("log");
    let mut child = Command::new(bin("berthd"))
        .args(["--root", &root.display().to_string()])
        .args(["--state", &state.display().to_string()])
        .args(["--address", &sock.display().to_string()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    berth_tests::wait_for_socket(&sock, &mut child, &log);
    // The socket is claimed before the plugins start: wait until berthd says it serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("serving")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "berthd did not start serving"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&root), 0o700, "an existing open root is tightened");
    assert_eq!(mode(&state), 0o711);
    let meta = root.join("io.containerd.metadata.v1.redb");
    assert!(meta.is_dir(), "plugins live under the root");
    berth_tests::terminate(&mut child);
}

#[test]
fn stale_socket_is_replaced_and_sigterm_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("berthd.sock");
    // A socket file nobody listens on, as a crashed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut child = Command::new(bin("berthd"))
        .args(["--root", &dir.path().join("root").display().to_string()])
        .args(["--state", &dir.path().join("state").display().to_string()])
        .args(["--address", &sock.display().to_string()])
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    berth_tests::wait_for_socket(&sock, &mut child, &dir.path().join("log"));
    let status = berth_tests::terminate(&mut child);
    assert!(status.success(), "berthd exit after SIGTERM: {status}");
    assert!(!sock.exists(), "socket left behind after graceful shutdown");
}

#[test]
fn socket_is_0660() {
    use std::os::unix::fs::PermissionsExt;
    let berthd = Berthd::start();
    let mode = std::fs::metadata(berthd.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
}

#[test]
fn malformed_config_names_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(f, "version = 2\n[grpc]\n  adress = \"/tmp/x.sock\"").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("adress"), "{err}");

    std::fs::write(&cfg, "version = 2\nroot = [1\n").unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn config_default_prints_a_config_berthd_accepts() {
    let out = Command::new(bin("berthd"))
        .args(["config", "default"])
        .output()
        .unwrap();
    let text = ok(&out);
    for want in [
        "version = 2",
        "root = \"/var/lib/berth\"",
        "state = \"/run/berth\"",
        "address = \"/run/berth/berthd.sock\"",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = Command::new(bin("berthd"))
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), text);
}

#[test]
fn disabled_plugins_are_absent_and_their_rpcs_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.version\"]\n",
    )
    .unwrap();
    let berthd = Berthd::start_with(&["--config", &cfg.display().to_string()]);
    let plugins = ok(&berthd.bctr(&["plugins", "ls"]));
    assert!(!plugins.contains("version"), "{plugins}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let err = VersionClient::new(berthd.channel().await)
            .version(())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    });
}

#[test]
fn unknown_and_not_yet_implemented_rpcs_are_unimplemented() {
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = berthd.channel().await;
        // An RPC Berth does not implement (documented in docs/compatibility.md).
        let err = TasksClient::new(ch.clone())
            .checkpoint(bctr::client::request(
                "default",
                CheckpointTaskRequest::default(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        // containerd 2.x's Transfer service: a source/destination pair it does not move images
        // between answers Unimplemented with containerd's text (docs/compatibility.md).
        let any = |name: &str| prost_types::Any {
            type_url: format!("type.googleapis.com/containerd.types.transfer.{name}"),
            value: Vec::new(),
        };
        let err = berth_api::transfer::transfer_client::TransferClient::new(ch.clone())
            .transfer(bctr::client::request(
                "default",
                berth_api::transfer::TransferRequest {
                    source: Some(any("ImageImportStream")),
                    destination: Some(any("ImageExportStream")),
                    options: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        assert!(
            err.message()
                .contains("method Transfer not implemented for type.googleapis.com/containerd.types.transfer.ImageImportStream to type.googleapis.com/containerd.types.transfer.ImageExportStream"),
            "{err:?}"
        );
        // A method no service has.
        let mut grpc = tonic::client::Grpc::new(ch);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/containerd.services.nothing.v1.Nothing/Do",
        );
        let err = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    });
}

#[test]
fn namespaces_and_server_uuid_survive_a_restart() {
    let mut berthd = Berthd::start();
    ok(&berthd.bctr(&["ns", "create", "keep", "a=1"]));
    let uuid = |d: &Berthd| {
        ok(&d.bctr(&["version"]))
            .lines()
            .find_map(|l| l.trim().strip_prefix("UUID: ").map(str::to_owned))
            .expect("UUID line")
    };
    let before = uuid(&berthd);
    berthd.restart();
    assert_eq!(uuid(&berthd), before);
    assert_eq!(
        ok(&berthd.bctr(&["ns", "ls"])),
        "NAME LABELS \nkeep a=1    \n"
    );
}

#[test]
fn namespace_get_of_missing_is_not_found_and_bad_requests_are_invalid() {
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = NamespacesClient::new(berthd.channel().await);
        let err = c
            .get(GetNamespaceRequest {
                name: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "namespace \"nope\": not found");
        let err = c
            .create(berth_api::namespaces::CreateNamespaceRequest { namespace: None })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = c
            .list(berth_api::namespaces::ListNamespacesRequest {
                filter: "name==".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    });
}

#[test]
fn logs_can_be_json() {
    let berthd = Berthd::start_with(&["--log-format", "json"]);
    ok(&berthd.bctr(&["version"]));
    let log = berthd.log();
    let first = log.lines().next().expect("a log line");
    assert!(
        first.starts_with('{') && first.contains("\"level\""),
        "{first}"
    );
}
