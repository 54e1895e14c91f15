package muxtunnel_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
)

// storeDownWords is what a gateway's Authenticate says when its database
// does not answer (gateway/trust.go errStoreDown).
const storeDownWords = "the gateway's database does not answer; the agent retries by itself"

// errStoreDown stands for the gateway's store-down refusal.
var errStoreDown = fmt.Errorf("%w; the agent retries by itself", tunnel.ErrUnavailable)

// storeDownPair is a pair whose Authenticate answers refusal.
func storeDownPair(t *testing.T, refusal error) *pair {
	return newPair(t, func(s *muxtunnel.Server) {
		s.Authenticate = func(*tls.ConnectionState, string) (tunnel.Identity, error) { return tunnel.Identity{}, refusal }
	})
}

// TestStoreDownRefusalCode: a session whose check failed because the
// gateway's database does not answer (an Authenticate error wrapping
// tunnel.ErrUnavailable) is refused with the error code "unavailable",
// not "unauthenticated", and with the hook's own words, which agents of
// earlier versions recognise; Handshake returns it as
// tunnel.ErrUnavailable, not ErrUnauthenticated. Before, it was refused as
// unauthenticated and only its words told it from a refused credential.
func TestStoreDownRefusalCode(t *testing.T) {
	if errStoreDown.Error() != storeDownWords || !strings.HasPrefix(errStoreDown.Error(), tunnel.StoreDownText) {
		t.Fatalf("the refusal reads %q", errStoreDown)
	}
	t.Run("wire", func(t *testing.T) {
		p := storeDownPair(t, errStoreDown)
		ctrl, err := p.client.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		writeRaw(t, ctrl, &tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: tunnel.ProtocolVersion, Token: goodToken, Name: "raw", Transport: "yamux"}})
		var m tunnelv1.ControlResponse
		readRaw(t, ctrl, &m)
		p.client.Close("") // as an agent does once it has read the answer
		if e := m.GetError(); e.GetCode() != "unavailable" || e.GetMessage() != storeDownWords {
			t.Fatalf("refused with %v; want code \"unavailable\", message %q", m.GetError(), storeDownWords)
		}
		if err := p.served1(t); !errors.Is(err, tunnel.ErrUnavailable) {
			t.Fatalf("ServeConn: %v", err)
		}
	})
	t.Run("handshake", func(t *testing.T) {
		p := storeDownPair(t, errStoreDown)
		_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
		if !errors.Is(err, tunnel.ErrUnavailable) || errors.Is(err, muxtunnel.ErrUnauthenticated) || err.Error() != storeDownWords {
			t.Fatalf("Handshake: %v (ErrUnavailable %v, ErrUnauthenticated %v); want tunnel.ErrUnavailable reading %q",
				err, errors.Is(err, tunnel.ErrUnavailable), errors.Is(err, muxtunnel.ErrUnauthenticated), storeDownWords)
		}
	})
	t.Run("credential refused", func(t *testing.T) {
		// Any other refusal stays unauthenticated.
		p := storeDownPair(t, errors.New("connector c1 is not enrolled at this gateway"))
		_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
		if !errors.Is(err, muxtunnel.ErrUnauthenticated) || errors.Is(err, tunnel.ErrUnavailable) {
			t.Fatalf("Handshake: %v; want ErrUnauthenticated", err)
		}
	})
}

// TestStoreDownClosedAtRegistration: a session closed as it was registered
// because its revocation could not be checked (the gateway's recheck, the
// database not answering) is refused with the code "unavailable" too.
// Before, it came as "closed", which the agent reported as a refusal of
// unknown kind.
func TestStoreDownClosedAtRegistration(t *testing.T) {
	reason := fmt.Errorf("connector c1: revocation not checked: %w", errStoreDown)
	p := newPair(t, func(s *muxtunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(reason) }
	})
	_, err := muxtunnel.Handshake(context.Background(), p.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if !errors.Is(err, tunnel.ErrUnavailable) || err.Error() != reason.Error() {
		t.Fatalf("Handshake: %v; want tunnel.ErrUnavailable reading %q", err, reason)
	}
	// Closed for another reason: still "closed".
	q := newPair(t, func(s *muxtunnel.Server) {
		s.OnSession = func(ss tunnel.Session) { ss.Close(errors.New("connector c1 already holds 256 sessions")) }
	})
	_, err = muxtunnel.Handshake(context.Background(), q.client, muxtunnel.ClientConfig{Token: goodToken, Transport: "yamux"})
	if err == nil || errors.Is(err, tunnel.ErrUnavailable) || !strings.Contains(err.Error(), "closed: connector c1 already holds") {
		t.Fatalf("Handshake: %v; want the refusal \"closed\"", err)
	}
}

// TestUnavailableError: tunnel.Unavailable reads as the gateway's words
// and matches tunnel.ErrUnavailable only.
func TestUnavailableError(t *testing.T) {
	err := tunnel.Unavailable(storeDownWords)
	if err.Error() != storeDownWords || !errors.Is(err, tunnel.ErrUnavailable) || errors.Is(err, tunnel.ErrShuttingDown) {
		t.Fatalf("Unavailable(%q) = %v", storeDownWords, err)
	}
	if err := tunnel.Unavailable(""); err.Error() != tunnel.StoreDownText || !errors.Is(err, tunnel.ErrUnavailable) {
		t.Fatalf("Unavailable(\"\") = %v", err)
	}
}

// TestStoreDownRefusalOlderAgent: an agent of protocol version 3 (before
// the code "unavailable") is refused as unauthenticated with the words,
// as before; one of version 4 gets "unavailable".
func TestStoreDownRefusalOlderAgent(t *testing.T) {
	for _, c := range []struct {
		version uint32
		code    string
	}{{3, "unauthenticated"}, {4, "unavailable"}} {
		p := storeDownPair(t, errStoreDown)
		ctrl, err := p.client.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		writeRaw(t, ctrl, &tunnelv1.ControlRequest{Hello: &tunnelv1.Hello{ProtocolVersion: c.version, Token: goodToken, Name: "raw", Transport: "yamux"}})
		var m tunnelv1.ControlResponse
		readRaw(t, ctrl, &m)
		p.client.Close("")
		t.Logf("v%d: %v", c.version, m.GetError())
		if m.GetError().GetCode() != c.code {
			t.Errorf("v%d: code %q, want %q", c.version, m.GetError().GetCode(), c.code)
		}
	}
}
