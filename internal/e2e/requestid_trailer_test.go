package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

// TestRequestIDTrailerRemoved: a client's X-Request-Id sent as a request
// trailer reaches no app, from a trusted proxy or not: the request id is the
// gateway's (X-Request-Id in the head), and an app that reads trailers must
// not get a second one the client picked (X_Request_Id and X-Forwarded-For
// were removed from trailers already).
func TestRequestIDTrailerRemoved(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted proxy %v", trusted), func(t *testing.T) {
			backend := startLoopbackBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "head=%s trailer=%q", r.Header.Get(gateway.RequestIDHeader), r.Trailer[gateway.RequestIDHeader])
			}))
			o := testrig.Options{Routes: []gateway.Route{
				{App: "t", Hosts: []string{"trailer.test"}, Backend: testrig.MustURL(t, backend.URL)},
			}}
			if trusted {
				o.Gateway = func(c *gateway.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
			}
			rig := testrig.New(t, o)
			rig.StartAgent(nil)
			req, _ := http.NewRequest("POST", rig.URL+"/", io.MultiReader(strings.NewReader("body")))
			req.Host = "trailer.test"
			req.ContentLength = -1 // chunked, so trailers can follow
			req.Header.Set(gateway.RequestIDHeader, "lb-id")
			req.Trailer = http.Header{gateway.RequestIDHeader: {"mine"}}
			res, err := rig.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || strings.Contains(string(b), "mine") {
				t.Errorf("%d %s; want the client's trailer X-Request-Id removed", res.StatusCode, b)
			}
			if trusted != strings.HasPrefix(string(b), "head=lb-id ") {
				t.Errorf("backend saw %s; want the head's X-Request-Id kept only from a trusted proxy", b)
			}
		})
	}
}
