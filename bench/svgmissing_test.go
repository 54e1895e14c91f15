package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// TestWriteSVGNamesPathsWithoutLatencies: a path whose every exchange
// failed (a target that cuts its bodies short: 3049 errors, no completed
// exchange) had no line and no legend entry, so its panel showed direct
// alone, as if the target had not been measured. Its legend names it as
// "PATH: none completed", with a dashed key and no line.
func TestWriteSVGNamesPathsWithoutLatencies(t *testing.T) {
	rep := sampleReport()
	relay := &rep.Results[1]
	relay.Path = PathTarget
	relay.Exchanges, relay.Errors = 0, 3049
	relay.P50MS, relay.P90MS, relay.P99MS, relay.P999MS, relay.MaxMS = nil, nil, nil, nil, nil
	var b bytes.Buffer
	if err := rep.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	type group struct{ class, scenario, path string }
	var groups []group
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "g" {
			continue
		}
		var g group
		for _, a := range se.Attr {
			switch a.Name.Local {
			case "class":
				g.class = a.Value
			case "data-scenario":
				g.scenario = a.Value
			case "data-path":
				g.path = a.Value
			}
		}
		if g.class != "panel" {
			groups = append(groups, g)
		}
	}
	want := []group{{"series", "small", PathDirect}, {"missing", "small", PathTarget}}
	if len(groups) != len(want) || groups[0] != want[0] || groups[1] != want[1] {
		t.Errorf("groups %q; want %q (the download result, without latencies on its only path, still has no panel)", groups, want)
	}
	for _, s := range []string{"target: none completed", "small target: no exchange completed (3049 errors)"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("the chart has no %q:\n%s", s, b.String())
		}
	}
	if strings.Count(b.String(), "<polyline") != 1 {
		t.Errorf("want one line (direct's), got %d", strings.Count(b.String(), "<polyline"))
	}
}
