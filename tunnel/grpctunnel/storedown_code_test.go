package grpctunnel_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
)

// storeDownToken stands for a credential the gateway cannot check because
// its database does not answer.
const storeDownToken = "storedown-Secret-0c9e6a21"

// storeDownWords is what a gateway's Authenticate says then
// (gateway/trust.go errStoreDown).
const storeDownWords = "the gateway's database does not answer; the agent retries by itself"

var errStoreDown = fmt.Errorf("%w; the agent retries by itself", tunnel.ErrUnavailable)

// startStoreDownServer is startServer whose Authenticate refuses
// storeDownToken with errStoreDown.
func startStoreDownServer(t *testing.T) *testServer {
	return startServer(t, func(s *grpctunnel.Server) {
		auth := s.Authenticate
		s.Authenticate = func(state *tls.ConnectionState, token string) (tunnel.Identity, error) {
			if token == storeDownToken {
				return tunnel.Identity{}, errStoreDown
			}
			return auth(state, token)
		}
	})
}

// TestStoreDownRefusedUnavailable: a session whose check failed because
// the gateway's database does not answer (an Authenticate error wrapping
// tunnel.ErrUnavailable) is refused with UNAVAILABLE "unavailable: <the
// hook's words>", not UNAUTHENTICATED, and logged as such; Dial returns it
// as tunnel.ErrUnavailable, not ErrUnauthenticated. Agents of earlier
// versions still find the words. Other refusals keep their codes. Before,
// every Authenticate error but a revocation was UNAUTHENTICATED.
func TestStoreDownRefusedUnavailable(t *testing.T) {
	if errStoreDown.Error() != storeDownWords {
		t.Fatalf("the refusal reads %q", errStoreDown)
	}
	ts := startStoreDownServer(t)

	ctrl, err := ts.rawClient().Control(streamCtx(t, "authorization", "Bearer "+storeDownToken))
	if err != nil {
		t.Fatal(err)
	}
	_ = ctrl.Send(&tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: 1, Name: "raw"}})
	_, err = ctrl.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "unavailable: "+storeDownWords {
		t.Fatalf("refused with %v; want Unavailable %q", err, "unavailable: "+storeDownWords)
	}

	_, err = ts.dial(storeDownToken, zap.NewNop())
	if !errors.Is(err, tunnel.ErrUnavailable) || errors.Is(err, grpctunnel.ErrUnauthenticated) ||
		!strings.HasSuffix(err.Error(), ": "+storeDownWords) {
		t.Fatalf("Dial: %v (ErrUnavailable %v, ErrUnauthenticated %v); want tunnel.ErrUnavailable ending in %q",
			err, errors.Is(err, tunnel.ErrUnavailable), errors.Is(err, grpctunnel.ErrUnauthenticated), storeDownWords)
	}
	if got := ts.entries(zap.WarnLevel, "agent refused: unavailable"); len(got) != 2 {
		t.Errorf("%d lines \"agent refused: unavailable\", want 2", len(got))
	}
	if got := ts.entries(zap.WarnLevel, "agent refused: unauthenticated"); len(got) != 0 {
		t.Errorf("the database's silence logged as an authentication failure: %v", got[0].ContextMap())
	}

	// A wrong credential and a revoked one keep their codes.
	if _, err := ts.dial(wrongToken, zap.NewNop()); !errors.Is(err, grpctunnel.ErrUnauthenticated) || errors.Is(err, tunnel.ErrUnavailable) {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := ts.dial(revokedToken, zap.NewNop()); !errors.Is(err, tunnel.ErrRevoked) || errors.Is(err, tunnel.ErrUnavailable) {
		t.Fatalf("revoked: %v", err)
	}
	ts.noSession()
}

// TestStoreDownClosedAtRegistration: a session closed as it was registered
// because its revocation could not be checked (the gateway's recheck, the
// database not answering) is refused with UNAVAILABLE "unavailable: …",
// which Dial returns as tunnel.ErrUnavailable; one closed for another
// reason is not. Before, both came as a plain UNAVAILABLE that the agent
// could not tell from a broken connection.
func TestStoreDownClosedAtRegistration(t *testing.T) {
	reason := fmt.Errorf("connector conn-1: revocation not checked: %w", errStoreDown)
	ts := startServer(t, func(s *grpctunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(reason) }
	})
	_, err := ts.dial(goodToken, zap.NewNop())
	if !errors.Is(err, tunnel.ErrUnavailable) || !strings.HasSuffix(err.Error(), "the gateway closed the session: "+reason.Error()) {
		t.Fatalf("Dial: %v; want tunnel.ErrUnavailable ending in %q", err, reason)
	}
	other := startServer(t, func(s *grpctunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(errors.New("connector conn-1 already holds 256 sessions")) }
	})
	_, err = other.dial(goodToken, zap.NewNop())
	if err == nil || errors.Is(err, tunnel.ErrUnavailable) || status.Code(err) != codes.Unavailable {
		t.Fatalf("Dial: %v; want a plain Unavailable", err)
	}
}
