package bench

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// TestReferenceNames: known names resolve once each, in the order of
// References, whatever order and spacing they are given in; an unknown one
// is refused naming the ones there are, before anything starts.
func TestReferenceNames(t *testing.T) {
	for _, c := range []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{"stdlib"}, []string{ReferenceStdlib}},
		{[]string{"stdlib", " tcp", "stdlib"}, []string{ReferenceTCP, ReferenceStdlib}},
		{[]string{"stdlib", "tls", "tcp"}, []string{ReferenceTCP, ReferenceTLS, ReferenceStdlib}},
	} {
		got, err := (&Config{References: c.in}).references()
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("references(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	_, err := Run(t.Context(), Config{References: []string{"tcp", "nginx"}})
	if want := `bench: unknown reference "nginx" (have tcp, tls, stdlib)`; err == nil || err.Error() != want {
		t.Errorf("unknown reference: %v, want %q", err, want)
	}
	_, err = Run(t.Context(), Config{References: []string{"stdlib"}, Target: "http://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "with a target nothing is started") {
		t.Errorf("reference with a target: %v", err)
	}
}

// TestRunReferencesInProcess drives every scenario through the three
// reference paths, in this process and with the network hop behind an emulated
// link: each path forwards (exchanges, no errors), the rows come in path
// order, and the JSON names them.
func TestRunReferencesInProcess(t *testing.T) {
	rep, md := runLogged(t, Config{
		Scenarios:           []string{"small", "upload", "sse", "ws", "longpoll", "burst"},
		Duration:            300 * time.Millisecond,
		Rounds:              1,
		Concurrency:         2,
		TransferConcurrency: 1,
		TransferSize:        64 << 10,
		SSEInterval:         5 * time.Millisecond,
		Longpoll:            20,
		Burst:               4,
		LinkRTT:             time.Millisecond,
		References:          []string{"stdlib", "tcp", "tls"},
		Log:                 zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	paths := []string{PathDirect, PathRelay, PathTCPForward, PathTLSForward, PathStdlibProxy}
	if len(rep.Results) != 6*len(paths) {
		t.Fatalf("%d results, want %d", len(rep.Results), 6*len(paths))
	}
	for i, r := range rep.Results {
		if want := paths[i%len(paths)]; r.Path != want {
			t.Errorf("result %d: path %s, want %s", i, r.Path, want)
		}
		// Forwarded: no errors, and bytes moved. (On a loaded machine a
		// 0.3 s round may cut off every upload, which then moved bytes
		// but did not complete, and end a burst round before the GETs
		// that follow the burst, which alone count as exchanges.)
		cutOff := r.Kind == kindBurst || r.Kind == kindTransfer
		if r.Errors != 0 || r.MBPerS <= 0 || r.Exchanges == 0 && !cutOff {
			t.Errorf("%s/%s: %d errors %v, %d exchanges, %v MB/s", r.Scenario, r.Path, r.Errors, r.ErrorSamples, r.Exchanges, r.MBPerS)
		}
		if (r.RatioToDirect != nil) != (r.Kind != kindHeld && r.Kind != kindBurst) {
			t.Errorf("%s/%s: ratio %v", r.Scenario, r.Path, r.RatioToDirect)
		}
	}
	if got := rep.Settings.References; !slices.Equal(got, []string{ReferenceTCP, ReferenceTLS, ReferenceStdlib}) {
		t.Errorf("settings references %q", got)
	}
	if !strings.Contains(md, "| small | tcp-forward | ") || !strings.Contains(md, "| small | tls-forward | ") ||
		!strings.Contains(md, "\nreference paths: tcp-forward = ") || !strings.Contains(md, "; tls-forward = ") {
		t.Errorf("no reference row or note in\n%s", md)
	}

	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Settings struct {
			References []string `json:"references"`
		} `json:"settings"`
		Results []struct {
			Scenario string   `json:"scenario"`
			Path     string   `json:"path"`
			Ratio    *float64 `json:"ratio_to_direct"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Settings.References, []string{"tcp", "tls", "stdlib"}) {
		t.Errorf("JSON settings.references %q", got.Settings.References)
	}
	if r := got.Results[2]; r.Scenario != "small" || r.Path != "tcp-forward" || r.Ratio == nil {
		t.Errorf("JSON result 2: %+v", r)
	}
	if r := got.Results[3]; r.Scenario != "small" || r.Path != "tls-forward" || r.Ratio == nil {
		t.Errorf("JSON result 3: %+v", r)
	}
	if r := got.Results[4]; r.Scenario != "small" || r.Path != "stdlib-proxy" || r.Ratio == nil {
		t.Errorf("JSON result 4: %+v", r)
	}

	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{PathTCPForward, PathTLSForward, PathStdlibProxy} {
		want := `data-scenario="small" data-path="` + p + `" stroke="` + svgColors[p] + `"`
		if !strings.Contains(svg.String(), want) {
			t.Errorf("the chart has no series %s", want)
		}
	}
}

// TestReferenceColumns: on reference rows the gateway and agent columns
// hold the processes standing in their places (forwarders A and B; the
// stdlib proxy alone in the gateway's), and the JSON names them.
func TestReferenceColumns(t *testing.T) {
	rep := sampleReport()
	rep.Settings.References = []string{ReferenceTCP, ReferenceTLS, ReferenceStdlib}
	proc := func(per1k, rss float64) Process {
		return Process{CPUS: 1, CPUSPer1k: ptr(per1k), PeakRSSMiB: ptr(rss)}
	}
	base := rep.Results[0]
	tcp, tlsf, std := base, base, base
	tcp.Path, tcp.RatioToDirect = PathTCPForward, ptr(0.48)
	tcp.Processes = map[string]Process{RoleForwarderA: proc(0.031, 19.5), RoleForwarderB: proc(0.032, 19.6), RoleBackend: proc(0.015, 12)}
	tlsf.Path, tlsf.RatioToDirect = PathTLSForward, ptr(0.45)
	tlsf.Processes = map[string]Process{RoleTLSForwarderA: proc(0.04, 26.5), RoleTLSForwarderB: proc(0.041, 25.5), RoleBackend: proc(0.015, 12)}
	std.Path, std.RatioToDirect = PathStdlibProxy, ptr(0.265)
	std.Processes = map[string]Process{RoleStdlibProxy: proc(0.07, 24.5), RoleBackend: proc(0.015, 12)}
	rep.Results = append(rep.Results[:2], tcp, tlsf, std)

	md := markdown(t, rep)
	for _, want := range []string{
		"| small | tcp-forward | 20000 | 1.28 | 3.1 | 4 | 6.5 | 9.25 | 20 | 0 | 0.031 s/1k | 0.032 s/1k | 19.5 | 19.6 | 48% |\n",
		"| small | tls-forward | 20000 | 1.28 | 3.1 | 4 | 6.5 | 9.25 | 20 | 0 | 0.04 s/1k | 0.041 s/1k | 26.5 | 25.5 | 45% |\n",
		"| small | stdlib-proxy | 20000 | 1.28 | 3.1 | 4 | 6.5 | 9.25 | 20 | 0 | 0.07 s/1k |  | 24.5 |  | 26.5% |\n",
		"\nreference paths: tcp-forward = two chained byte forwarders",
		"; tls-forward = the same two forwarders with TLS 1.3 between them",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown has no %q:\n%s", want, md)
		}
	}

	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []struct {
			Path      string                     `json:"path"`
			Processes map[string]json.RawMessage `json:"processes"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	names := func(m map[string]json.RawMessage) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	if r := got.Results[2]; r.Path != "tcp-forward" || !slices.Equal(names(r.Processes), []string{"backend", "forwarder-a", "forwarder-b"}) {
		t.Errorf("JSON tcp-forward: %s %q", r.Path, names(r.Processes))
	}
	if r := got.Results[3]; r.Path != "tls-forward" || !slices.Equal(names(r.Processes), []string{"backend", "tls-forwarder-a", "tls-forwarder-b"}) {
		t.Errorf("JSON tls-forward: %s %q", r.Path, names(r.Processes))
	}
	if r := got.Results[4]; r.Path != "stdlib-proxy" || !slices.Equal(names(r.Processes), []string{"backend", "stdlib-proxy"}) {
		t.Errorf("JSON stdlib-proxy: %s %q", r.Path, names(r.Processes))
	}
}

// TestFitLongpollReferences: the reference paths' hops hold more files per
// held exchange (a forwarder two sockets and two splice pipes), so the
// default long poll count is fitted to them.
func TestFitLongpollReferences(t *testing.T) {
	lp, err := newScenario("longpoll", 0)
	if err != nil {
		t.Fatal(err)
	}
	spawn := func(string) *exec.Cmd { return nil } // process mode; never called
	for _, c := range []struct {
		cfg  Config
		want int
	}{
		{Config{Spawn: spawn}, 1},
		{Config{Spawn: spawn, References: []string{ReferenceStdlib}}, 2},
		{Config{Spawn: spawn, References: []string{ReferenceStdlib}, LinkRTT: time.Millisecond}, 3},
		{Config{Spawn: spawn, References: []string{ReferenceTCP}}, forwarderFilesPerConn},
		{Config{}, 4},
		{Config{References: []string{ReferenceStdlib}}, 4},
		{Config{References: []string{ReferenceTCP}}, 2 + 2*forwarderFilesPerConn},
		{Config{Spawn: spawn, References: []string{ReferenceTLS}}, 2},
		{Config{References: []string{ReferenceTLS}}, 6},
	} {
		if got := c.cfg.filesPerHeld(); got != c.want {
			t.Errorf("%s mode, references %q, link %v: %d files per held exchange, want %d",
				c.cfg.mode(), c.cfg.References, c.cfg.LinkRTT, got, c.want)
		}
	}
	cfg := Config{Spawn: spawn, References: []string{ReferenceTCP}}
	if err := cfg.fitLongpoll([]scenario{lp}, 20000); err != nil || cfg.longpoll() != (20000-filesMargin)/forwarderFilesPerConn {
		t.Errorf("default longpoll with tcp-forward under 20000 files: %v, %d", err, cfg.longpoll())
	}
}
