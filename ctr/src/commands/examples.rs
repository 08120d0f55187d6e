//! The examples `--help` prints after the options: the commands an admin reaches for first, in
//! the order they usually come. Upper-case words (IMAGE, CMD, KEY) are placeholders.

pub(crate) const BCTR: &str = "\
Examples:
  bctr images import busybox.tar                 # load an OCI or docker-save archive
  bctr images pull 127.0.0.1:5000/library/busybox:latest
  bctr run --rm -t docker.io/library/busybox:latest demo sh
  bctr tasks ls                                  # what is running
  bctr --namespace k8s.io containers ls          # another client's namespace
  bctr images ls --format json                   # any listing as JSON
  bctr completion bash > /etc/bash_completion.d/bctr

The daemon socket is --address, else $BERTH_ADDRESS, else $CONTAINERD_ADDRESS, else
/run/berth/berthd.sock; bctr speaks only containerd's API, so it drives containerd too.";

pub(crate) const RUN: &str = "\
Examples:
  bctr run --rm docker.io/library/busybox:latest c1 echo hello
  bctr run --rm -t docker.io/library/busybox:latest c1 sh     # interactive, with a pty
  bctr run -d docker.io/library/busybox:latest web sleep 600   # detached; see `bctr tasks ls`
  bctr run --rm --memory-limit 67108864 --cpus 0.5 --pids-limit 64 IMAGE c2 CMD
  bctr run --rm --mount type=bind,src=/srv,dst=/srv,options=rbind:ro IMAGE c3 ls /srv
  bctr run --rm --seccomp IMAGE c4 true                        # the default seccomp profile

An image that is not there yet is pulled first (through the daemon, with progress).";

pub(crate) const IMPORT: &str = "\
Examples:
  bctr images import busybox.tar
  docker save busybox | bctr images import -                  # from stdin
  bctr images import --base-name example.org/app app.tar       # only images named example.org/app*
  bctr images import --all-platforms --no-unpack multi.tar
  bctr images import --snapshotter native busybox.tar";

pub(crate) const EXPORT: &str = "\
Examples:
  bctr images export busybox.tar docker.io/library/busybox:latest
  bctr images export - busybox:latest | ssh other bctr images import -
  bctr images export --all-platforms all.tar IMAGE";

pub(crate) const EXEC: &str = "\
Examples:
  bctr tasks exec --exec-id sh1 -t web sh                      # a shell in a running container
  bctr tasks exec --exec-id ls1 web ls /";

pub(crate) const SNAPSHOTS: &str = "\
Examples:
  bctr snapshots ls
  bctr snapshots --snapshotter btrfs ls
  bctr snapshots tree
  bctr snapshots mounts /mnt KEY | sh                          # mount a snapshot by hand";
