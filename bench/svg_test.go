package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// TestWriteSVG: the chart is well-formed XML with a panel per scenario and
// a series per path that has latencies, each holding its percentiles.
func TestWriteSVG(t *testing.T) {
	rep := sampleReport()
	rep.Results[1].Scenario = `small <&"x">` // names are escaped
	rep.Results[0].Scenario = rep.Results[1].Scenario
	var b bytes.Buffer
	if err := rep.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	type series struct{ scenario, path string }
	var got []series
	panels := 0
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	var root string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root == "" {
			root = se.Name.Local
		}
		attr := func(name string) string {
			for _, a := range se.Attr {
				if a.Name.Local == name {
					return a.Value
				}
			}
			return ""
		}
		switch attr("class") {
		case "panel":
			panels++
		case "series":
			got = append(got, series{attr("data-scenario"), attr("data-path")})
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	// The download result has no latencies: no panel, no series.
	want := []series{{`small <&"x">`, PathDirect}, {`small <&"x">`, PathRelay}}
	if panels != 1 || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("%d panels, series %q; want 1 panel, %q", panels, got, want)
	}
	for _, s := range []string{"p50", "p99.9", "max", "small &lt;&amp;", "relay p99.9: 31 ms"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("the chart has no %q", s)
		}
	}
}

func TestWriteSVGEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := newReport(&Config{}, ModeInProcess).WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil || !strings.Contains(b.String(), "no completed exchanges") {
		t.Errorf("empty chart: %v\n%s", err, b.String())
	}
}
