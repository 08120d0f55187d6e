// Drives berthd with containerd's own Go client (what dockerd, nerdctl, k3s and buildkit link)
// and with a Go program that dials the socket path itself, so grpc-go sends that path as the
// HTTP/2 :authority. Prints one line per check; the Rust test asserts on them.
//
// Built offline in GOPATH mode against Debian's golang-github-containerd-containerd-dev.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func fail(what string, err error) {
	fmt.Printf("%s: error: %v\n", what, err)
	os.Exit(1)
}

func main() {
	sock := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// containerd's client: New waits for the daemon, IsServing asks the health service.
	client, err := containerd.New(sock, containerd.WithTimeout(10*time.Second))
	if err != nil {
		fail("containerd.New", err)
	}
	defer client.Close()
	serving, err := client.IsServing(ctx)
	if err != nil {
		fail("IsServing", err)
	}
	fmt.Printf("client IsServing %v\n", serving)
	v, err := client.Version(ctx)
	if err != nil {
		fail("Version", err)
	}
	fmt.Printf("client Version %s\n", v.Version)
	nctx := namespaces.WithNamespace(ctx, "go-client")
	if err := client.NamespaceService().Create(nctx, "go-client", map[string]string{"from": "go"}); err != nil {
		fail("NamespaceService.Create", err)
	}
	labels, err := client.NamespaceService().Labels(nctx, "go-client")
	if err != nil {
		fail("NamespaceService.Labels", err)
	}
	fmt.Printf("client namespace label from=%s\n", labels["from"])

	// A program that dials the path itself: grpc-go's passthrough resolver makes the target,
	// the raw socket path, the :authority.
	conn, err := grpc.DialContext(ctx, sock,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}))
	if err != nil {
		fail("grpc.Dial", err)
	}
	defer conn.Close()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fail("raw-path Health.Check", err)
	}
	fmt.Printf("raw-path Health %s\n", h.Status)
}
