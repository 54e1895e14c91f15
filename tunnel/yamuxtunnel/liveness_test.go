package yamuxtunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/sallyport/sallyport/internal/shortskip"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/muxtunnel"
	"github.com/sallyport/sallyport/tunnel/tunneltest"
)

// livePair is a gateway end and an agent end of yamux over net.Pipe, the
// agent's with a keepalive of agentKeepalive; both closed by t's cleanup.
func livePair(t *testing.T, agentKeepalive time.Duration) (gw, ag *conn) {
	t.Helper()
	a, b := net.Pipe()
	gw, err := start(a, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	ag, err = start(b, nil, agentKeepalive, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close(""); gw.Close("") })
	return gw, ag
}

// eventually polls cond (the counters have no event to wait on) for up to
// 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPeerKeepaliveAnnounced: the gateway learns the agent's keepalive from
// the agent's first frame (keepaliveFrame), whatever its own: its liveness
// watch closes a silent session after it (and a second), since a live
// agent that hears nothing pings after it. Before the agent said it, and
// with an agent of an older version, it assumes the longest an agent may
// have, so that the watch cuts no live agent.
func TestPeerKeepaliveAnnounced(t *testing.T) {
	for _, tc := range []struct{ agent, want time.Duration }{
		{7 * time.Second, 7 * time.Second},
		{0, DefaultKeepalive},
		{time.Second, MinKeepalive},
	} {
		gw, _ := livePair(t, tc.agent)
		eventually(t, "the agent's keepalive", func() bool { return gw.PeerKeepalive() != maxPeerKeepalive })
		if got := gw.PeerKeepalive(); got != tc.want {
			t.Errorf("agent keepalive %v: the gateway took it for %v, want %v", tc.agent, got, tc.want)
		}
	}
}

