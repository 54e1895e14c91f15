package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// expiredAgent is an agent of gw.example.com:8443 with dataDir whose
// certificate expired an hour ago.
func expiredAgent(t *testing.T, dataDir string) *Agent {
	t.Helper()
	creds := &Credentials{Cert: tls.Certificate{Leaf: &x509.Certificate{NotAfter: time.Now().Add(-time.Hour)}},
		ConnectorID: "c1", Group: "web"}
	a, err := New(Config{Gateway: "gw.example.com:8443", DataDir: dataDir, Credentials: creds, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	a.creds.Store(creds)
	return a
}

// TestExpiredHintTrustsTheGateway: the command the expired-certificate
// error gives enrolls against the gateway as the agent trusted it: a
// fingerprint or CA file the earlier enrollment saved in the data
// directory is passed on (without it, enrolling at a gateway with a
// self-signed tunnel certificate failed: "its tunnel certificate is not
// trusted"), and the token comes from a file.
func TestExpiredHintTrustsTheGateway(t *testing.T) {
	const pin = "sha256:d00902d66c921bc3813c0dee9f3cafd3c0655801adf0f468a316abc3ef27ffff"
	pinned, withCA, plain := t.TempDir(), filepath.Join(t.TempDir(), "my agent"), t.TempDir()
	if err := os.WriteFile(filepath.Join(pinned, GatewayPinFile), []byte(pin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(withCA, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withCA, GatewayCAFile), []byte("PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dataDir, want string }{
		{"pinned", pinned, "sallyport agent enroll --gateway gw.example.com:8443 --token-file FILE --data-dir " + pinned +
			" --gateway-fingerprint " + pin + "`"},
		{"gateway-ca.pem", withCA, "sallyport agent enroll --gateway gw.example.com:8443 --token-file FILE --data-dir '" + withCA +
			"' --gateway-ca '" + filepath.Join(withCA, GatewayCAFile) + "'`"},
		{"system roots", plain, "sallyport agent enroll --gateway gw.example.com:8443 --token-file FILE --data-dir " + plain + "`"},
		{"no data dir", "", "sallyport agent enroll --gateway gw.example.com:8443 --token-file FILE --data-dir DIR`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := expiredAgent(t, tc.dataDir).checkExpiry()
			t.Logf("%v", err)
			if !errors.Is(err, ErrCertificateExpired) {
				t.Fatalf("checkExpiry = %v, want ErrCertificateExpired", err)
			}
			if !strings.Contains(err.Error(), "`sallyport token create --group web`") {
				t.Errorf("no token command for the group in %q", err)
			}
			if !strings.Contains(err.Error(), "`"+tc.want) {
				t.Errorf("checkExpiry = %q\nwant the command `%s", err, tc.want)
			}
		})
	}
}

// TestExpiredHintFromConfig: an agent that runs from a config file is
// told `agent enroll --config` with that file, which brings the config's
// gateway, data_dir, name, proxy and gateway_ca_file along, and the trust
// saved in the data directory (a pin here), which `agent enroll --config`
// reads as the agent does: no trust flag. Without a config file, its
// gateway_ca_file is passed as --gateway-ca.
func TestExpiredHintFromConfig(t *testing.T) {
	const pin = "sha256:00ff"
	pinned, plain := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(pinned, GatewayPinFile), []byte(pin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  enrollSource
		want string
	}{
		{"config", enrollSource{configFile: "/etc/sallyport/agent.yaml", gateway: "gw:8443", dataDir: plain},
			"sallyport agent enroll --config /etc/sallyport/agent.yaml --token-file FILE"},
		{"config, pinned", enrollSource{configFile: "/etc/sallyport/agent.yaml", gateway: "gw:8443", dataDir: pinned},
			"sallyport agent enroll --config /etc/sallyport/agent.yaml --token-file FILE"},
		{"config with gateway_ca_file", enrollSource{configFile: "my agent.yaml", gatewayCAFile: "/etc/gw.pem",
			gateway: "gw:8443", dataDir: pinned},
			"sallyport agent enroll --config 'my agent.yaml' --token-file FILE"},
		{"gateway_ca_file, no config", enrollSource{gatewayCAFile: "/etc/gw.pem", gateway: "gw:8443", dataDir: pinned},
			"sallyport agent enroll --gateway gw:8443 --token-file FILE --data-dir " + pinned + " --gateway-ca /etc/gw.pem"},
	} {
		if got := enrollAgainCommand(tc.src); got != tc.want {
			t.Errorf("%s: %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// TestExpiredHintRelativeDataDir: an agent whose data_dir is relative
// (the default, ./data/agent) took it from its working directory; the
// command to enroll it again names it absolute, with --config too, so
// that run from another directory it enrolls into the agent's, with the
// trust saved there. Before, `agent enroll --config` run from elsewhere
// took data_dir from there: no saved trust (the system roots: "not
// trusted" for a self-signed tunnel certificate), and a certificate in a
// directory the agent does not read.
func TestExpiredHintRelativeDataDir(t *testing.T) {
	const pin = "sha256:00ff"
	t.Chdir(t.TempDir())
	if err := os.MkdirAll(filepath.Join("data", "agent"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("data", "agent", GatewayPinFile), []byte(pin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join("data", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  enrollSource
		want string
	}{
		{"config", enrollSource{configFile: "/etc/sallyport/agent.yaml", gateway: "gw:8443", dataDir: "./data/agent"},
			"sallyport agent enroll --config /etc/sallyport/agent.yaml --token-file FILE --data-dir " + abs},
		{"no config", enrollSource{gateway: "gw:8443", dataDir: "data/agent"},
			"sallyport agent enroll --gateway gw:8443 --token-file FILE --data-dir " + abs + " --gateway-fingerprint " + pin},
	} {
		if got := enrollAgainCommand(tc.src); got != tc.want {
			t.Errorf("%s: %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
