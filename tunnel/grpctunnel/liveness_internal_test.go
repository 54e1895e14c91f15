package grpctunnel

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

// probed does with p's probe what its pinger does, if one was asked for:
// writes it, or leaves it pending behind gRPC's frame.
func probed(t *testing.T, p *pingConn) {
	t.Helper()
	select {
	case <-p.kick:
		p.ask()
		p.probing.Store(false)
	default:
	}
}

// TestProbeOneOutstanding: the gateway's probe (a PING, which the agent's
// gRPC answers) goes out between gRPC's frames, and only one at a time: no
// second one while nothing was read since the first (a dead agent gets
// one, however many exchanges wait), another once the agent said
// anything.
func TestProbeOneOutstanding(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc, kick: make(chan struct{}, 1)} // the gateway's end: no preface
	settings := frame(6)
	p.Write(settings)
	p.Probe()
	probed(t, p)
	p.Probe() // unanswered: none
	probed(t, p)
	p.last.Store(p.wrote.Load() + 1) // the agent's answer is read
	p.Probe()
	probed(t, p)
	want := bytes.Join([][]byte{settings, pingFrame[:], pingFrame[:]}, nil)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("wrote\n%q\nwant SETTINGS, then one ping per answer\n%q", got, want)
	}
}

// TestProbeWaitsForFrameEnd: a probe asked for while gRPC's frame is half
// written goes right after that frame, not into it.
func TestProbeWaitsForFrameEnd(t *testing.T) {
	rc := &recordConn{}
	p := &pingConn{Conn: rc, kick: make(chan struct{}, 1)}
	f := frame(100)
	p.Write(frame(6))
	p.Write(f[:50])
	p.Probe()
	probed(t, p)
	p.Write(f[50:])
	want := bytes.Join([][]byte{frame(6), f, pingFrame[:]}, nil)
	if got := rc.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("wrote\n%q\nwant the frame whole, then the probe\n%q", got, want)
	}
}

// TestPeerKeepaliveMetadata: the agent's keepalive, as it says it in its
// control stream's metadata, is what the gateway's watch allows it to stay
// silent; an agent of an older version says none and is given the longest
// a keepalive may be, as is one that says nonsense.
func TestPeerKeepaliveMetadata(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want time.Duration
	}{
		{"default", metadata.Pairs(mdKeepalive, keepaliveMD(0)), DefaultKeepalive},
		{"5s", metadata.Pairs(mdKeepalive, keepaliveMD(5*time.Second)), 5 * time.Second},
		{"below the minimum", metadata.Pairs(mdKeepalive, keepaliveMD(time.Second)), MinKeepalive},
		{"said below the minimum", metadata.Pairs(mdKeepalive, "10"), MinKeepalive},
		{"older agent", metadata.MD{}, maxPeerKeepalive},
		{"too long", metadata.Pairs(mdKeepalive, "3600000"), maxPeerKeepalive},
		{"garbage", metadata.Pairs(mdKeepalive, "5s"), maxPeerKeepalive},
		{"negative", metadata.Pairs(mdKeepalive, "-1"), maxPeerKeepalive},
		{"twice", metadata.Pairs(mdKeepalive, "5000", mdKeepalive, "6000"), maxPeerKeepalive},
	} {
		if got := peerKeepalive(tc.md); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
