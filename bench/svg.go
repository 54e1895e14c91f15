package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// SVG layout, in pixels. A panel is, top to bottom: its title, the legend
// (as many rows as its paths need, the same number in every panel), the
// plot and the percentile labels.
const (
	svgPanelW    = 420
	svgColumns   = 2
	svgMarginL   = 64 // room for the latency axis labels
	svgMarginR   = 16
	svgTitleH    = 26 // the panel's title
	svgLegendH   = 16 // one row of the legend
	svgLegendGap = 8  // between the legend and the plot
	svgPlotH     = 184
	svgMarginB   = 36 // the percentile labels
	svgHeaderH   = 36 // the chart's title
	svgFontSize  = 12
	// svgCharW is the width the layout allows each character of a label:
	// 0.7 em, more than the average glyph of a sans-serif font, so that
	// legend entries never run into each other.
	svgCharW = 0.7 * svgFontSize
	// A legend entry is a short line in the path's colour, its name and a
	// gap before the next one.
	svgKeyW     = 18
	svgKeyGap   = 6
	svgEntryGap = 14
)

// svgColors gives each path its colour.
var svgColors = map[string]string{
	PathDirect: "#1f77b4", PathRelay: "#d62728", PathTarget: "#2ca02c",
	PathTCPForward: "#7f7f7f", PathTLSForward: "#8c564b", PathStdlibProxy: "#ff7f0e",
}

// svgPercentiles are the points of every series, left to right.
var svgPercentiles = []string{"p50", "p90", "p99", "p99.9", "max"}

