package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

const brokeBodyMessage = "the response body broke off; cutting the client's connection"

// brokeBodyHead is the start of a 1 MiB download: its head and 4 KiB.
func brokeBodyHead() *tunnel.Frame {
	return &tunnel.Frame{
		Response: &tunnelv1.ResponseHead{Status: 200, ContentLength: 1 << 20,
			Headers: []*tunnelv1.Header{{Name: "Content-Type", Values: []string{"application/octet-stream"}}}},
		Data: make([]byte, 4096),
	}
}

// brokeBodyLog is a logger that records what it logs, and a channel that
// gets the access line's entry once it is written.
func brokeBodyLog() (*zap.Logger, *observer.ObservedLogs, <-chan struct{}) {
	core, logs := observer.New(zapcore.InfoLevel)
	accessed := make(chan struct{}, 1)
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "access" {
			select {
			case accessed <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	return log, logs, accessed
}

// brokeBodyGet downloads from app.test at addr and returns the error that
// ended the body.
func brokeBodyGet(t *testing.T, ctx context.Context, addr string, read func(io.Reader) error) error {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "app.test"
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	return read(res.Body)
}

func brokeBodyWaitAccess(t *testing.T, accessed <-chan struct{}) {
	t.Helper()
	select {
	case <-accessed:
	case <-time.After(sendGuardWait): // a bound only; no assertion depends on it
		t.Fatal("no access line after the exchange")
	}
}

// TestBrokeBodyLogsTheExchange: a response body that breaks off on the
// agent's side (an agent killed mid-download) logs its reason with the
// request_id, app and agent of the exchange's access line, so that the
// search the README's Troubleshooting gives finds both lines.
func TestBrokeBodyLogsTheExchange(t *testing.T) {
	s := &scriptSession{frames: []*tunnel.Frame{brokeBodyHead()},
		recvErr: errors.New("the agent's connection closed"), done: make(chan struct{})}
	log, logs, accessed := brokeBodyLog()
	addr, _ := serveAppGatewayLog(t, Config{}, s, log)
	err := brokeBodyGet(t, context.Background(), addr, func(r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
	if err == nil {
		t.Fatal("the download ended without an error; want it cut")
	}
	brokeBodyWaitAccess(t, accessed)

	access := logs.FilterMessage("access").All()
	if len(access) != 1 {
		t.Fatalf("%d access lines, want 1", len(access))
	}
	af := access[0].ContextMap()
	rid, _ := af["request_id"].(string)
	if rid == "" || af["error"] != CodeTunnelFailed {
		t.Fatalf("access line %v: want a request_id and error %s", af, CodeTunnelFailed)
	}
	broke := logs.FilterMessage(brokeBodyMessage).All()
	if len(broke) != 1 {
		t.Fatalf("%d lines %q, want 1", len(broke), brokeBodyMessage)
	}
	bf := broke[0].ContextMap()
	t.Logf("access: %v", af)
	t.Logf("reason: %v", bf)
	if broke[0].Level != zapcore.WarnLevel {
		t.Errorf("reason logged at %v, want warn", broke[0].Level)
	}
	for _, k := range []string{"request_id", "app", "agent"} {
		if bf[k] != af[k] {
			t.Errorf("reason line's %s = %v, access line's %v", k, bf[k], af[k])
		}
	}
	if bf["error"] == nil {
		t.Error("reason line without the error")
	}
}

// leftClientSession answers with brokeBodyHead, then breaks its stream
// once the exchange aborted it (Finish, which the relay calls when the
// request's context ends): the client left first.
type leftClientSession struct {
	scriptSession
	once     sync.Once
	finished chan struct{}
}

func (s *leftClientSession) OpenStream(context.Context) (tunnel.Stream, error) { return s, nil }

func (s *leftClientSession) Finish(bool) { s.once.Do(func() { close(s.finished) }) }

func (s *leftClientSession) Recv() (*tunnel.Frame, error) {
	s.scriptSession.mu.Lock()
	n := len(s.frames)
	s.scriptSession.mu.Unlock()
	if n > 0 {
		return s.scriptSession.Recv()
	}
	<-s.finished
	return nil, errors.New("stream reset")
}

// TestBrokeBodyClientLeftNotLogged: a body cut because the client left is
// not logged as broken off (the access line says client-closed).
func TestBrokeBodyClientLeftNotLogged(t *testing.T) {
	s := &leftClientSession{scriptSession: scriptSession{frames: []*tunnel.Frame{brokeBodyHead()},
		done: make(chan struct{})}, finished: make(chan struct{})}
	log, logs, accessed := brokeBodyLog()
	addr, _ := serveAppGatewayLog(t, Config{}, s, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	brokeBodyGet(t, ctx, addr, func(r io.Reader) error {
		if _, err := io.ReadFull(r, make([]byte, 4096)); err != nil {
			t.Fatalf("the first 4 KiB: %v", err)
		}
		cancel() // the client leaves: its connection closes
		return nil
	})
	brokeBodyWaitAccess(t, accessed)
	access := logs.FilterMessage("access").All()
	if len(access) != 1 || access[0].ContextMap()["error"] != CodeClientClosed {
		t.Fatalf("access lines %v, want one with error %s", access, CodeClientClosed)
	}
	if broke := logs.FilterMessage(brokeBodyMessage).All(); len(broke) != 0 {
		t.Fatalf("the client left, and the gateway logged %q: %v", brokeBodyMessage, broke[0].ContextMap())
	}
}
