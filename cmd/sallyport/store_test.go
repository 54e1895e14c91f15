//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway/preauth"
	"github.com/sallyport/sallyport/internal/assertion"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pgtest"
	"github.com/sallyport/sallyport/internal/store"
)

// writeConfig writes a gateway config on loopback ports with extra
// appended, and returns its path.
func writeStoreConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	cfg := "public: {addr: \"127.0.0.1:0\"}\ntunnel: {addr: \"127.0.0.1:0\"}\nadmin: {addr: \"127.0.0.1:0\"}\n" +
		"data_dir: " + filepath.Join(dir, "data") + "\n" + extra
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGatewayStoreErrors: a store that cannot be used stops the start
// with the config file, the line and key of the setting, and what to
// check; no password is shown.
func TestGatewayStoreErrors(t *testing.T) {
	t.Setenv("SALLYPORT_TEST_EMPTY_DSN", "")
	for _, tc := range []struct {
		name, store string
		want        []string
	}{
		{"unreachable", "store:\n  postgres: \"postgres://gw:hunter2@127.0.0.1:1/gw?sslmode=disable&connect_timeout=5\"\n",
			[]string{"gateway.yaml:6: store.postgres: open store: cannot use PostgreSQL at 127.0.0.1:1", "check that the server runs"}},
		{"env unset", "store:\n  postgres_env: SALLYPORT_TEST_EMPTY_DSN\n",
			[]string{"gateway.yaml:6: store.postgres_env: the environment variable SALLYPORT_TEST_EMPTY_DSN is not set"}},
		{"file missing", "store:\n  postgres_file: /nonexistent/dsn\n",
			[]string{"gateway.yaml:6: store.postgres_file: open /nonexistent/dsn"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeStoreConfig(t, tc.store)
			for _, args := range [][]string{{"gateway", "--config", path}, {"gateway", "ca", "rotate", "--config", path}} {
				_, err := runCLI(t, args...)
				if err == nil {
					t.Fatalf("%v started", args)
				}
				got := strings.ReplaceAll(err.Error(), filepath.Dir(path)+"/", "")
				for _, w := range tc.want {
					if !strings.Contains(got, w) {
						t.Errorf("%v: %v; want it to say %q", args, err, w)
					}
				}
				if strings.Contains(got, "hunter2") {
					t.Errorf("%v shows the password: %v", args, err)
				}
			}
		})
	}
}

// TestCARotateOnPostgres: `gateway ca rotate --config` works on the
// PostgreSQL store the config names (here through postgres_env), not on
// data_dir, and its advice names --config again.
func TestCARotateOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	t.Setenv("SALLYPORT_TEST_STORE_DSN", dsn)
	path := writeStoreConfig(t, "store: {postgres_env: SALLYPORT_TEST_STORE_DSN}\n")
	out, err := runCLI(t, "gateway", "ca", "rotate", "--config", path)
	if err != nil || !strings.Contains(out, "2 CA(s) in the trust bundle") || !strings.Contains(out, "--retire-previous --config "+path) {
		t.Fatalf("ca rotate = %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "data", store.FileName)); err == nil {
		t.Fatal("ca rotate wrote a SQLite store in data_dir")
	}
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if cas, err := st.CAs(context.Background()); err != nil || len(cas) != 2 || !cas[1].Active {
		t.Fatalf("CAs in PostgreSQL = %d, %v", len(cas), err)
	}
	out, err = runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--config", path)
	if err != nil || !strings.Contains(out, "removed 1 previous") {
		t.Fatalf("ca rotate --retire-previous = %q, %v", out, err)
	}
}

