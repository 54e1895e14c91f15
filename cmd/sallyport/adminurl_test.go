//go:build !agentonly

package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAdminURLMistakes: the admin commands say what is wrong with an
// --admin-url that is the bare address of admin.addr, and with one that
// names a server that is not the admin API (the gateway's public
// listener, which answers 404 no-route). They used to say `parse
// "127.0.0.1:9090/api/v1/tokens": first path segment in URL cannot contain
// colon`, and `admin API: 404 Not Found` (the docwalk helper's run). A
// 401 also names the case of a gateway without an admin token, whose
// refusal looks the same (it said only to check the token against
// admin.token_file, which such a gateway does not have).
func TestAdminURLMistakes(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "adminurl-Secret-5b1e")
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Sallyport-Error", "no-route")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("<!doctype html><p>No application is published at this address.</p>"))
	}))
	defer public.Close()
	noToken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	defer noToken.Close()
	bare := strings.TrimPrefix(public.URL, "http://")
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{bare, []string{`--admin-url "` + bare + `"`, "want the URL of the gateway's admin.addr, such as http://127.0.0.1:9090"}},
		{"localhost:9090", []string{`--admin-url "localhost:9090"`, "such as http://127.0.0.1:9090"}},
		{"ftp://127.0.0.1:9090", []string{`--admin-url "ftp://127.0.0.1:9090"`, "such as http://"}},
		{public.URL, []string{public.URL + " answered 404 Not Found", "must name the gateway's admin.addr", "not its public.addr"}},
		{noToken.URL, []string{"refused the admin token (401)", "a gateway started without an admin token refuses every call"}},
	} {
		for _, args := range [][]string{{"token", "list"}, {"connector", "list"}} {
			_, err := runCLI(t, append(args, "--admin-url", tc.url)...)
			if err == nil {
				t.Errorf("%v --admin-url %s: no error", args, tc.url)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v --admin-url %s: %v; want it to say %q", args, tc.url, err, w)
				}
			}
		}
	}
}
