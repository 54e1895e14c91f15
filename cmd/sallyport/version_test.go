package main

import (
	"runtime/debug"
	"testing"
)

// TestVersionFromVCS: a build from a checkout without -X main.version
// prints the commit Go recorded (and +dirty for uncommitted changes)
// rather than "dev"; -X wins, and a module version (go install …@v1.2.3)
// comes next. Every build from source used to print "dev".
func TestVersionFromVCS(t *testing.T) {
	vcs := func(version string, settings ...debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/sallyport/sallyport", Version: version}, Settings: settings}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "1bbfc02aa9c3e4f5d6b7a8091a2b3c4d5e6f7a8b"}
	for _, tc := range []struct {
		name, set string
		bi        *debug.BuildInfo
		want      string
	}{
		{"ldflags", "v1.4.0", vcs("(devel)", rev), "v1.4.0"},
		{"module version", "", vcs("v1.3.2", rev), "v1.3.2"},
		{"commit", "", vcs("(devel)", rev, debug.BuildSetting{Key: "vcs.modified", Value: "false"}), "1bbfc02aa9c3"},
		{"dirty commit", "", vcs("(devel)", rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "1bbfc02aa9c3+dirty"},
		{"no vcs", "", vcs("(devel)"), "dev"},
		{"no build info", "", nil, "dev"},
	} {
		if got := versionOf(tc.set, tc.bi); got != tc.want {
			t.Errorf("%s: versionOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}