// TestSessionKeySharedOnPostgres: with the store in PostgreSQL, replicas
// take the session cookie key from it, so a cookie of one is good at the
// others: the first puts the key of its session.key file there (users
// stay signed in when a gateway moves to PostgreSQL), the next, with no
// file of its own, gets the same key and writes no file.
func TestSessionKeySharedOnPostgres(t *testing.T) {
	open := pgOpener(t)
	first := filepath.Join(t.TempDir(), sessionKeyFile)
	had, err := preauth.LoadOrCreateKey(first)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := sessionKey(first, open())
	if err != nil || !bytes.Equal(k1, had) {
		t.Fatalf("the first replica's key = %x, %v; want its file's %x", k1, err, had)
	}
	second := filepath.Join(t.TempDir(), sessionKeyFile)
	k2, err := sessionKey(second, open())
	if err != nil || !bytes.Equal(k2, had) {
		t.Fatalf("the second replica's key = %x, %v; want the first's", k2, err)
	}
	if _, err := os.Stat(second); err == nil {
		t.Fatal("the second replica wrote a session.key file")
	}
	// Without a shared store, the file as before.
	own, err := sessionKey(second, nil)
	if err != nil || bytes.Equal(own, had) {
		t.Fatalf("key from a new file = %x, %v; want a new one", own, err)
	}
}

// TestAssertionKeysSharedOnPostgres: replicas on one database derive their
// assertion keys from one seed in it, so what one signs the other's JWKS
// verifies (each with its own key file, it did not: TestSignVerify's
// foreign key set); no key file is written; a damaged seed stops the start
// naming the row.
func TestAssertionKeysSharedOnPostgres(t *testing.T) {
	open := pgOpener(t)
	fileA := filepath.Join(t.TempDir(), assertionKeysFile)
	fileB := filepath.Join(t.TempDir(), assertionKeysFile)
	a, err := assertionKeys(fileA, open())
	if err != nil {
		t.Fatal(err)
	}
	b, err := assertionKeys(fileB, open())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.JWKS(), b.JWKS()) {
		t.Fatalf("two replicas publish different keys:\n%s\n%s", a.JWKS(), b.JWKS())
	}
	tok, err := a.Sign(assertion.Claims{Claims: jwt.Claims{Subject: "alice", Audience: jwt.Audience{"app"}}})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if c, err := assertion.Verify(tok, &set, "app", time.Now()); err != nil || c.Subject != "alice" {
		t.Errorf("signed at one replica, verified with the other's keys: %+v, %v", c, err)
	}
	for _, f := range []string{fileA, fileB} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("a replica wrote %s", f)
		}
	}
	// Without a shared store, the file as before.
	if _, err := assertionKeys(fileA, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fileA); err != nil {
		t.Errorf("no key file without a shared store: %v", err)
	}

	damaged := open()
	if _, err := damaged.Secret(context.Background(), assertionSeedName+"-x", func() (string, error) { return "", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := sharedBytes(damaged, assertionSeedName+"-x", assertion.MinSeed, nil, "cost"); err == nil ||
		!strings.Contains(err.Error(), `(secrets table, name "assertion-seed-x"): want 32 random bytes in base64; delete the row`) {
		t.Errorf("damaged seed: %v", err)
	}
}

// pgOpener returns a function that opens one more handle on the test's
// PostgreSQL database (one per replica), closed at the test's end.
func pgOpener(t *testing.T) func() *store.DB {
	dsn := pgtest.DSN(t)
	return func() *store.DB {
		st, err := store.OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}

// memSecrets is a shared store of secrets in memory.
type memSecrets map[string]string

func (m memSecrets) Secret(_ context.Context, name string, create func() (string, error)) (string, error) {
	if v, ok := m[name]; ok {
		return v, nil
	}
	v, err := create()
	if err == nil {
		m[name] = v
	}
	return v, err
}

// TestAgentMoveWaitByStore: a gateway whose store no replica shares does
// not wait at shutdown for its agents to move (they have nowhere to go,
// and the wait kept its public listener closed up to 5 s longer in every
// restart); one on a shared store keeps the default wait.
func TestAgentMoveWaitByStore(t *testing.T) {
	g, err := config.ParseGateway("gateway.yaml", []byte("data_dir: "+t.TempDir()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	lone, err := gatewayConfigShared(g, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lone.AgentMoveWait >= 0 {
		t.Errorf("lone gateway: AgentMoveWait %v, want negative (no wait)", lone.AgentMoveWait)
	}
	replica, err := gatewayConfigShared(g, zap.NewNop(), memSecrets{})
	if err != nil {
		t.Fatal(err)
	}
	if replica.AgentMoveWait != 0 {
		t.Errorf("replica: AgentMoveWait %v, want 0 (the default wait)", replica.AgentMoveWait)
	}
}
