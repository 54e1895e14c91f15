package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestPreauthUpgradeCannotSetGatewayCookies: an app's Set-Cookie for one of
// the gateway's cookies is dropped on the upgrade path too (requests with
// "Connection: Upgrade" go through the ReverseProxy), whether the backend
// switches protocols or not. Before, the ReverseProxy copied it: an app
// without sign-in planted "sallyport_session=planted" by answering a
// WebSocket handshake, which its own page's script can start.
func TestPreauthUpgradeCannotSetGatewayCookies(t *testing.T) {
	backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sallyport_session=planted; Path=/")
		w.Header().Add("Set-Cookie", "__Host-sallyport_session=planted; Path=/; Secure")
		w.Header().Add("Set-Cookie", "app=kept")
	}))
	a := newAuthRig(t, preauth.Policy{}, nil, func(c *gateway.Config) {
		c.Routes = append(c.Routes, gateway.Route{App: "plant", Hosts: []string{"plant.test"},
			Backend: testrig.MustURL(t, backend.URL), Group: testrig.Group})
	})
	for _, hdr := range []string{"", "Connection: Upgrade\r\nUpgrade: websocket\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: plant.test\r\n%s\r\n", hdr)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"app=kept"}) {
			t.Errorf("%q: client got Set-Cookie %q, want only the app's own", hdr, got)
		}
	}
}
