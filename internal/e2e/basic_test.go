package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/testrig"
)

func TestSmallGET(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "yes")
		io.WriteString(w, "hello "+r.URL.Path+" "+r.Host)
	}))
	defer backend.Close()
	rig := testrig.New(t, testrig.Options{Routes: []gateway.Route{
		{App: "hello", Hosts: []string{"hello.test"}, PathPrefix: "/", Backend: testrig.MustURL(t, backend.URL)},
	}})
	rig.StartAgent(nil)
	c := rig.Client()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", rig.URL+"/x", nil)
		req.Host = "hello.test"
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(string(b), "hello /x 127.0.0.1:") || res.Header.Get("X-Backend") != "yes" {
			t.Fatalf("got %d %q %v", res.StatusCode, b, res.Header)
		}
	}
}
