package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/rawsock"
)

// TestRawSocketsEnv: `sallyport gateway` and `sallyport agent` (and the
// agent-only build's agent) read SALLYPORT_RAW_SOCKETS before anything
// else: a value other than on or off stops them with the variable and its
// values named; off is taken (the next error is the missing config file's)
// and turns the raw socket calls off.
func TestRawSocketsEnv(t *testing.T) {
	t.Cleanup(func() { rawsock.Set("") })
	var names []string
	for _, c := range newRootCmd().Commands() {
		if (c.Name() == "gateway" || c.Name() == "agent") && !c.Hidden { // the agent-only build's gateway is a hidden stub
			names = append(names, c.Name())
		}
	}
	if !slices.Contains(names, "agent") {
		t.Fatalf("commands %v: no agent", names)
	}
	run := func(args ...string) error {
		root := newRootCmd()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(append(args, "--log-level", "error"))
		return root.ExecuteContext(context.Background())
	}
	missing := t.TempDir() + "/missing.yaml"
	for _, name := range names {
		t.Setenv(rawsock.Env, "sometimes")
		err := run(name, "--config", missing)
		if err == nil || !strings.Contains(err.Error(), `SALLYPORT_RAW_SOCKETS="sometimes": want on or off`) {
			t.Errorf("%s with SALLYPORT_RAW_SOCKETS=sometimes: %v, want the variable's error", name, err)
		}
		t.Setenv(rawsock.Env, "off")
		err = run(name, "--config", missing)
		if err == nil || strings.Contains(err.Error(), rawsock.Env) || !strings.Contains(err.Error(), "missing.yaml") {
			t.Errorf("%s with SALLYPORT_RAW_SOCKETS=off: %v, want the config file's error", name, err)
		}
		if rawsock.On() {
			t.Errorf("%s with SALLYPORT_RAW_SOCKETS=off: raw socket calls still on", name)
		}
		rawsock.Set("")
	}
}
