package e2e

import (
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestQUICLossyPathExactBodies: over a UDP path that loses and reorders
// datagrams both ways (seeded, so each run drops the same ones), the QUIC
// session comes up and bodies larger than the windows' first grants
// arrive byte for byte both ways.
func TestQUICLossyPathExactBodies(t *testing.T) {
	rig, path := lossyQUICRig(t, 3)
	path.Set(testrig.Impairment{Loss: 0.05, Reorder: 0.05, ReorderBy: 2 * time.Millisecond})
	rig.StartAgent(func(c *agent.Config) { c.Gateway = path.Addr() })
	wantExactTransfers(t, rig, 1<<20)
	if st := path.Stats(); st.Lost == 0 || st.Reordered == 0 {
		t.Fatalf("the path lost or reordered nothing (%+v): the test proves nothing", st)
	}
}
