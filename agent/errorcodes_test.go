package agent

import (
	"testing"

	"github.com/sallyport/sallyport/internal/constscan"
)

// TestErrorCodesHaveOutcomes: every error code the agent answers with is
// an outcome of exchanges_total; backend-1xx-limit was missing and counted
// as backend-unreachable, which blames reachability.
func TestErrorCodesHaveOutcomes(t *testing.T) {
	for name, code := range constscan.Strings(t, "errors.go", "Code", 4) {
		if got := errorOutcomes[errorOutcome(code)]; got != code {
			t.Errorf("%s (%q) is counted as outcome %q", name, code, got)
		}
	}
}
