package gateway

import (
	"testing"

	"github.com/sallyport/sallyport/internal/constscan"
)

// TestErrorCodesHaveMetricLabels: every X-Sallyport-Error code is a value
// of errors_total's code label; backend-1xx-limit was missing and counted
// as "other".
func TestErrorCodesHaveMetricLabels(t *testing.T) {
	for name, code := range constscan.Strings(t, "errors.go", "Code", 10) {
		if errorCodeLabel(errorCodeIndex(code)) != code {
			t.Errorf("%s (%q) is counted as %q in errors_total", name, code, errorCodeLabel(errorCodeIndex(code)))
		}
	}
}
