package e2e

import (
	"context"
	"testing"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestTLSRefusalsCounted: client certificates the gateway refuses in the
// TLS handshake (of another connector CA) are counted in
// session_refusals_total under reason certificate, every one, also those
// whose log line the rate limit held back. They were not counted at all.
func TestTLSRefusalsCounted(t *testing.T) {
	tr := newTrustRig(t, nil)
	other := newTrustRig(t, nil)
	foreign, err := agent.Enroll(context.Background(), agent.EnrollConfig{Gateway: other.Tunnel, TLS: other.tunnelTLS(), Token: testrig.Token})
	if err != nil {
		t.Fatal(err)
	}
	for range 25 {
		if err := tr.dialWith(foreign); err == nil {
			t.Fatal("a certificate of another CA was accepted")
		}
	}
	s := scrape(t, tr.AdminURL()+"/metrics")
	wantSeries(t, s, map[string]float64{`sallyport_gateway_session_refusals_total{reason="certificate"}`: 25})
}
