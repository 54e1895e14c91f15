package bench

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestJSONDocumented: every field name of the JSON report, and every path,
// process and reference name it can hold, is in the README's JSON section,
// written as code (`name`), so the documented names are the ones written.
func TestJSONDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### JSON (`--json FILE`)")
	if !ok {
		t.Fatal("README has no JSON section")
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}

	// A report with every field set, so that none is left out as empty.
	one := 1.0
	rep := Report{
		Idle: &Idle{RSSMiB: map[string]float64{}},
		Results: []Result{{
			P50MS: &one, P90MS: &one, P99MS: &one, P999MS: &one, MaxMS: &one, RatioToDirect: &one,
			Held: ptr[int64](1), ErrorSamples: []string{"x"},
			Processes: map[string]Process{"p": {
				CPUSPer1k: &one, CPUSPerGiB: &one, PeakRSSMiB: &one,
				RSSGrowthKiBPerHeld: &one, RSSGrowthAfterGCKiBPerHeld: &one,
				GoroutinesPerHeld: &one, GoStackKiBPerHeld: &one, GoHeapKiBPerHeld: &one,
			}},
		}},
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	names := make(map[string]bool)
	var walk func(v any, dynamic bool)
	walk = func(v any, dynamic bool) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if !dynamic {
					names[k] = true
				}
				// The keys of these maps are process names, checked below.
				walk(c, k == "processes" || k == "rss_mib")
			}
		case []any:
			for _, c := range v {
				walk(c, false)
			}
		}
	}
	walk(doc, false)
	for _, p := range []string{PathDirect, PathRelay, PathTarget, PathTCPForward, PathTLSForward, PathStdlibProxy} {
		names[p] = true
		for _, proc := range pathProcesses[p] {
			names[proc] = true
		}
	}
	for _, r := range References {
		names[r] = true
	}
	for _, m := range []string{ModeProcesses, ModeInProcess, ModeTarget} {
		names[m] = true
	}
	for _, k := range []string{kindRequest, kindTransfer, kindEvent, kindMessage, kindHeld, kindBurst} {
		names[k] = true
	}
	for name := range names {
		if !strings.Contains(section, "`"+name+"`") && !strings.Contains(section, `"`+name+`"`) {
			t.Errorf("the README's JSON section does not name %q", name)
		}
	}
}
