package gateway

import (
	"crypto/tls"
	"strings"
	"testing"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestEnrollRefusesFormatCharacters: a name with a bidirectional override
// shows reordered in `sallyport connector list` ("web\u202egnp.exe" reads
// as "webexe.png"), and one with a zero-width space reads as another
// connector's name without matching it, so the same-name warning stays
// silent. Both are refused like control characters; the line and paragraph
// separators too. Plain non-ASCII names still enroll.
func TestEnrollRefusesFormatCharacters(t *testing.T) {
	g, err := New(Config{TunnelTLS: &tls.Config{}, Tokens: []Token{{Token: "spt_config", Group: "g"}}, EnrollFailures: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer g.closeOwnStore() // never served
	e := &enrollService{g: g}
	for _, name := range []string{
		"web\u202egnp.exe", // right-to-left override
		"web\u2066x\u2069", // isolate
		"we\u200bb",        // zero-width space
		"host\ufeff",       // byte order mark
		"a\u2028b",         // line separator
		"a\u2029b",         // paragraph separator
	} {
		_, err := e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: "spt_config", Csr: testCSR(t), Name: name})
		if status.Code(err) != grpccodes.InvalidArgument || !strings.Contains(err.Error(), "format characters") {
			t.Errorf("name %+q: %v, want InvalidArgument naming format characters", name, err)
		}
	}
	for _, name := range []string{"Büro-Rechner", "сервер-1", "東京"} {
		if _, err := e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: "spt_config", Csr: testCSR(t), Name: name}); err != nil {
			t.Errorf("name %q: %v, want enrolled", name, err)
		}
	}
}