// WriteSVG draws the latency percentiles of every scenario, one panel
// each, with one line per path (direct against relay or target, and the
// reference paths) on a logarithmic latency axis. A path with no completed
// exchange has no line; its panel's legend names it, "PATH: none
// completed", so that a path whose every exchange failed does not pass for
// one that was not measured. A scenario where no path completed one has no
// panel.
func (r *Report) WriteSVG(w io.Writer) error {
	var scenarios []string
	series := make(map[string][]*Result)
	missing := make(map[string][]*Result) // by scenario: the paths without latencies
	for i := range r.Results {
		res := &r.Results[i]
		if res.P50MS == nil {
			missing[res.Scenario] = append(missing[res.Scenario], res)
			continue
		}
		if _, ok := series[res.Scenario]; !ok {
			scenarios = append(scenarios, res.Scenario)
		}
		series[res.Scenario] = append(series[res.Scenario], res)
	}
	legendRows := 1
	for _, sc := range scenarios {
		_, n := legendLayout(legendLabels(series[sc], missing[sc]))
		legendRows = max(legendRows, n)
	}
	panelH := svgTitleH + legendRows*svgLegendH + svgLegendGap + svgPlotH + svgMarginB
	rows := max((len(scenarios)+svgColumns-1)/svgColumns, 1)
	width, height := svgColumns*svgPanelW, svgHeaderH+rows*panelH
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`+"\n",
		width, height, width, height, svgFontSize)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	title := fmt.Sprintf("sallyport bench: latency percentiles (ms, log scale), %s mode, %s", r.Mode, r.Machine.GoVersion)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15">%s</text>`+"\n", svgMarginL, svgEscape(title))
	if len(scenarios) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no completed exchanges to draw</text>`+"\n", svgMarginL, svgHeaderH+40)
	}
	for i, sc := range scenarios {
		x0 := (i % svgColumns) * svgPanelW
		y0 := svgHeaderH + (i/svgColumns)*panelH
		writePanel(&b, sc, series[sc], missing[sc], x0, y0, legendRows)
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// legendPlace is where one legend entry goes: its row, and its left edge
// from the plot's left edge.
type legendPlace struct {
	row int
	x   float64
}

// noneCompleted follows the name of a path without latencies in a legend.
const noneCompleted = ": none completed"

// legendLabels are the legend's entries of a panel: the paths drawn, then
// those without a completed exchange.
func legendLabels(drawn, missing []*Result) []string {
	labels := make([]string, 0, len(drawn)+len(missing))
	for _, res := range drawn {
		labels = append(labels, res.Path)
	}
	for _, res := range missing {
		labels = append(labels, res.Path+noneCompleted)
	}
	return labels
}

// legendLayout places the legend entries (labels) left to right in rows
// as wide as the plot, starting a new row where the next entry would not
// fit (an entry wider than the plot gets a row of its own), and returns
// the places and the number of rows.
func legendLayout(labels []string) ([]legendPlace, int) {
	const width = svgPanelW - svgMarginL - svgMarginR
	places := make([]legendPlace, len(labels))
	row, x := 0, 0.0
	for i, label := range labels {
		w := svgKeyW + svgKeyGap + svgTextWidth(label)
		if x > 0 && x+w > width {
			row, x = row+1, 0
		}
		places[i] = legendPlace{row: row, x: x}
		x += w + svgEntryGap
	}
	return places, row + 1
}

// svgTextWidth is the width the layout allows a label (see svgCharW).
func svgTextWidth(s string) float64 { return float64(utf8.RuneCountInString(s)) * svgCharW }

// writePanel draws one scenario's series in the panel at (x0, y0), below a
// legend of legendRows rows that also names the paths of missing, which
// have no latencies to draw.
func writePanel(b *bytes.Buffer, scenario string, results, missing []*Result, x0, y0, legendRows int) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, res := range results {
		for _, v := range seriesValues(res) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	// Whole decades around the values; latencies below 1 µs do not occur.
	lo = math.Pow(10, math.Floor(math.Log10(max(lo, 0.001))))
	hi = math.Pow(10, math.Ceil(math.Log10(max(hi, lo*10))))
	if hi <= lo {
		hi = lo * 10
	}
	left, right := float64(x0+svgMarginL), float64(x0+svgPanelW-svgMarginR)
	legendTop := float64(y0 + svgTitleH)
	top := legendTop + float64(legendRows*svgLegendH+svgLegendGap)
	bottom := top + svgPlotH
	places, _ := legendLayout(legendLabels(results, missing))
	xAt := func(i int) float64 {
		return left + (right-left)*float64(i)/float64(len(svgPercentiles)-1)
	}
	yAt := func(v float64) float64 {
		return bottom - (bottom-top)*(math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}

	fmt.Fprintf(b, `<g class="panel" data-scenario="%s">`+"\n", svgEscape(scenario))
	fmt.Fprintf(b, `<text x="%.1f" y="%d" font-weight="bold">%s</text>`+"\n", left, y0+18, svgEscape(scenario))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#999"/>`+"\n", left, top, right-left, bottom-top)
	for d := lo; d <= hi*1.0001; d *= 10 {
		y := yAt(d)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, right, y)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, sig(d))
	}
	for i, p := range svgPercentiles {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xAt(i), bottom+18, p)
	}
	for k, res := range results {
		color, ok := svgColors[res.Path]
		if !ok {
			color = "#555"
		}
		vals := seriesValues(res)
		pts := make([]string, len(vals))
		for i, v := range vals {
			pts[i] = fmt.Sprintf("%.1f,%.1f", xAt(i), yAt(v))
		}
		fmt.Fprintf(b, `<g class="series" data-scenario="%s" data-path="%s" stroke="%s" fill="%s">`+"\n",
			svgEscape(res.Scenario), svgEscape(res.Path), color, color)
		fmt.Fprintf(b, `<title>%s %s: %s ms</title>`+"\n", svgEscape(res.Scenario), svgEscape(res.Path), seriesText(vals))
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke-width="2"/>`+"\n", strings.Join(pts, " "))
		for i, v := range vals {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3"><title>%s %s %s: %s ms</title></circle>`+"\n",
				xAt(i), yAt(v), svgEscape(res.Scenario), svgEscape(res.Path), svgPercentiles[i], sig(v))
		}
		// Legend, between the title and the plot.
		lx, ly := left+places[k].x, legendTop+float64(places[k].row*svgLegendH)+svgLegendH/2
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke-width="2"/>`+"\n", lx, ly, lx+svgKeyW, ly)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" stroke="none" dominant-baseline="middle">%s</text>`+"\n", lx+svgKeyW+svgKeyGap, ly, svgEscape(res.Path))
		b.WriteString("</g>\n")
	}
	for k, res := range missing {
		color, ok := svgColors[res.Path]
		if !ok {
			color = "#555"
		}
		place := places[len(results)+k]
		lx, ly := left+place.x, legendTop+float64(place.row*svgLegendH)+svgLegendH/2
		fmt.Fprintf(b, `<g class="missing" data-scenario="%s" data-path="%s" stroke="%s" fill="%s">`+"\n",
			svgEscape(res.Scenario), svgEscape(res.Path), color, color)
		fmt.Fprintf(b, `<title>%s %s: no exchange completed (%d errors)</title>`+"\n", svgEscape(res.Scenario), svgEscape(res.Path), res.Errors)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke-width="2" stroke-dasharray="3,3"/>`+"\n", lx, ly, lx+svgKeyW, ly)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" stroke="none" dominant-baseline="middle">%s</text>`+"\n",
			lx+svgKeyW+svgKeyGap, ly, svgEscape(res.Path+noneCompleted))
		b.WriteString("</g>\n")
	}
	b.WriteString("</g>\n")
}

// seriesValues are a result's latency percentiles in svgPercentiles order,
// each at least 1 µs so that the log scale holds them.
func seriesValues(res *Result) []float64 {
	out := make([]float64, 0, len(svgPercentiles))
	for _, p := range []*float64{res.P50MS, res.P90MS, res.P99MS, res.P999MS, res.MaxMS} {
		v := 0.001
		if p != nil {
			v = max(*p, 0.001)
		}
		out = append(out, v)
	}
	return out
}

func seriesText(vals []float64) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = svgPercentiles[i] + " " + sig(v)
	}
	return strings.Join(parts, ", ")
}

func svgEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder never fail
	return b.String()
}
