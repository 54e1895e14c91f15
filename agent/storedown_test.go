package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/grpctunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/yamuxtunnel"
)

// storeDownAnswer is the gateway's answer when its database does not answer
// (gateway/trust.go errStoreDown).
const storeDownAnswer = "the gateway's database does not answer; the agent retries by itself"

// refusingSessionGateway is a yamux tunnel listener on 127.0.0.1 whose
// Authenticate hook fails with refusal, as a gateway's does.
func refusingSessionGateway(t *testing.T, refusal error) (string, *tls.Config) {
	t.Helper()
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) { return tunnel.Identity{}, refusal },
		OnSession:    func(s tunnel.Session) { s.Close(nil) },
		Log:          zap.NewNop(),
	}
	addr, cert := serveYamuxTunnel(t, srv, 11)
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
}

// TestGatewayStoreDown: a session the gateway refuses because its database
// does not answer is told apart from a refused certificate (an agent told
// "enroll again" for a database outage did so, or its operator did), over
// a real yamux session and as the gRPC transport and the enrollment
// service report it; certificate refusals and other errors are not.
func TestGatewayStoreDown(t *testing.T) {
	addr, cfg := refusingSessionGateway(t, errors.New(storeDownAnswer))
	_, err := yamuxtunnel.Dial(context.Background(), yamuxtunnel.DialConfig{Addr: addr, TLS: cfg})
	if err == nil || !isGatewayStoreDown(err) || isCertRefused(err) {
		t.Fatalf("yamux session refused for the gateway's database: %v; isGatewayStoreDown %v, isCertRefused %v",
			err, isGatewayStoreDown(err), isCertRefused(err))
	}
	if !isUnauthenticated(err) {
		t.Fatalf("%v: want it reported as unauthenticated (the switch must test isGatewayStoreDown first)", err)
	}
	for _, e := range []error{
		// grpctunnel.Dial's report of the gateway's Unauthenticated status.
		fmt.Errorf("%w: %s", grpctunnel.ErrUnauthenticated, "unauthenticated: "+storeDownAnswer),
		// A renewal or enrollment answered Unavailable (rpcError).
		rpcError(status.Error(codes.Unavailable, storeDownAnswer)),
		rpcError(status.Error(codes.Unavailable, "the gateway's database does not answer; the token was not spent; try again")),
	} {
		if !isGatewayStoreDown(e) {
			t.Errorf("%v: not recognised as the gateway's database not answering", e)
		}
	}
	for _, e := range []error{
		nil,
		fmt.Errorf("%w: unauthenticated: connector c1 is not enrolled at this gateway", grpctunnel.ErrUnauthenticated),
		errors.New("remote error: tls: bad certificate"),
		errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
	} {
		if isGatewayStoreDown(e) {
			t.Errorf("%v: taken for the gateway's database not answering", e)
		}
	}
	core, logs := observer.New(zap.InfoLevel)
	logGatewayStoreDown(zap.New(core), TransportYamux, err, time.Second)
	if l := logs.All(); len(l) != 1 || l[0].Level != zap.WarnLevel || strings.Contains(l[0].Message, "nroll the agent again") ||
		l[0].Message != "the gateway cannot check this agent now: its database does not answer; retrying (do not enroll again)" {
		t.Fatalf("logged %v", l)
	}
}
