package groupname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, s := range []string{"default", "a", "Team-A", "eu.west_1", "9", strings.Repeat("a", MaxLen)} {
		if !Valid(s) {
			t.Errorf("Valid(%q) = false", s)
		}
	}
	for _, s := range []string{"", "team a", "default ", " default", "-a", ".a", "_a", "a/b", "grüppe", "a\n", strings.Repeat("a", MaxLen+1)} {
		if Valid(s) {
			t.Errorf("Valid(%q) = true", s)
		}
	}
}