// TestKeepaliveAnnouncementInteroperates: a gateway of this version with an
// agent of an older version (plain yamux, no announcement) serves streams
// and assumes maxPeerKeepalive; a gateway of an older version (plain yamux)
// ignores the announcement of an agent of this version, as it ignores
// lifelines, and serves its streams and pings.
func TestKeepaliveAnnouncementInteroperates(t *testing.T) {
	exchange := func(t *testing.T, open func() (net.Conn, error), accept func() (net.Conn, error)) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			s, err := open()
			if err == nil {
				_, err = s.Write([]byte("hello"))
			}
			done <- err
		}()
		s, err := accept()
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(s, got); err != nil || string(got) != "hello" {
			t.Fatalf("read %q, %v; want hello", got, err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	t.Run("older agent", func(t *testing.T) {
		a, b := net.Pipe()
		gw, err := start(a, nil, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		defer gw.Close("")
		old, err := yamux.Client(b, config(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		exchange(t, func() (net.Conn, error) { return old.OpenStream() }, func() (net.Conn, error) { return gw.s.AcceptStream() })
		if got := gw.PeerKeepalive(); got != maxPeerKeepalive {
			t.Errorf("an agent that said no keepalive was taken for one of %v, want %v", got, maxPeerKeepalive)
		}
	})
	t.Run("older gateway", func(t *testing.T) {
		a, b := net.Pipe()
		old, err := yamux.Server(a, config(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		ag, err := start(b, nil, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		defer ag.Close("")
		exchange(t, func() (net.Conn, error) { return old.OpenStream() }, func() (net.Conn, error) { return ag.s.AcceptStream() })
		if _, err := ag.s.Ping(); err != nil {
			t.Fatalf("the older gateway answers no ping after the announcement: %v", err)
		}
		if old.IsClosed() {
			t.Fatal("the older gateway closed the session")
		}
	})
}

// TestParseKeepaliveFrame: only an announcement is read as one (a lifeline,
// yamux's frames and a ping request are not), and what it says is bounded.
func TestParseKeepaliveFrame(t *testing.T) {
	frame := func(d time.Duration) []byte { f := keepaliveFrame(d); return f[:] }
	ping := frame(10 * time.Second)
	ping[3] = 1 // SYN: a ping request, which yamux answers
	for _, tc := range []struct {
		name string
		f    []byte
		want time.Duration
	}{
		{"5s", frame(5 * time.Second), 5 * time.Second},
		{"90.5s", frame(90500 * time.Millisecond), 90500 * time.Millisecond},
		{"too short", frame(time.Second), MinKeepalive},
		{"zero", frame(0), MinKeepalive},
		{"too long", frame(time.Hour), maxPeerKeepalive},
		{"lifeline", lifelineFrame[:], 0},
		{"window update", yamuxFrame(1, 1<<20), 0},
		{"data", yamuxFrame(yamuxTypeData, 0), 0},
		{"ping request", ping, 0},
		{"short", frame(5 * time.Second)[:11], 0},
	} {
		if got := parseKeepaliveFrame(tc.f); got != tc.want {
			t.Errorf("%s (%x): %v, want %v", tc.name, tc.f, got, tc.want)
		}
	}
}

// TestNewStreamAnswered: a live agent's yamux answers a new stream the
// gateway opens (its window update with ACK, when the agent accepts it)
// whatever the exchange's backend does, so the gateway's Received moves:
// the liveness watch's premise. Data on a stream draws no answer by itself.
func TestNewStreamAnswered(t *testing.T) {
	gw, ag := livePair(t, 0)
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := ag.s.AcceptStream()
		if err == nil {
			accepted <- s
		}
	}()
	time.Sleep(50 * time.Millisecond) // the announcement and the handshake's frames
	before := gw.Received()
	rs, err := gw.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the agent's answer to the new stream", func() bool { return gw.Received() != before })
	<-accepted
}

// TestProbeAnswered: Probe draws an answer from a live agent (a ping), and
// does not block while a dead one answers nothing; one ping at a time.
func TestProbeAnswered(t *testing.T) {
	gw, _ := livePair(t, 0)
	time.Sleep(50 * time.Millisecond)
	before := gw.Received()
	gw.Probe()
	eventually(t, "the answer to a probe", func() bool { return gw.Received() != before })

	// A peer that reads nothing and answers nothing: the ping waits in
	// the coalescing buffer and the probe under way holds back the next.
	a, b := net.Pipe()
	defer b.Close()
	dead, err := start(a, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close("")
	start := time.Now()
	for range 10 {
		dead.Probe()
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Probe blocked %v on a peer that answers nothing", d)
	}
	if !dead.probing.Load() {
		t.Fatal("no probe under way")
	}
	if n := dead.Received(); n != 0 {
		t.Fatalf("received %d bytes from a peer that sent nothing", n)
	}
}

// TestSilentAgentSessionClosed: a gateway session over yamux whose agent
// answers each new stream stays picked; once the agent's path dies, the
// next exchange sets the session aside (Silent) within about a second and
// closes it after the agent's keepalive (5 s, which it announced) and a
// second, not after the gateway's keepalive (15 s + 10 s here). Before,
// yamux sessions had no liveness watch.
func TestSilentAgentSessionClosed(t *testing.T) {
	shortskip.Long(t, "waits about 6 s for the watch to close a silent session")
	a, b := net.Pipe()
	path := tunneltest.NewFreezeConn(t, a) // the gateway's end of the path
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sessions := make(chan tunnel.Session, 1)
	srv := &muxtunnel.Server{
		Authenticate: func(*tls.ConnectionState, string) (tunnel.Identity, error) {
			return tunnel.Identity{Group: "g", ConnectorID: "c1"}, nil
		},
		OnSession: func(s tunnel.Session) { sessions <- s },
	}
	gw, err := start(path, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(ctx, gw, muxtunnel.TransportYamux) }()
	ag, err := start(b, nil, MinKeepalive, true)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := muxtunnel.Handshake(ctx, ag, muxtunnel.ClientConfig{Token: "t", Hello: &tunnelv1.Hello{Name: "agent"}})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- cs.Serve(ctx, &tunnel.Server{}, nil) }()
	defer func() {
		cancel()
		ag.Close("")
		gw.Close("")
		<-agentDone
		<-served
	}()
	s := <-sessions
	silent := func() bool { return s.(interface{ Silent() bool }).Silent() }
	open := func() {
		st, err := s.OpenStream(ctx)
		if err != nil {
			t.Fatalf("open an exchange: %v", err)
		}
		t.Cleanup(func() { st.Finish(false) })
	}

	open()
	time.Sleep(1500 * time.Millisecond)
	if silent() {
		t.Fatal("a live agent's session was set aside: its yamux's acknowledgement of the new stream was not counted")
	}

	path.Freeze()
	start := time.Now()
	open()
	eventually(t, "the session set aside", silent)
	setAside := time.Since(start)
	select {
	case <-s.Done():
	case <-time.After(MinKeepalive + 5*time.Second):
		t.Fatalf("the silent session was not closed %v after the exchange (set aside after %v)", time.Since(start), setAside)
	}
	closed := time.Since(start)
	if setAside > 2*time.Second || closed < MinKeepalive {
		t.Fatalf("set aside after %v (want about 1 s), closed after %v (want the agent's keepalive %v and about 1 s)", setAside, closed, MinKeepalive)
	}
	t.Logf("set aside after %v, closed after %v", setAside.Round(10*time.Millisecond), closed.Round(10*time.Millisecond))
}
