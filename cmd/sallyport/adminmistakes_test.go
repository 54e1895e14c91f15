//go:build !agentonly

package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/agent"
	"github.com/sallyport/sallyport/gateway"
)

// tokenEcho is an admin API that answers GET /api/v1/tokens with [] for
// the token good and 401 for any other; the tokens it got go to seen.
func tokenEcho(t *testing.T, good string, seen chan<- string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		select {
		case seen <- tok:
		default:
		}
		if tok != good {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestAdminTokenFlagWinsOverEnv: --admin-token-file, given on the command
// line, wins over SALLYPORT_ADMIN_TOKEN, and a file it names that does
// not exist is an error; a 401 names the source of the token it sent. The
// variable used to win, even over a file that does not exist (rc 0), and
// the 401 said to check both (docwalk3 B7).
func TestAdminTokenFlagWinsOverEnv(t *testing.T) {
	const fromFile, fromEnv = "file-Token-0b8e7f31aa", "env-Token-55c1d9e0b7"
	file := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(file, []byte(fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SALLYPORT_ADMIN_TOKEN", fromEnv)
	seen := make(chan string, 1)

	// The flag's file is sent, not the variable.
	url := tokenEcho(t, fromFile, seen)
	if _, err := runCLI(t, "token", "list", "--admin-url", url, "--admin-token-file", file); err != nil {
		t.Errorf("token list with --admin-token-file: %v", err)
	}
	if got := <-seen; got != fromFile {
		t.Errorf("sent the token %q, want the file's", got)
	}

	// A file that does not exist is an error, whatever the variable.
	missing := filepath.Join(t.TempDir(), "nonexistent")
	_, err := runCLI(t, "token", "list", "--admin-url", url, "--admin-token-file", missing)
	if err == nil || !strings.Contains(err.Error(), "--admin-token-file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("--admin-token-file %s: %v; want an error naming the file", missing, err)
	}
	select {
	case got := <-seen:
		t.Errorf("with a missing --admin-token-file the CLI sent %q", got)
	default:
	}

	// The 401 names the source used.
	other := tokenEcho(t, "another", seen)
	_, err = runCLI(t, "token", "list", "--admin-url", other, "--admin-token-file", file)
	<-seen
	if err == nil || !strings.Contains(err.Error(), "(401) from --admin-token-file "+file) {
		t.Errorf("401 with the file: %v; want it to name --admin-token-file %s", err, file)
	}
	_, err = runCLI(t, "token", "list", "--admin-url", other)
	<-seen
	if err == nil || !strings.Contains(err.Error(), "(401) from SALLYPORT_ADMIN_TOKEN") {
		t.Errorf("401 with the variable: %v; want it to name SALLYPORT_ADMIN_TOKEN", err)
	}
}

// TestAdminURLWrongProtocol: https:// against the admin API, which speaks
// plain HTTP, and the address of a port that does not speak HTTP (the
// tunnel listener closes the connection) say so. They said "server gave
// HTTP response to HTTPS client (is the gateway running? see admin.addr)"
// and "EOF (is the gateway running?)" (docwalk3 B11).
func TestAdminURLWrongProtocol(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "wrongproto-Secret-3a9d")
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("[]")) }))
	defer plain.Close()
	// Closes each connection once the request is in, as a TLS listener
	// does with plain HTTP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{"https://" + strings.TrimPrefix(plain.URL, "http://"), []string{"admin API speaks plain HTTP, not HTTPS: use http://"}},
		{"http://" + ln.Addr().String(), []string{"this port does not speak HTTP (perhaps it is the gateway's tunnel.addr)",
			"must name the gateway's admin.addr"}},
	} {
		_, err := runCLI(t, "token", "list", "--admin-url", tc.url)
		if err == nil {
			t.Errorf("--admin-url %s: no error", tc.url)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("--admin-url %s: %v; want it to say %q", tc.url, err, w)
			}
		}
		if strings.Contains(err.Error(), "is the gateway running") {
			t.Errorf("--admin-url %s: %v; asks whether the gateway runs", tc.url, err)
		}
	}
}

// TestConnectorRevokeAlreadyRevoked: `connector revoke` of a revoked
// connector says when it was revoked instead of "revoked connector"
// again, with exit status 0.
func TestConnectorRevokeAlreadyRevoked(t *testing.T) {
	t.Setenv("SALLYPORT_ADMIN_TOKEN", "revoke-Secret-71c2")
	at := time.Date(2026, 11, 27, 18, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(gateway.APIRevoked{APIConnector: gateway.APIConnector{ID: "c1", Name: "edge", Group: "g",
			Revoked: &at}, AlreadyRevoked: true})
	}))
	defer srv.Close()
	out, err := runCLI(t, "connector", "revoke", "c1", "--admin-url", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := "connector c1 (edge, group g) was already revoked at 2026-11-27T18:00:00Z\n"; out != want {
		t.Errorf("revoke of a revoked connector printed %q, want %q", out, want)
	}
}

// TestCARotateRelativeDataDir: a config whose data_dir is relative, used
// from another directory, names the working directory it was taken from.
// It said only "no Sallyport store in ./data" (docwalk3 B11).
func TestCARotateRelativeDataDir(t *testing.T) {
	cfgDir, elsewhere := t.TempDir(), t.TempDir()
	cfg := filepath.Join(cfgDir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("public: {addr: \"127.0.0.1:0\"}\ntunnel: {addr: \"127.0.0.1:0\"}\n"+
		"admin: {addr: \"127.0.0.1:0\"}\ndata_dir: ./data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(elsewhere)
	wd, err := os.Getwd() // elsewhere, with symbolic links resolved as the CLI sees it
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "gateway", "ca", "rotate", "--config", cfg)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"no Sallyport store in ./data", "taken from the working directory " + wd,
		filepath.Join(wd, "data"), "not from the config file's directory"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%v; want it to say %q", err, w)
		}
	}
}

// TestSaveGatewayTrustAtomic: the gateway pin and CA copy that enrollment
// saves are written whole, through a synced temporary file, with mode
// 0644 whatever was there: os.WriteFile kept the mode of a file already
// there (0600 here) and could leave a half-written file after a crash.
func TestSaveGatewayTrustAtomic(t *testing.T) {
	dir := t.TempDir()
	pin := filepath.Join(dir, agent.GatewayPinFile)
	if err := os.WriteFile(pin, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := saveGatewayTrust(dir, "", "sha256:abcd", ""); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(pin)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(pin); string(b) != "sha256:abcd\n" || fi.Mode().Perm() != 0o644 {
		t.Errorf("pin %q mode %v; want the fingerprint, 0644", b, fi.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
