package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// WriteMarkdown writes a one-line description of the run, a markdown table
// with one row per scenario and path, and notes on what the table has no
// column for: the idle relay's memory and the long polls' growth.
//
// The req/s column counts each scenario's exchanges: events for sse and
// echo round trips for ws.
// CPU cells read "s/1k" (CPU seconds per 1,000 exchanges) for request
// scenarios and "s/GiB" (per GiB of body moved) for transfers. Gateway and
// agent cells are empty on rows they take no part in, and "-" where they
// were not measured (in process, or a target). On reference rows they hold
// the processes standing in the gateway's and agent's places (pathHops).
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	load := "closed loop"
	if s.Rate > 0 {
		load = r.openLoopText()
	}
	cpu := r.Machine.CPUModel
	if cpu == "" {
		cpu = r.Machine.Arch
	}
	if s.LinkRTTMS > 0 || s.LinkRateMbit > 0 {
		load += fmt.Sprintf("; tunnel link rtt %s ms (%s measured), rate %s",
			trimFloat(s.LinkRTTMS, 3), sig(s.LinkRTTMeasuredMS), rateText(s.LinkRateMbit))
	}
	if r.Mode != ModeTarget {
		load += "; " + s.Transport + " tunnel"
	}
	if s.RelayGOMAXPROCS > 0 {
		load += fmt.Sprintf("; GOMAXPROCS %d in the relay and reference processes", s.RelayGOMAXPROCS)
	} else if r.Mode == ModeProcesses {
		load += "; gateway and agent choose GOMAXPROCS by load (one P while goroutines seldom wait; --relay-procs fixes it)"
	}
	if len(s.RelayEnv) > 0 {
		load += "; relay and reference processes run with " + strings.Join(s.RelayEnv, " ")
	}
	if len(s.TargetPIDs) > 0 {
		var procs []string
		for _, role := range TargetRoles {
			if pid, ok := s.TargetPIDs[role]; ok {
				procs = append(procs, fmt.Sprintf("%s pid %d", role, pid))
			}
		}
		load += "; the target's processes measured as " + strings.Join(procs, ", ")
	}
	fmt.Fprintf(&b, "sallyport bench: %s mode; %d CPUs (%s), %s/%s, %s; per path %d rounds of %s; concurrency %d (transfers %d), %s\n\n",
		r.Mode, r.Machine.CPUs, cpu, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion,
		s.Rounds, trimFloat(s.DurationS/float64(max(s.Rounds, 1)), 3)+" s", s.Concurrency, s.TransferConcurrency, load)
	b.WriteString("| scenario | path | req/s | MB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | gateway CPU | agent CPU | gateway RSS MiB | agent RSS MiB | vs direct |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for i := range r.Results {
		res := &r.Results[i]
		transfer := res.Kind == kindTransfer
		cells := []string{
			res.Scenario, res.Path,
			sig(res.RequestsPerS), sig(res.MBPerS),
			optSig(res.P50MS), optSig(res.P90MS), optSig(res.P99MS), optSig(res.P999MS), optSig(res.MaxMS),
			strconv.FormatInt(res.Errors, 10),
			res.cpuCell(hopGateway, transfer), res.cpuCell(hopAgent, transfer),
			res.rssCell(hopGateway), res.rssCell(hopAgent),
			ratioCell(res.RatioToDirect),
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	r.writeNotes(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// openLoopText describes an open-loop run in the header: the rate and,
// when the run has scenarios the rate does not drive (sse, transfers,
// longpoll, burst), the scenarios it does.
func (r *Report) openLoopText() string {
	var open, others []string
	for i := range r.Results {
		res := &r.Results[i]
		names := &others
		if openLoopKind(res.Kind) {
			names = &open
		}
		if !slices.Contains(*names, res.Scenario) {
			*names = append(*names, res.Scenario)
		}
	}
	rate := sig(r.Settings.Rate) + " req/s"
	switch {
	case len(others) == 0:
		return "open loop at " + rate
	case len(open) == 0:
		return "closed loop (the open loop's " + rate + " drives none of these scenarios)"
	}
	return "open loop at " + rate + " for " + strings.Join(open, ", ") + " (the rate does not apply to " + strings.Join(others, ", ") + ")"
}

// referenceNotes says what each reference path is, under the table.
var referenceNotes = map[string]string{
	ReferenceTCP: "tcp-forward = two chained byte forwarders, A where the gateway is and B where " +
		"the agent is (their CPU and RSS in those columns), no HTTP parsing, no multiplexing, no TLS",
	ReferenceTLS: "tls-forward = the same two forwarders with TLS 1.3 between them, as between gateway and agent " +
		"(the floor of any relay that encrypts its tunnel)",
	ReferenceStdlib: "stdlib-proxy = one httputil.ReverseProxy (gateway columns)",
}

// writeNotes adds the figures the table has no column for.
func (r *Report) writeNotes(b *strings.Builder) {
	if len(r.Settings.References) > 0 {
		notes := make([]string, 0, len(r.Settings.References))
		for _, ref := range r.Settings.References {
			notes = append(notes, referenceNotes[ref])
		}
		b.WriteString("\nreference paths: " + strings.Join(notes, "; ") + "\n")
	}
	if rounds := r.roundRatiosText(); rounds != "" {
		b.WriteString("\nvs direct round by round (the paths alternate within each round; the spread is the machine's noise): " +
			rounds + "\n")
	}
	if r.Idle != nil && len(r.Idle.RSSMiB) > 0 {
		sessions := fmt.Sprintf("; the agent with %d sessions", r.Idle.Sessions)
		if r.Mode == ModeTarget {
			sessions = " (the target's processes, by the place they stand in)"
		}
		fmt.Fprintf(b, "\nidle before load (RSS): %s%s\n", processFigures(r.Idle.RSSMiB, " MiB"), sessions)
	}
	for i := range r.Results {
		res := &r.Results[i]
		if note := res.unfinishedNote(); note != "" {
			fmt.Fprintf(b, "\n%s %s: %s\n", res.Scenario, res.Path, note)
		}
	}
	for i := range r.Results {
		res := &r.Results[i]
		if res.Kind != kindHeld {
			continue
		}
		growth, live := make(map[string]float64), make(map[string]float64)
		for name, p := range res.Processes {
			if p.RSSGrowthKiBPerHeld != nil {
				growth[name] = *p.RSSGrowthKiBPerHeld
			}
			if p.RSSGrowthAfterGCKiBPerHeld != nil {
				live[name] = *p.RSSGrowthAfterGCKiBPerHeld
			}
		}
		fmt.Fprintf(b, "\n%s %s: %d held at once, %d errors; RSS growth per held exchange: %s (after a GC: %s)\n",
			res.Scenario, res.Path, deref(res.Held), res.Errors, processFigures(growth, " KiB"), processFigures(live, " KiB"))
		if g := res.goHeldText(); g != "" {
			fmt.Fprintf(b, "%s %s, Go runtime's count after the GC, per held exchange: %s\n", res.Scenario, res.Path, g)
		}
	}
}

// roundRatiosText lists each path's ratios to direct round by round, as
// "small relay 33.1 / 34.6 / 36%", for the paths other than direct; "" with
// one round or none to list.
func (r *Report) roundRatiosText() string {
	var parts []string
	for i := range r.Results {
		res := &r.Results[i]
		if res.Path == PathDirect || len(res.RoundRatios) < 2 {
			continue
		}
		cells := make([]string, len(res.RoundRatios))
		for k, v := range res.RoundRatios {
			cells[k] = trimFloat(v*100, 1)
		}
		parts = append(parts, res.Scenario+" "+res.Path+" "+strings.Join(cells, " / ")+"%")
	}
	return strings.Join(parts, "; ")
}

// goHeldText lists, for each process that reported them, the goroutines,
// stack and heap growth per held exchange; "" when none did.
func (res *Result) goHeldText() string {
	var parts []string
	for _, name := range processOrder {
		p, ok := res.Processes[name]
		if !ok || p.GoroutinesPerHeld == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s goroutines, %s KiB stacks, %s KiB heap",
			name, sig(*p.GoroutinesPerHeld), sig(deref(p.GoStackKiBPerHeld)), sig(deref(p.GoHeapKiBPerHeld))))
	}
	return strings.Join(parts, "; ")
}

// unfinishedNote says what the table cannot: that a row's exchanges were
// still running when its rounds ended (the table has no column for them),
// when that is all it has or, in open loop, when the path fell behind the
// rate (more than 1% of the exchanges scheduled). "" when neither.
func (res *Result) unfinishedNote() string {
	if res.Unfinished == 0 || res.Kind == kindHeld {
		return ""
	}
	scheduled := res.Exchanges + res.Errors + res.Unfinished
	switch {
	case res.Rate > 0 && openLoopKind(res.Kind) && res.Unfinished*100 > scheduled:
		return fmt.Sprintf("behind the open loop's rate: %d of %d exchanges scheduled were not done by the end of their round (unfinished)",
			res.Unfinished, scheduled)
	case res.Exchanges == 0 && res.Errors == 0:
		return fmt.Sprintf("nothing completed or failed; %d exchanges still running when its rounds ended (unfinished)", res.Unfinished)
	}
	return ""
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// processOrder is the order processes are named in notes.
var processOrder = []string{RoleGateway, RoleAgent, RoleBackend, RoleForwarderA, RoleForwarderB, RoleTLSForwarderA, RoleTLSForwarderB, RoleStdlibProxy, procHarness}

// processFigures lists figures by process, e.g. "gateway 12.3 MiB, agent 9.1 MiB".
func processFigures(by map[string]float64, unit string) string {
	var parts []string
	for _, name := range processOrder {
		if v, ok := by[name]; ok {
			parts = append(parts, name+" "+sig(v)+unit)
		}
	}
	if len(parts) == 0 {
		return "not measured"
	}
	return strings.Join(parts, ", ")
}

// rateText reads a link rate in Mbit/s; 0 is no limit.
func rateText(mbit float64) string {
	if mbit == 0 {
		return "not limited"
	}
	return trimFloat(mbit, 3) + " Mbit/s"
}

// Hops: the table's gateway and agent columns (index into pathHops).
const (
	hopGateway = 0
	hopAgent   = 1
)

// hopProcess is the process of this result's path in column hop; "" when
// the path has none there.
func (res *Result) hopProcess(hop int) string { return pathHops[res.Path][hop] }

func (res *Result) cpuCell(hop int, transfer bool) string {
	name := res.hopProcess(hop)
	if name == "" {
		return ""
	}
	p, ok := res.Processes[name]
	switch {
	case !ok:
		return "-"
	case transfer && p.CPUSPerGiB != nil:
		return sig(*p.CPUSPerGiB) + " s/GiB"
	case !transfer && p.CPUSPer1k != nil:
		return sig(*p.CPUSPer1k) + " s/1k"
	}
	return "-"
}

func (res *Result) rssCell(hop int) string {
	name := res.hopProcess(hop)
	if name == "" {
		return ""
	}
	if p, ok := res.Processes[name]; ok && p.PeakRSSMiB != nil {
		return sig(*p.PeakRSSMiB)
	}
	return "-"
}

func ratioCell(r *float64) string {
	if r == nil {
		return "-"
	}
	return trimFloat(*r*100, 1) + "%"
}

func optSig(v *float64) string {
	if v == nil {
		return "-"
	}
	return sig(*v)
}

// sig formats v with about three significant digits and no exponent.
func sig(v float64) string {
	switch a := max(v, -v); {
	case a == 0:
		return "0"
	case a >= 100:
		return trimFloat(v, 0)
	case a >= 10:
		return trimFloat(v, 1)
	case a >= 1:
		return trimFloat(v, 2)
	case a >= 0.001:
		return trimFloat(v, 3)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

// trimFloat formats v with at most prec decimals, trailing zeros dropped.
func trimFloat(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
