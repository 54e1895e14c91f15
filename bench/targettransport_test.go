package bench

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestTargetRunNamesNoTransport: a --target run starts no tunnel, so its
// settings name no transport; they used to say "grpc", the default of the
// relay the harness would have started, as if the target had been
// measured over it. A run that starts the relay still names its transport.
func TestTargetRunNamesNoTransport(t *testing.T) {
	srv := httptest.NewServer(BackendHandler())
	defer srv.Close()
	rep, err := Run(t.Context(), Config{
		Scenarios: []string{"small"}, Duration: 50 * time.Millisecond, Rounds: 1, Warmup: -1, Concurrency: 1,
		Target: srv.URL, Host: "relay.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if rep.Mode != ModeTarget || !strings.Contains(b.String(), `"transport": "",`) {
		t.Errorf("target run, mode %q: settings.transport %q, want \"\":\n%s", rep.Mode, rep.Settings.Transport, b.String())
	}
	for _, mode := range []string{ModeProcesses, ModeInProcess} {
		if got := newReport(&Config{}, mode).Settings.Transport; got != TransportGRPC {
			t.Errorf("%s mode: settings.transport %q, want %q", mode, got, TransportGRPC)
		}
		if got := newReport(&Config{Transport: TransportYamux}, mode).Settings.Transport; got != TransportYamux {
			t.Errorf("%s mode with yamux: settings.transport %q, want %q", mode, got, TransportYamux)
		}
	}
}
