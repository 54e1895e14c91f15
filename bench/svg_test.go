package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
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

// svgBox is a rectangle of the chart: x0 ≤ x ≤ x1, y0 ≤ y ≤ y1.
type svgBox struct{ x0, y0, x1, y1 float64 }

func (a svgBox) overlaps(b svgBox) bool {
	return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1
}

// svgPanelBoxes are what TestSVGLegendClearOfPlot reads from a panel.
type svgPanelBoxes struct {
	scenario string
	title    svgBox
	plot     svgBox   // the plot's frame
	legend   []svgBox // each series' key line and name, in the order drawn
}

// svgLayout reads the boxes of every panel from an SVG chart: the panel's
// title (its first text), its plot (its first rect) and, in each series,
// the legend's key (a line) and name (a text). Text is allowed 0.7 em per
// character and one em of height centred on its y for the legend (drawn
// with dominant-baseline middle), above its baseline for the title.
func svgLayout(t *testing.T, svg []byte) (width, height float64, panels []svgPanelBoxes) {
	t.Helper()
	num := func(se xml.StartElement, name string) float64 {
		for _, a := range se.Attr {
			if a.Name.Local == name {
				v, err := strconv.ParseFloat(a.Value, 64)
				if err != nil {
					t.Fatalf("%s %s=%q: %v", se.Name.Local, name, a.Value, err)
				}
				return v
			}
		}
		return 0
	}
	class := func(se xml.StartElement) string {
		for _, a := range se.Attr {
			if a.Name.Local == "class" {
				return a.Value
			}
		}
		return ""
	}
	const em = float64(svgFontSize)
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var stack []string // class of each open element ("" for none)
	var panel *svgPanelBoxes
	var text *xml.StartElement
	var chars strings.Builder
	inSeries := func() bool { return len(stack) >= 1 && stack[len(stack)-1] == "series" }
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			switch {
			case tok.Name.Local == "svg":
				width, height = num(tok, "width"), num(tok, "height")
			case class(tok) == "panel":
				panels = append(panels, svgPanelBoxes{})
				panel = &panels[len(panels)-1]
				for _, a := range tok.Attr {
					if a.Name.Local == "data-scenario" {
						panel.scenario = a.Value
					}
				}
			case panel != nil && tok.Name.Local == "rect" && panel.plot == (svgBox{}):
				x, y := num(tok, "x"), num(tok, "y")
				panel.plot = svgBox{x, y, x + num(tok, "width"), y + num(tok, "height")}
			case panel != nil && tok.Name.Local == "line" && inSeries():
				x1, x2, y := num(tok, "x1"), num(tok, "x2"), num(tok, "y1")
				panel.legend = append(panel.legend, svgBox{min(x1, x2), y - 1, max(x1, x2), y + 1})
			case panel != nil && tok.Name.Local == "text" && (inSeries() || panel.title == (svgBox{})):
				text = &tok
				chars.Reset()
			}
			stack = append(stack, class(tok))
		case xml.CharData:
			if text != nil {
				chars.Write(tok)
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
			if text != nil && tok.Name.Local == "text" {
				x, y := num(*text, "x"), num(*text, "y")
				w := float64(utf8.RuneCountInString(chars.String())) * 0.7 * em
				if panel.title == (svgBox{}) {
					panel.title = svgBox{x, y - em, x + w, y + em/4}
				} else {
					panel.legend = append(panel.legend, svgBox{x, y - em/2, x + w, y + em/2})
				}
				text = nil
			}
			if tok.Name.Local == "g" && !slices.Contains(stack, "panel") {
				panel = nil
			}
		}
	}
	return width, height, panels
}

// TestSVGLegendClearOfPlot: however many paths a scenario has, the legend
// stays clear of the plot, of the panel's title and of itself, and inside
// the chart. With five paths (--reference tcp,tls,stdlib) the legend once
// ran down into the plot.
func TestSVGLegendClearOfPlot(t *testing.T) {
	paths := []string{PathDirect, PathRelay, PathTCPForward, PathTLSForward, PathStdlibProxy}
	for _, n := range []int{1, 2, 5, 12} {
		rep := newReport(&Config{}, ModeProcesses)
		for _, sc := range []string{"small", "1k", "sse"} {
			for i := range n {
				p := fmt.Sprintf("reference-%d", i)
				if i < len(paths) {
					p = paths[i]
				}
				v := float64(i + 1)
				rep.Results = append(rep.Results, Result{
					Scenario: sc, Path: p, Kind: kindRequest,
					P50MS: ptr(v), P90MS: ptr(2 * v), P99MS: ptr(5 * v), P999MS: ptr(9 * v), MaxMS: ptr(30 * v),
				})
			}
		}
		var b bytes.Buffer
		if err := rep.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
		width, height, panels := svgLayout(t, b.Bytes())
		if len(panels) != 3 {
			t.Fatalf("%d paths: %d panels, want 3", n, len(panels))
		}
		for _, p := range panels {
			if len(p.legend) != 2*n {
				t.Fatalf("%d paths, panel %s: %d legend keys and names, want %d", n, p.scenario, len(p.legend), 2*n)
			}
			for i, box := range p.legend {
				what := fmt.Sprintf("%d paths, panel %s: legend box %d %+v", n, p.scenario, i, box)
				if box.overlaps(p.plot) {
					t.Errorf("%s overlaps the plot %+v", what, p.plot)
				}
				if box.overlaps(p.title) {
					t.Errorf("%s overlaps the title %+v", what, p.title)
				}
				if box.x0 < 0 || box.y0 < 0 || box.x1 > width || box.y1 > height {
					t.Errorf("%s is outside the chart (%vx%v)", what, width, height)
				}
				for j, other := range p.legend[:i] {
					if box.overlaps(other) {
						t.Errorf("%s overlaps legend box %d %+v", what, j, other)
					}
				}
			}
		}
	}
}
