package config

import (
	"strings"
	"testing"
)

// TestDidYouMeanTopLevel: an unknown key at the top of a config gets the
// nearest known key as a hint, as a nested one does, in the gateway's
// config and in the agent's.
func TestDidYouMeanTopLevel(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"tunnell:\n  addr: \":8443\"\n", `gateway.yaml:1: unknown key "tunnell" (did you mean "tunnel"?)`},
		{"publc:\n  addr: \":443\"\n", `gateway.yaml:1: unknown key "publc" (did you mean "public"?)`},
		{"data_dir: x\nstor: {}\n", `gateway.yaml:2: unknown key "stor" (did you mean "store"?)`},
	} {
		if _, err := ParseGateway("gateway.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %s", tc.yaml, err, tc.want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{minimalAgent + "gatway: y\n", `agent.yaml:3: unknown key "gatway" (did you mean "gateway"?)`},
		{minimalAgent + "transprt: quic\n", `agent.yaml:3: unknown key "transprt" (did you mean "transport"?)`},
	} {
		if _, err := ParseAgent("agent.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %s", tc.yaml, err, tc.want)
		}
	}
}
