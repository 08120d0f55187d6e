//! Issue 12: the floor `run-bench` measures under every daemon's figure — `ctr run --rm` against
//! a server replaying berthd's recorded answers (`berth_tests::replay`) — is only honest if the
//! replayed run is the recorded one. This test records a real run on berthd, replays it twice and
//! compares the calls answered with the recorded ones.

use std::path::Path;

use berth_tests::replay::{self, Call, Recording};
use berth_tests::{fixtures, ok, require_program, require_root, run_client, Berthd};

fn ctr_run(socket: &Path, image: &str, id: &str) {
    replay::ctr_run_true(&require_program("ctr", "containerd"), socket, image, id);
}

/// The methods called, sorted: the Wait that ctr sends from another goroutine may come before
/// or after Start.
fn methods(recording: &Recording) -> Vec<String> {
    let mut m: Vec<String> = recording.calls.iter().map(|c| c.method.clone()).collect();
    m.sort();
    m
}

#[test]
fn a_replayed_ctr_run_makes_the_recorded_calls_and_gets_the_recorded_answers() {
    require_root("running containers");
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:rp");
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));

    let recorded = replay::record(&berthd.socket(), &dir.path().join("proxy.sock"), |s| {
        ctr_run(s, &img.name, "rp-recorded")
    });
    let tasks_create = "/containerd.services.tasks.v1.Tasks/Create";
    assert!(
        recorded.calls.iter().any(|c| c.method == tasks_create),
        "the recording holds no task creation: {:?}",
        methods(&recorded)
    );
    let replay_socket = dir.path().join("replay.sock");
    let replayer = replay::Replayer::start(&replay_socket, &recorded, &dir.path().join("rootfs"));

    // Twice, under another id the second time: the replayer follows each client (process)
    // separately, and answers a container id it never saw with the recorded run's answers.
    for id in ["rp-recorded", "rp-other"] {
        let before = replayer.served().len();
        ctr_run(&replay_socket, &img.name, id);
        let served: Vec<Call> = replayer.served()[before..]
            .iter()
            .map(|(_, call)| call.clone())
            .collect();
        let replayed = Recording { calls: served };
        assert_eq!(
            methods(&replayed),
            methods(&recorded),
            "calls of the replay as {id}"
        );
        // Tasks.Get finds the task before Delete and gets NotFound after it, as recorded.
        let gets: Vec<bool> = replayed
            .calls
            .iter()
            .filter(|c| c.method.ends_with("Tasks/Get"))
            .map(|c| c.answer.is_ok())
            .collect();
        assert_eq!(gets, [true, false, false], "Tasks.Get answers as {id}");
    }

    // Several at once, as run-bench's 10 at once: each client's snapshot gets its own writable
    // directories (overlayfs remakes its work directory at every mount).
    let at_once: Vec<_> = (0..4)
        .map(|i| {
            let (socket, image) = (replay_socket.clone(), img.name.clone());
            std::thread::spawn(move || ctr_run(&socket, &image, &format!("rp-at-once-{i}")))
        })
        .collect();
    for run in at_once {
        run.join().expect("a replayed run at once failed");
    }

    // A call that was never recorded is Unimplemented, not some other method's answer.
    let out = run_client(
        &require_program("ctr", "containerd"),
        &replay_socket,
        &["version"],
    );
    assert!(
        !out.status.success(),
        "ctr version answered from a recording without Version"
    );
    let (_, last) = replayer.served().pop().expect("a call");
    assert_eq!(
        last.method,
        "/containerd.services.version.v1.Version/Version"
    );
    assert!(
        matches!(last.answer, Err((tonic::Code::Unimplemented, _))),
        "{:?}",
        last.answer
    );
    drop(replayer);
    // The recorded run cleaned up after itself on berthd.
    let listed = ok(&berthd.ctr(&["containers", "ls", "-q"]));
    assert!(listed.trim().is_empty(), "left: {listed}");
}
