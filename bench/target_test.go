package bench

import (
	"strings"
	"testing"
)

// TestTargetMistakes: a --target or --direct-target that is not an
// http:// base URL is refused with the flag and the form to give. A bare
// host:port used to fail with url.Parse's words: `bench: target: parse
// "127.0.0.1:18180": first path segment in URL cannot contain colon`.
func TestTargetMistakes(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "127.0.0.1:18180"}, `--target "127.0.0.1:18180": want http://host:port`},
		{Config{Target: "localhost:18180"}, `--target "localhost:18180": want http://host:port`},
		{Config{Target: "https://127.0.0.1:18180"}, `--target "https://127.0.0.1:18180": want http://host:port`},
		{Config{Target: "http://127.0.0.1:18180/app"}, `--target "http://127.0.0.1:18180/app": give only scheme, host and port; scenarios choose the path`},
		{Config{Target: "http://127.0.0.1:18180", DirectTarget: "127.0.0.1:8080"}, `--direct-target "127.0.0.1:8080": want http://host:port`},
	} {
		err := (&stack{}).addTargets(&tc.cfg)
		if err == nil || err.Error() != tc.want {
			t.Errorf("target %q, direct %q: %v\nwant %q", tc.cfg.Target, tc.cfg.DirectTarget, err, tc.want)
		}
	}
	st := &stack{}
	if err := st.addTargets(&Config{Target: "http://127.0.0.1:18180/", DirectTarget: "http://127.0.0.1:8080"}); err != nil || len(st.paths) != 2 {
		t.Fatalf("good targets: %v, %d paths", err, len(st.paths))
	}
}

// TestTargetProcessMistakes: roles outside TargetRoles, processes that do
// not exist and processes without a target are refused before any load.
func TestTargetProcessMistakes(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "http://127.0.0.1:9", TargetPIDs: map[string]int{"frps": 1}}, `target process role "frps": want one of gateway, agent, backend`},
		{Config{TargetPIDs: map[string]int{RoleAgent: 1}}, "target processes are measured in target mode, not inprocess"},
		{Config{Target: "http://127.0.0.1:9", TargetPIDs: map[string]int{RoleAgent: -3}}, "target's agent process: pid -3: want a process id above 0"},
	} {
		_, err := Run(t.Context(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v\nwant %q", tc.cfg.TargetPIDs, err, tc.want)
		}
	}
}
