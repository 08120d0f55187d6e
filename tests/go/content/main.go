// Drives berthd's content store and namespaces with containerd's own Go client, checking the
// semantics containerd's client and its content test suite rely on (issue 15, defect 12):
// (a) an ingest's Status.UpdatedAt is the time of its last write, inside the Write call;
// (b) Abort removes an ingest even while a writer holds its ref, and a new writer starts over;
// (c) labelling a namespace that does not exist yet creates it.
// Prints one line per check; the Rust test (tests/tests/content_faults.rs) asserts on them.
//
// Built offline in GOPATH mode against Debian's golang-github-containerd-containerd-dev.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/namespaces"
)

func fail(what string, err error) {
	fmt.Printf("%s: error: %v\n", what, err)
	os.Exit(1)
}

func main() {
	sock := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := containerd.New(sock, containerd.WithTimeout(10*time.Second))
	if err != nil {
		fail("containerd.New", err)
	}
	defer client.Close()

	// (c) SetLabel on a namespace nobody created: containerd's client harness does this (from a
	// context that names some namespace: containerd publishes the update event in it).
	ctx = namespaces.WithNamespace(ctx, "default")
	if err := client.NamespaceService().SetLabel(ctx, "go-fresh", "made-by", "setlabel"); err != nil {
		fail("SetLabel", err)
	}
	labels, err := client.NamespaceService().Labels(ctx, "go-fresh")
	if err != nil {
		fail("Labels", err)
	}
	fmt.Printf("namespace go-fresh made-by=%s\n", labels["made-by"])

	ctx = namespaces.WithNamespace(ctx, "go-fresh")
	cs := client.ContentStore()

	// (a) UpdatedAt lies within the Write call that made it.
	w, err := content.OpenWriter(ctx, cs, content.WithRef("go-updated"))
	if err != nil {
		fail("OpenWriter", err)
	}
	time.Sleep(50 * time.Millisecond)
	before := time.Now()
	if _, err := w.Write([]byte("some bytes")); err != nil {
		fail("Write", err)
	}
	after := time.Now()
	st, err := w.Status()
	if err != nil {
		fail("writer Status", err)
	}
	within := !st.UpdatedAt.Before(before.Add(-time.Millisecond)) && !st.UpdatedAt.After(after.Add(time.Millisecond))
	fmt.Printf("updated_at within write %v\n", within)
	w.Close()
	st, err = cs.Status(ctx, "go-updated")
	if err != nil {
		fail("store Status", err)
	}
	fmt.Printf("status after close offset %d\n", st.Offset)

	// (b) Abort while a writer still holds the ref.
	held, err := content.OpenWriter(ctx, cs, content.WithRef("go-held"))
	if err != nil {
		fail("OpenWriter held", err)
	}
	if _, err := held.Write([]byte("half")); err != nil {
		fail("Write held", err)
	}
	if err := cs.Abort(ctx, "go-held"); err != nil {
		fail("Abort while held", err)
	}
	if _, err := cs.Status(ctx, "go-held"); err == nil {
		fmt.Println("status after abort: still there")
	} else {
		fmt.Println("status after abort: gone")
	}
	held.Close()
	again, err := content.OpenWriter(ctx, cs, content.WithRef("go-held"))
	if err != nil {
		fail("OpenWriter again", err)
	}
	st, err = again.Status()
	if err != nil {
		fail("Status again", err)
	}
	fmt.Printf("new writer starts at %d\n", st.Offset)
	again.Close()
}
