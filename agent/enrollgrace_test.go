package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// graceConnectorID is the connector of the certificates issueForCSR
// issues.
const graceConnectorID = "c-enrollgrace"

// issueForCSR answers an enrollment as a gateway does: the gateway's
// issuer (pki.Authority, over an in-memory store) signs a connector
// certificate for the key of the request's CSR and returns its CA bundle.
func issueForCSR(req *tunnelv1.EnrollRequest) (*tunnelv1.EnrollResponse, error) {
	csr, err := pki.CheckCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	st, err := store.OpenMemory(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	ca := &pki.Authority{Store: st}
	if _, err := ca.Init(ctx); err != nil {
		return nil, err
	}
	issued, err := ca.Issue(ctx, csr, pki.Identity{ConnectorID: graceConnectorID, Group: "g"})
	if err != nil {
		return nil, err
	}
	return &tunnelv1.EnrollResponse{Certificate: issued.DER, CaBundle: issued.Bundle}, nil
}

// graceLog is a logger that closes waiting at the line that says a stop
// waits for the gateway's answer.
func graceLog() (log *zap.Logger, logs *observer.ObservedLogs, waiting chan struct{}) {
	core, logs := observer.New(zap.InfoLevel)
	waiting = make(chan struct{})
	log = zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if strings.Contains(e.Message, "for the gateway's answer") {
			close(waiting)
		}
		return nil
	}))
	return log, logs, waiting
}

// graceCall runs EnrollWithStopGrace in a goroutine.
type graceCall struct {
	done  chan struct{}
	creds *Credentials
	err   error
}

func startGraceCall(ctx context.Context, cfg EnrollConfig, log *zap.Logger) *graceCall {
	c := &graceCall{done: make(chan struct{})}
	go func() { defer close(c.done); c.creds, c.err = EnrollWithStopGrace(ctx, cfg, log) }()
	return c
}

// TestEnrollWithStopGrace: `sallyport agent enroll` (EnrollWithStopGrace)
// treats a Ctrl-C or SIGTERM during the request as the agent does: once
// the gateway may have the request, the call goes on for its answer (a
// certificate is returned and saved), and without an answer in the grace
// the error wraps ErrEnrollInterrupted and says that the token may have
// been spent; a stop before the TLS handshake is done cuts the call at
// once, and the token was not spent.
func TestEnrollWithStopGrace(t *testing.T) {
	enrollAt := func(t *testing.T, addr string) EnrollConfig {
		return EnrollConfig{Gateway: addr, Token: "spt_x", DataDir: t.TempDir(),
			TLS: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a test server
	}
	t.Run("certificate after the stop", func(t *testing.T) {
		svc := &scriptedEnrollment{arrived: make(chan struct{}, 1), release: make(chan struct{})}
		cfg := enrollAt(t, enrollmentGateway(t, svc))
		log, _, waiting := graceLog()
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		call := startGraceCall(ctx, cfg, log)
		<-svc.arrived
		stop()
		select {
		case <-waiting:
		case <-call.done:
			t.Fatalf("the call returned at the stop without waiting for the gateway's answer: %v", call.err)
		}
		close(svc.release)
		<-call.done
		if call.err != nil || call.creds.ConnectorID != graceConnectorID {
			t.Fatalf("EnrollWithStopGrace: %v, %v; want connector %s", call.creds, call.err, graceConnectorID)
		}
		if _, err := LoadCredentials(cfg.DataDir); err != nil {
			t.Errorf("credentials not saved: %v", err)
		}
	})
	t.Run("no answer in the grace", func(t *testing.T) {
		grace := enrollStopGrace
		enrollStopGrace = 200 * time.Millisecond // an upper bound only
		t.Cleanup(func() { enrollStopGrace = grace })
		svc := &scriptedEnrollment{arrived: make(chan struct{}, 1)}
		log, _, waiting := graceLog()
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		call := startGraceCall(ctx, enrollAt(t, enrollmentGateway(t, svc)), log)
		<-svc.arrived
		stop()
		<-waiting
		<-call.done
		if !errors.Is(call.err, ErrEnrollInterrupted) {
			t.Fatalf("EnrollWithStopGrace: %v; want ErrEnrollInterrupted", call.err)
		}
		for _, want := range []string{"did not answer the enrollment request within 200ms after the stop",
			"may have been spent", "sallyport token create"} {
			if !strings.Contains(call.err.Error(), want) {
				t.Errorf("error %q; want it to say %q", call.err, want)
			}
		}
	})
	t.Run("stop before the handshake", func(t *testing.T) {
		addr, accepted := silentListener(t)
		log, logs, _ := graceLog()
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		call := startGraceCall(ctx, enrollAt(t, addr), log)
		<-accepted
		stop()
		<-call.done
		if !errors.Is(call.err, ErrEnrollInterrupted) || !strings.Contains(call.err.Error(), "the token was not spent") {
			t.Fatalf("EnrollWithStopGrace: %v; want ErrEnrollInterrupted saying the token was not spent", call.err)
		}
		if n := logs.FilterMessageSnippet("for the gateway's answer").Len(); n != 0 {
			t.Errorf("a stop before the TLS handshake waited for an answer: %v", logs.All())
		}
	})
}

// silentListener accepts TCP connections on loopback and never says a
// word (a TLS handshake that does not finish); accepted gets a value per
// connection.
func silentListener(t *testing.T) (addr string, accepted chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), accepted
}

// TestStopBeforeEnrollHandshake: an agent stopped while its enrollment's
// TLS handshake is not done stops at once: nothing was sent, so it does
// not wait for an answer, and says that the token was not spent.
func TestStopBeforeEnrollHandshake(t *testing.T) {
	addr, accepted := silentListener(t)
	cfg := enrollingAgent(t, addr)
	r := startAgent(t, cfg, func(zapcore.Entry) bool { return false })
	<-accepted
	if err := r.stop(); !errors.Is(err, ErrEnrollInterrupted) {
		t.Fatalf("Run: %v; want ErrEnrollInterrupted", err)
	}
	if msg, _ := stopLine(t, r); !strings.Contains(msg, "the token was not spent") {
		t.Errorf("stop line %q; want it to say that the token was not spent", msg)
	}
	if n := r.logs.FilterMessageSnippet("for the gateway's answer").Len(); n != 0 {
		t.Errorf("a stop before the TLS handshake waited for an answer: %v", r.logs.All())
	}
}

// TestStopDuringBusyAnswer: a stop that comes after the TLS handshake,
// when the gateway then closes the connection before reading the request
// (ErrGatewayBusy: the token was not sent), ends the call at once rather
// than waiting out the grace or trying again after the stop.
func TestStopDuringBusyAnswer(t *testing.T) {
	ln, tc, _ := loopbackTLS(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	log, _, waiting := graceLog()
	conns := make(chan struct{}, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			if tls.Server(c, tc).Handshake() == nil {
				stop() // the stop comes once the handshake is done,
				<-waiting
			}
			c.Close() // and the gateway closes the connection without a word
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	res := enrollThroughStop(ctx, EnrollConfig{Gateway: ln.Addr().String(), Token: "spt_x",
		TLS:         &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a test server
		BusyBackoff: Backoff{Min: time.Hour, Max: time.Hour}}, log)
	if !errors.Is(res.err, ErrGatewayBusy) || res.graceOver {
		t.Fatalf("enrollThroughStop: %v (cut at the end of the grace: %v); want ErrGatewayBusy at once", res.err, res.graceOver)
	}
	if n := len(conns); n != 1 {
		t.Errorf("%d connections; want 1, none after the stop", n)
	}
}
