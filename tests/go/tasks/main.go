// Runs a container on berthd through containerd's own Go client, the way dockerd, nerdctl and
// k3s do: a container with a new snapshot and a spec built from the image config, a task with
// its stdio, Start, Update of its memory limit (which ctr cannot ask for), an exec, the metrics showing the
// new limit, SIGKILL, Wait, Delete. Prints one line per step; the Rust test
// (tests/tests/tasks.rs) asserts on them.
//
// Built offline in GOPATH mode against Debian's golang-github-containerd-containerd-dev.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	v1 "github.com/containerd/cgroups/stats/v1"
	v2 "github.com/containerd/cgroups/v2/stats"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func fail(what string, err error) {
	fmt.Printf("%s: error: %v\n", what, err)
	os.Exit(1)
}

func main() {
	sock, imageName, id := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "default")

	client, err := containerd.New(sock, containerd.WithTimeout(10*time.Second))
	if err != nil {
		fail("containerd.New", err)
	}
	defer client.Close()
	image, err := client.GetImage(ctx, imageName)
	if err != nil {
		fail("GetImage", err)
	}
	container, err := client.NewContainer(ctx, id,
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id+"-rootfs", image),
		containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs("sleep", "60")),
	)
	if err != nil {
		fail("NewContainer", err)
	}
	task, err := container.NewTask(ctx, cio.NullIO)
	if err != nil {
		fail("NewTask", err)
	}
	fmt.Printf("task created %v\n", task.Pid() > 0)
	exited, err := task.Wait(ctx)
	if err != nil {
		fail("Wait", err)
	}
	if err := task.Start(ctx); err != nil {
		fail("Start", err)
	}
	fmt.Println("task started")

	limit := int64(64 << 20)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
	})); err != nil {
		fail("Update", err)
	}
	fmt.Println("task updated")

	spec, err := container.Spec(ctx)
	if err != nil {
		fail("Spec", err)
	}
	pspec := spec.Process
	pspec.Args = []string{"sh", "-c", "echo from-exec; exit 4"}
	// One buffer per stream: the client copies each FIFO in its own goroutine.
	var out, errOut bytes.Buffer
	proc, err := task.Exec(ctx, "read-limit", pspec, cio.NewCreator(cio.WithStreams(nil, &out, &errOut)))
	if err != nil {
		fail("Exec", err)
	}
	procExited, err := proc.Wait(ctx)
	if err != nil {
		fail("exec Wait", err)
	}
	if err := proc.Start(ctx); err != nil {
		fail("exec Start", err)
	}
	status := <-procExited
	if _, err := proc.Delete(ctx); err != nil {
		fail("exec Delete", err)
	}
	// Let the copy goroutines drain the FIFOs.
	time.Sleep(100 * time.Millisecond)
	fmt.Printf("exec exit %d out %s%s\n", status.ExitCode(), strings.TrimSpace(out.String()), strings.TrimSpace(errOut.String()))

	// The shim's cgroup metrics, decoded as ctr decodes them: the new limit is in force.
	metric, err := task.Metrics(ctx)
	if err != nil {
		fail("Metrics", err)
	}
	data, err := typeurl.UnmarshalAny(metric.Data)
	if err != nil {
		fail("decode metrics", err)
	}
	switch m := data.(type) {
	case *v1.Metrics:
		fmt.Printf("memory limit %d\n", m.Memory.Usage.Limit)
	case *v2.Metrics:
		fmt.Printf("memory limit %d\n", m.Memory.UsageLimit)
	default:
		fmt.Printf("metrics of type %T\n", data)
	}

	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		fail("Kill", err)
	}
	final := <-exited
	fmt.Printf("task exit %d\n", final.ExitCode())
	if _, err := task.Delete(ctx); err != nil {
		fail("task Delete", err)
	}
	if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		fail("container Delete", err)
	}
	fmt.Println("deleted")
}
