package main

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/shortskip"
	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestAgentAcceptsWhatTheConfigAccepts: every pattern form the config
// accepts in allow and backend_tls[].hosts starts an agent. Before the fix
// the agent refused CIDRs in backend_tls at start-up, without file or line,
// after the config had accepted them.
func TestAgentAcceptsWhatTheConfigAccepts(t *testing.T) {
	const yaml = `gateway: 127.0.0.1:8443
token: t
allow: ["app.corp:443", "*.corp:*", "10.0.0.5:8443", "[fd00::1]:443", "10.0.0.0/8", "10.0.0.0/8:443", "fd00::/8:443", "[fd00::/8]:443"]
backend_tls:
  - hosts: ["app.corp:443", "*.corp:*", "10.0.0.5:8443", "[fd00::1]:443", "10.0.0.0/8", "10.0.0.0/8:443", "fd00::/8:443", "[fd00::]/8:443"]
    insecure_skip_verify: true
`
	cfg, err := config.ParseAgent("agent.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	settings, err := agentConfig(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	settings.DataDir = t.TempDir()
	if _, err := agent.New(settings); err != nil {
		t.Fatalf("agent.New: %v", err)
	}
}

// heldEnrollment holds each enrollment request, after telling arrived,
// until release is closed, then answers with a connector certificate for
// the request's key from ca, as the gateway does; a cancelled request gets
// the context's status.
type heldEnrollment struct {
	tunnelv1.UnimplementedEnrollmentServiceServer
	ca      *pki.Authority
	arrived chan struct{}
	release chan struct{}
}

const heldConnectorID = "c-enrollstop"

func (h *heldEnrollment) Enroll(ctx context.Context, req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	h.arrived <- struct{}{}
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	csr, err := pki.CheckCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	issued, err := h.ca.Issue(ctx, csr, pki.Identity{ConnectorID: heldConnectorID, Group: "g"})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &tunnelv1.EnrollResponse{Certificate: issued.DER, CaBundle: issued.Bundle}, nil
}

// newTestCA is a connector CA in an in-memory store.
func newTestCA(t *testing.T) *pki.Authority {
	t.Helper()
	st, err := store.OpenMemory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca := &pki.Authority{Store: st}
	if _, err := ca.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestBinaryEnrollStopWaitsForAnswer: a SIGTERM (or Ctrl-C) that comes
// while `sallyport agent enroll` waits for the gateway's answer to its
// request does not cut the request: the gateway may be spending the
// single-use token, and its certificate would be lost. The command waits
// (up to 10 s) for the answer, saves the certificate and exits 0. Before,
// it exited 1 at once with "enroll at …: Canceled: context canceled", and
// a token the gateway spent had to be replaced.
func TestBinaryEnrollStopWaitsForAnswer(t *testing.T) {
	shortskip.Long(t, "builds and runs the binary")
	svc := &heldEnrollment{ca: newTestCA(t), arrived: make(chan struct{}, 1), release: make(chan struct{})}
	addr, caFile := gatewayTunnel(t, svc)
	dir := t.TempDir()
	tokFile, dataDir := filepath.Join(dir, "token"), filepath.Join(dir, "data")
	writeFile(t, tokFile, "tok-enrollstop-never-log-me\n")
	p := startProc(t, "agent", "enroll", "--gateway", addr, "--gateway-ca", caFile, "--token-file", tokFile, "--data-dir", dataDir)
	select {
	case <-svc.arrived:
	case <-p.done:
		t.Fatalf("enroll exited before its request reached the gateway:\n%s", p.output())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		shortskip.Unsupported(t, "no SIGTERM to a process here: "+err.Error())
	}
	p.waitLog("for the gateway's answer")
	close(svc.release)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit status %d after a stop the gateway's certificate answered, want 0:\n%s", code, p.output())
	}
	creds, err := agent.LoadCredentials(dataDir)
	if err != nil || creds.ConnectorID != heldConnectorID {
		t.Fatalf("credentials in --data-dir: %v, %v; want connector %s\n%s", creds, err, heldConnectorID, p.output())
	}
}
