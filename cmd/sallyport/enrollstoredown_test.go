//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// storeDownEnroll answers every enrollment as a gateway does whose
// database does not answer.
type storeDownEnroll struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
}

func (storeDownEnroll) Enroll(context.Context, *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	return nil, status.Error(codes.Unavailable, tunnel.StoreDownText+"; the token was not spent; try again")
}

// TestEnrollStoreDownAdvice: `agent enroll` at a gateway whose database
// does not answer says that, that the token was not spent, and to run it
// again once the database answers; not to check --gateway, whether the
// gateway runs, or the network, which all worked. It said "cannot reach
// the gateway: the gateway's database does not answer; the token was not
// spent; try again; check --gateway (the gateway's host and the port of
// its tunnel.addr), that the gateway runs, and that this machine can
// reach it …".
func TestEnrollStoreDownAdvice(t *testing.T) {
	dir := t.TempDir()
	cert, _, _, err := selfsigned.LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	tunnelv1.RegisterEnrollmentServiceServer(srv, storeDownEnroll{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	_, err = runCLI(t, "agent", "enroll", "--gateway", ln.Addr().String(), "--data-dir", filepath.Join(t.TempDir(), "agent"),
		"--token", "spt_some", "--gateway-ca", filepath.Join(dir, "tunnel-cert.pem"))
	if err == nil {
		t.Fatal("enrolled at a gateway whose database does not answer")
	}
	msg := err.Error()
	for _, w := range []string{"database does not answer", "the token was not spent", "run this command again"} {
		if !strings.Contains(msg, w) {
			t.Errorf("enroll, the gateway's database down: %v\nwant %q in it", err, w)
		}
	}
	for _, bad := range []string{"cannot reach", "check --gateway", "can reach it"} {
		if strings.Contains(msg, bad) {
			t.Errorf("enroll, the gateway's database down: %v\nthe gateway was reached: %q misleads", err, bad)
		}
	}
}
