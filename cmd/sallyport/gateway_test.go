//go:build !agentonly

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sallyport/sallyport/gateway"
	"github.com/sallyport/sallyport/internal/config"
)

// TestConfigRefusesWhatTheRouterRefuses: every pair of apps on one host
// that config validation accepts is accepted by the gateway's router too,
// so a conflict is reported with file, line and key (at start and on
// SIGHUP) rather than by the router without them. Before the fix "/api"
// and "/api/" passed validation and failed at start.
func TestConfigRefusesWhatTheRouterRefuses(t *testing.T) {
	prefixes := []string{"", "/", "//", "/api", "/api/", "/api//", "/API", "/api/v1", "/api/v1/"}
	for _, a := range prefixes {
		for _, b := range prefixes {
			yaml := fmt.Sprintf("apps:\n"+
				"  - {name: a, hosts: [a.com], backend: \"http://127.0.0.1:1\", group: g, path_prefix: %q}\n"+
				"  - {name: b, hosts: [A.com], backend: \"http://127.0.0.1:1\", group: g, path_prefix: %q}\n", a, b)
			cfg, cfgErr := config.ParseGateway("gateway.yaml", []byte(yaml))
			var routerErr error
			if cfgErr == nil {
				routes, err := appRoutes(cfg, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, routerErr = gateway.NewRouter(routes)
			}
			if routerErr != nil {
				t.Errorf("prefixes %q and %q: the config accepts them, the router refuses them: %v", a, b, routerErr)
			}
			if cfgErr != nil && !strings.HasPrefix(cfgErr.Error(), "gateway.yaml:3: apps[1].hosts[0]: ") {
				t.Errorf("prefixes %q and %q: error without file, line and key: %v", a, b, cfgErr)
			}
		}
	}
}

// TestListenErrorNamesTheSetting: a listener that cannot bind is reported
// at its setting, with file, line and what to do. Before the fix the error
// named neither ("gateway: public listener: listen tcp ...").
func TestListenErrorNamesTheSetting(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ name, admin, want string }{
		{"port in use", taken.Addr().String(),
			"admin.addr: listen tcp " + taken.Addr().String() + ": bind: address already in use; another process uses the port"},
		// TEST-NET-1 (RFC 5737) is no address of this machine.
		{"address not here", "192.0.2.1:0", "admin.addr: listen tcp 192.0.2.1:0: bind: cannot assign requested address; " +
			"the host is not an address of this machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "gateway.yaml")
			yaml := fmt.Sprintf("data_dir: %s\npublic: {addr: \"127.0.0.1:0\"}\ntunnel: {addr: \"127.0.0.1:0\"}\nadmin:\n  addr: %q\n",
				filepath.Join(dir, "data"), tc.admin)
			if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.LoadGateway(file)
			if err != nil {
				t.Fatal(err)
			}
			settings, err := gatewayConfig(cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			st, err := openStore(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			settings.Store = st
			gw, err := gateway.New(settings)
			if err != nil {
				t.Fatal(err)
			}
			err = listen(gw, cfg)
			if want := file + ":5: " + tc.want; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("listen error:\n %v\nwant it to start with\n %s", err, want)
			}
		})
	}
}
