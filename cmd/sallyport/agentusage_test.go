package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/testrig"
)

// TestBinaryAgentOnlyUsageName: the agent-only build's --help names its
// own binary, sallyport-agent, in its usage lines, as a user types it. It
// used to show `sallyport [command]`, a binary not installed beside it.
func TestBinaryAgentOnlyUsageName(t *testing.T) {
	testrig.SkipShort(t, "builds the binary")
	slim, err := buildAgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--help"}, {"agent", "--help"}, {"agent", "enroll", "--help"}} {
		out, err := exec.Command(slim, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("sallyport-agent %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		usage := string(out)
		if !strings.Contains(usage, "\n  sallyport-agent ") || strings.Contains(usage, "\n  sallyport ") {
			t.Errorf("sallyport-agent %s: usage lines do not name sallyport-agent:\n%s", strings.Join(args, " "), usage)
		}
	}
}
