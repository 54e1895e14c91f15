package grpctunnel

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestKeepaliveEndCountsAsSilent: a session whose connection the gateway's
// keepalive closed (nothing came from the agent: its host or path died)
// is said so and reads Silent, so that sessions_closed_total counts it as
// "silent", as the README says, not as "lost" like a crash that reset the
// connection (an idle gRPC agent stopped with SIGSTOP: the log said "the
// gateway's keepalive ended the connection", the metric said lost). A
// connection the agent closed stays "closed by the agent", not silent.
func TestKeepaliveEndCountsAsSilent(t *testing.T) {
	s := &Server{}
	for _, tc := range []struct {
		name       string
		hereQuiet  time.Duration // this end closed it after so long without a read; -1: the agent closed it
		wantSilent bool
		wantReason string
	}{
		{"keepalive", 25 * time.Second, true, "the gateway's keepalive ended the connection"},
		{"agent closed", -1, false, "closed by the agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			now := int64(0)
			p := &pingConn{Conn: a, kick: make(chan struct{}, 1), done: make(chan struct{}), wake: make(chan struct{}, 1),
				clock: func() int64 { return now }}
			if tc.hereQuiet < 0 {
				p.peerEnded.Store(true)
			} else {
				now = int64(tc.hereQuiet)
			}
			p.Close()
			reason, dead := s.sessionEndReason(context.Canceled, nil, p)
			ss := &session{conn: p}
			ss.deadPath.Store(dead)
			if !strings.Contains(reason, tc.wantReason) || ss.Silent() != tc.wantSilent {
				t.Errorf("reason %q, silent %v; want %q, silent %v", reason, ss.Silent(), tc.wantReason, tc.wantSilent)
			}
		})
	}
}
