//go:build !agentonly

package main

import (
	"strings"
	"testing"
)

// TestAdminIDArgsSayWhatToGive: `sallyport connector revoke` and `sallyport
// token delete` without an ID (or with two) say which ID to give and where
// to find it. They used to say only "accepts 1 arg(s), received 0".
func TestAdminIDArgsSayWhatToGive(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"connector", "revoke"}, "sallyport connector list"},
		{[]string{"connector", "revoke", "a", "b"}, "sallyport connector list"},
		{[]string{"token", "delete"}, "sallyport token list"},
	} {
		out, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v = %q, %v; want an error naming %q", tc.args, out, err, tc.want)
		}
	}
}
