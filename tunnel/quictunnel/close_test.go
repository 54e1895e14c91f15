package quictunnel_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/quictunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// frameCounter counts the stream-ending control frames that both ends of
// every connection send (a qlog trace that keeps nothing else).
type frameCounter struct {
	stopSending, resetStream, fin atomic.Int64
	ended                         chan struct{} // signalled after each FIN or RESET_STREAM
}

func (fc *frameCounter) trace(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return fc }
func (fc *frameCounter) AddProducer() qlogwriter.Recorder                                { return fc }
func (fc *frameCounter) Close() error                                                    { return nil }

func (fc *frameCounter) RecordEvent(ev qlogwriter.Event) {
	sent, ok := ev.(qlog.PacketSent)
	if !ok {
		return
	}
	for _, f := range sent.Frames {
		switch f := f.Frame.(type) {
		case *qlog.StopSendingFrame:
			fc.stopSending.Add(1)
		case *qlog.ResetStreamFrame:
			fc.resetStream.Add(1)
			fc.signal()
		case *qlog.StreamFrame:
			if f.Fin {
				fc.fin.Add(1)
				fc.signal()
			}
		}
	}
}

func (fc *frameCounter) signal() {
	select {
	case fc.ended <- struct{}{}:
	default:
	}
}

// TestCleanExchangeEndsWithFIN: an exchange that ends cleanly closes the
// stream with a FIN each way. The agent closes right after its `end`
// (muxtunnel.ReliableCloser), so the gateway has read the whole stream when
// it finishes and sends no STOP_SENDING, and the agent no RESET_STREAM in
// reply. The FIN travels with the agent's last frame unless QUIC sent that
// frame in the moment between the two writes, so a few exchanges may still
// end the old way; before this change every one did.
func TestCleanExchangeEndsWithFIN(t *testing.T) {
	fc := &frameCounter{ended: make(chan struct{}, 1)}
	quictunnel.SetTracer(fc.trace)
	t.Cleanup(func() { quictunnel.SetTracer(nil) }) // runs after the server's cleanup
	s := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cs, err := quictunnel.Dial(ctx, quictunnel.DialConfig{Addr: s.addr, TLS: s.tls, Token: goodToken})
	if err != nil {
		t.Fatal(err)
	}
	backend := &tunnel.Server{Backend: func(*http.Request, *tunnelv1.RequestHead) (http.RoundTripper, error) {
		return tunneltest.RoundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 204, Header: http.Header{}, Body: http.NoBody}, nil
		}), nil
	}}
	serveCtx, stopServe := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = cs.Serve(serveCtx, backend, nil) })
	defer func() {
		stopServe()
		cs.Close()
		wg.Wait()
	}()
	var sess tunnel.Session
	select {
	case sess = <-s.sessions:
	case <-time.After(hangGuard):
		t.Fatal("no session")
	}
	const n = 50
	before := fc.stopSending.Load() + fc.resetStream.Load()
	for i := range n {
		st, err := sess.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "http://backend.test/", nil)
		res, err := tunnel.RoundTrip(st, req, nil)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != 204 {
			t.Fatalf("exchange %d: status %d", i, res.StatusCode)
		}
	}
	// Each direction of every exchange ends with a FIN or a RESET_STREAM
	// once its stream is retired; wait for all of them, then count.
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
wait:
	for fc.fin.Load()+fc.resetStream.Load() < 2*n {
		select {
		case <-fc.ended:
		case <-guard.C:
			break wait
		}
	}
	stops, resets := fc.stopSending.Load(), fc.resetStream.Load()
	t.Logf("%d clean exchanges: %d FIN, %d STOP_SENDING, %d RESET_STREAM sent", n, fc.fin.Load(), stops, resets)
	if fc.fin.Load()+resets < 2*n {
		t.Errorf("%d FIN and RESET_STREAM for %d exchanges, want %d (one each way)", fc.fin.Load()+resets, n, 2*n)
	}
	if got := stops + resets - before; got > n/5 {
		t.Errorf("%d STOP_SENDING and RESET_STREAM frames for %d clean exchanges; want at most %d", got, n, n/5)
	}
}
