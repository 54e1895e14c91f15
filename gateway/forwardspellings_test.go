package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
	"github.com/sallyport/sallyport/tunnel"
)

// TestForwardHeaderSpellings: a client's forwarding headers reach no app
// in spellings that lighttpd (CGI, FastCGI, SCGI) and Apache httpd before
// 2.4 fold onto the gateway's own (every byte but letters and digits
// becomes "_": X.Forwarded.For is HTTP_X_FORWARDED_FOR). Before, only "_"
// was recognised, and X.Forwarded.For, X~Real~Ip and X.Request.Id reached
// the agent next to the gateway's X-Forwarded-For and X-Request-Id.
func TestForwardHeaderSpellings(t *testing.T) {
	s := &scriptSession{frames: []*tunnel.Frame{{Response: &tunnelv1.ResponseHead{Status: 204}, End: true}}}
	h, st := forwardRig(s)
	r := httptest.NewRequest("GET", "http://app.test/x", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	r.Header = http.Header{
		"X.forwarded.for": {"6.6.6.6"}, "X~real~ip": {"6.6.6.6"}, "X.request.id": {"forged"},
		"X+forwarded+proto": {"https"}, "True.client.ip": {"6.6.6.6"}, "X.original.url": {"/admin"}, "X-Kept": {"yes"},
	}
	w := httptest.NewRecorder()
	h.serveRelay(w, r, st)
	got := wireHeader(s.head(t).GetHeaders())
	for k, vv := range got {
		switch k {
		case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id", "User-Agent", "X-Kept":
		default:
			t.Errorf("the client's %s: %q reached the agent", k, vv)
		}
	}
	if got.Get("X-Forwarded-For") != "192.0.2.7" || got.Get("X-Kept") != "yes" {
		t.Errorf("headers %v", got)
	}
}
