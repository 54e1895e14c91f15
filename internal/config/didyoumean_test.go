package config

import (
	"strings"
	"testing"
	"time"
)

// TestDidYouMeanPluralAndPrefix: an unknown key that is the singular (or
// plural) of a known one, or its beginning, gets a "did you mean" hint.
// "trusted_proxy" is 3 edits from "trusted_proxies", beyond the edit
// distance of 2, and used to get no hint while "postgress" got one.
func TestDidYouMeanPluralAndPrefix(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"public:\n  trusted_proxy: [10.0.0.0/8]\n", `gateway.yaml:2: unknown key "trusted_proxy" in public (did you mean "trusted_proxies"?)`},
		{"public:\n  max_stalled: 5\n", `gateway.yaml:2: unknown key "max_stalled" in public (did you mean "max_stalled_exchanges"?)`},
		{"store:\n  postgress: postgres://db/gw\n", `gateway.yaml:2: unknown key "postgress" in store (did you mean "postgres"?)`},
		{"apps:\n  - name: a\n    host: [a.example.com]\n", `gateway.yaml:3: unknown key "host" in apps[0] (did you mean "hosts"?)`},
	} {
		_, err := ParseGateway("gateway.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %s", tc.yaml, err, tc.want)
		}
	}
	// A beginning that two keys share gets no guess.
	if got := closest("max_s", []string{"max_stalled_exchanges", "max_streams_per_session"}); got != "" {
		t.Errorf(`closest("max_s") = %q, want no guess`, got)
	}
	if got := closest("zzz", []string{"addr"}); got != "" {
		t.Errorf(`closest("zzz") = %q, want no guess`, got)
	}
}

// TestShutdownDelaySetting: shutdown_delay is read as a duration, zero by
// default, and a negative one is refused at its line.
func TestShutdownDelaySetting(t *testing.T) {
	g, err := ParseGateway("gateway.yaml", []byte("shutdown_delay: 15s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g.ShutdownDelay != 15*time.Second {
		t.Errorf("shutdown_delay = %v, want 15s", g.ShutdownDelay)
	}
	g, err = ParseGateway("gateway.yaml", []byte("data_dir: x\n"))
	if err != nil || g.ShutdownDelay != 0 {
		t.Errorf("default shutdown_delay = %v (%v), want 0", g.ShutdownDelay, err)
	}
	_, err = ParseGateway("gateway.yaml", []byte("data_dir: x\nshutdown_delay: -5s\n"))
	if want := "gateway.yaml:2: shutdown_delay: must not be negative"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("negative shutdown_delay: %v, want %s", err, want)
	}
}
