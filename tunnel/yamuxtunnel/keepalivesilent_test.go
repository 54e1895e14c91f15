package yamuxtunnel

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// TestKeepaliveEndedSaysSo: a session that its keepalive closed (nothing
// from the peer after a ping: its host or path died, or it hangs) says so
// (muxtunnel.KeepaliveEnder), so that the session's end is logged as the
// keepalive's and counted as silent, not "closed by the agent" and lost; a
// session closed otherwise does not.
func TestKeepaliveEndedSaysSo(t *testing.T) {
	for _, hung := range []bool{true, false} {
		a, b := net.Pipe()
		lc := newLifeConn(a)
		s, err := yamux.Server(lc, config(nil))
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(s, a, lc)
		// The peer reads what comes and answers nothing.
		go func() { _, _ = io.Copy(io.Discard, b) }()
		if hung {
			go keepalive(s, lc, 10*time.Millisecond, 10*time.Millisecond, zap.NewNop())
		} else {
			c.Close("")
		}
		<-c.Done()
		quiet, ended := c.KeepaliveEnded()
		if ended != hung || (hung && quiet <= 0) {
			t.Errorf("peer hung: %v; KeepaliveEnded() = %v, %v", hung, quiet, ended)
		}
		b.Close()
	}
}
