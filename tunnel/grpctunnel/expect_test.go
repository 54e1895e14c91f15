package grpctunnel_test

import (
	"context"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// TestProtocolVersion: the session's protocol version is the lower of the
// agent's (its hello) and the gateway's, so either side may be the older
// one.
func TestProtocolVersion(t *testing.T) {
	for _, tc := range tunneltest.VersionCases {
		t.Run(tc.Name, func(t *testing.T) {
			ts := startServer(t, func(s *grpctunnel.Server) { s.ProtocolVersion = tc.Gateway })
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			cs, err := grpctunnel.Dial(ctx, grpctunnel.DialConfig{
				Addr: ts.addr, TLS: ts.tls, Token: goodToken, MinIdle: 1,
				Hello: &tunnelv1.Hello{Name: "test-agent", ProtocolVersion: tc.Agent},
			})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- cs.Serve(ctx, &tunnel.Server{}, nil) }()
			defer func() {
				cancel()
				<-served
			}()
			if v := ts.session().Info().ProtocolVersion; v != tc.Want {
				t.Fatalf("session protocol version %d, want %d", v, tc.Want)
			}
		})
	}
}

// TestExpectContinueOverGRPC: a request body held back for the agent's
// go-ahead (tunneltest.CheckExpectContinue) over gRPC.
func TestExpectContinueOverGRPC(t *testing.T) {
	ts := startServer(t, nil)
	ts.startAgent(tunneltest.ExpectBackend)
	tunneltest.CheckExpectContinue(t, ts.session())
}
