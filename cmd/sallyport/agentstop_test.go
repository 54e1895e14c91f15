package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/internal/selfsigned"
	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// enrollingAgentYAML writes the config of an agent with a token and no
// certificate yet that enrolls at gateway, trusting caFile ("" → none).
func enrollingAgentYAML(t *testing.T, dir, gateway, caFile, dataDir string) string {
	t.Helper()
	p := filepath.Join(dir, "agent.yaml")
	ca := ""
	if caFile != "" {
		ca = fmt.Sprintf("gateway_ca_file: %s\n", caFile)
	}
	writeFile(t, p, fmt.Sprintf("gateway: %s\n%stoken: \"tok-agentstop-never-log-me\"\ndata_dir: %s\nconnections: 1\nallow: [\"127.0.0.1:9\"]\n",
		gateway, ca, dataDir))
	return p
}

// gatewayTunnelWithoutEnrollment serves gRPC over TLS on loopback with no
// service at all, as a gateway from before connector enrollment answers
// Enroll ("unknown service"); it returns the address and the PEM file of
// its self-signed certificate.
func gatewayTunnelWithoutEnrollment(t *testing.T) (addr, caFile string) {
	t.Helper()
	return gatewayTunnel(t, nil)
}

// refusingEnrollment answers every enrollment as a gateway answers an
// unknown token.
type refusingEnrollment struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
}

func (refusingEnrollment) Enroll(context.Context, *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	return nil, status.Error(codes.Unauthenticated, "enrollment token unknown")
}

// gatewayTunnel serves gRPC over TLS on loopback with the enrollment
// service svc (nil → none); it returns the address and the PEM file of
// its self-signed certificate.
func gatewayTunnel(t *testing.T, svc tunnelv1.EnrollmentServiceServer) (addr, caFile string) {
	t.Helper()
	cert, caFile, _, err := selfsigned.LoadOrCreate(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	done := make(chan struct{})
	if svc != nil {
		tunnelv1.RegisterEnrollmentServiceServer(srv, svc)
	}
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String(), caFile
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestBinaryAgentStopsBeforeEnrolling: an agent with `token:` that cannot
// enroll yet (the gateway unreachable, or a gateway without enrollment)
// stops gracefully on one SIGTERM, as an enrolled agent does: exit status
// 0 and a WARN line that it stopped before it could enroll, with the last
// enrollment error and that the token was not spent. Before the fix it
// exited 1 with "sallyport: agent: enrollment interrupted: ...", which
// marks a systemd unit failed on `systemctl stop`.
func TestBinaryAgentStopsBeforeEnrolling(t *testing.T) {
	shortskip.Long(t, "builds and runs the binary")
	for _, tc := range []struct {
		name    string
		gateway func(t *testing.T) (addr, caFile string)
		waitFor string // the log line of a failed attempt
		errText string // in the stop line's error
	}{
		{"unreachable", func(t *testing.T) (string, string) { return closedPort(t), "" },
			"cannot enroll yet", "cannot reach the gateway"},
		{"no enrollment service", gatewayTunnelWithoutEnrollment,
			"the gateway does not support enrollment", "the gateway does not support enrollment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr, caFile := tc.gateway(t)
			ag := startProc(t, "agent", "--config", enrollingAgentYAML(t, dir, addr, caFile, filepath.Join(dir, "data")))
			ag.waitLog(tc.waitFor)
			if code := ag.stop(); code != 0 {
				t.Fatalf("exit status after one SIGTERM while waiting to enroll = %d, want 0\n%s", code, ag.output())
			}
			line := ag.waitLog("agent stopped before it could enroll")
			if line["level"] != "warn" {
				t.Errorf("stop line at level %v, want warn: %v", line["level"], line)
			}
			if msg, _ := line["msg"].(string); !strings.Contains(msg, "the token was not spent") {
				t.Errorf("stop line %q does not say that the token was not spent", msg)
			}
			if e, _ := line["error"].(string); !strings.Contains(e, tc.errText) {
				t.Errorf("stop line's error %q, want the last enrollment error (%q)", e, tc.errText)
			}
			out := ag.output()
			if strings.Contains(out, "sallyport: ") || strings.Contains(out, "tok-agentstop-never-log-me") {
				t.Errorf("a stop printed an error, or the token:\n%s", out)
			}
		})
	}
}

// TestBinaryAgentEnrollFailureExits1: an enrollment failure that ends the
// agent without a stop is still one: a refused token exits 1 by itself,
// saying so.
func TestBinaryAgentEnrollFailureExits1(t *testing.T) {
	shortskip.Long(t, "builds and runs the binary")
	dir := t.TempDir()
	addr, caFile := gatewayTunnel(t, refusingEnrollment{})
	ag := startProc(t, "agent", "--config", enrollingAgentYAML(t, dir, addr, caFile, filepath.Join(dir, "data")))
	if code := ag.wait(); code != 1 || !strings.Contains(ag.output(), "enrollment token unknown") {
		t.Fatalf("agent with a refused token: exit status %d, want 1 and the refusal\n%s", code, ag.output())
	}
}
