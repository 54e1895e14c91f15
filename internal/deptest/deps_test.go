// Package deptest keeps the package rules of DESIGN.md true: which package
// may import which, checked on the real import graph (`go list -deps`).
package deptest

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/makevars"
)

const mod = "github.com/sallyport/sallyport"

type pkg struct {
	ImportPath string
	Name       string
	Deps       []string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", mod+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 8 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// under reports whether p is dir or inside it (both module-relative).
func under(p, dir string) bool {
	full := mod + "/" + dir
	return p == full || strings.HasPrefix(p, full+"/")
}

func TestPackageRules(t *testing.T) {
	rules := []struct {
		pkg    string   // module-relative package dir (and everything under it)
		forbid []string // module-relative dirs it must not depend on, even indirectly
	}{
		// The protocol is shared by both sides and knows neither.
		{"tunnel", []string{"gateway", "agent", "cmd", "bench", "internal"}},
		{"proto", []string{"tunnel", "gateway", "agent", "cmd", "bench", "internal"}},
		{"gateway", []string{"agent", "cmd", "bench", "internal/testrig", "internal/demoapp", "internal/devoidc"}},
		// The agent keeps no database and signs nothing: the store and the
		// connector CA are the gateway's alone.
		{"agent", []string{"gateway", "cmd", "bench", "internal/testrig", "internal/demoapp", "internal/store", "internal/pki", "internal/devoidc"}},
		{"internal/config", []string{"gateway", "agent", "tunnel", "cmd", "bench"}},
		{"internal/logging", []string{"gateway", "agent", "tunnel", "cmd", "bench"}},
		{"internal/selfsigned", []string{"gateway", "agent", "tunnel", "cmd", "bench"}},
		{"internal/demoapp", []string{"gateway", "agent", "tunnel", "cmd", "bench"}},
		// The assertion format is shared by the gateway (signs) and the
		// agent (verifies) and knows neither.
		{"internal/assertion", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal"}},
		{"internal/devoidc", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal"}},
		{"internal/store", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal/pki"}},
		{"internal/pki", []string{"gateway", "agent", "tunnel", "cmd", "bench"}},
		// The PostgreSQL test helper makes schemas and knows no store.
		{"internal/pgtest", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal/store"}},
		{"internal/clock", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal/store", "internal/pki"}},
		{"internal/atomicfile", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal/store", "internal/pki"}},
		// The metrics registry helper is shared by the gateway and the
		// agent (whose agent-only build links it) and knows neither.
		{"internal/promserve", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal"}},
		// The Makefile reader of the build tests knows nothing else.
		{"internal/makevars", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal"}},
		// The HTML escaping of the hand-written pages knows nothing else.
		{"internal/htmlpage", []string{"gateway", "agent", "tunnel", "cmd", "bench", "internal"}},
	}
	// Dirs inside a rule's forbidden ones that its package may depend on.
	allow := map[string][]string{
		// The development provider's sign-in page is escaped as the
		// gateway's pages are.
		"internal/devoidc": {"internal/htmlpage"},
	}
	pkgs := listPackages(t)
	for _, p := range pkgs {
		for _, r := range rules {
			if !under(p.ImportPath, r.pkg) {
				continue
			}
			for _, d := range p.Deps {
				if slices.ContainsFunc(allow[r.pkg], func(a string) bool { return under(d, a) }) {
					continue
				}
				for _, f := range r.forbid {
					// A transport package may import tunnel; the rule
					// for "tunnel" is about tunnel's own tree.
					if under(d, f) {
						t.Errorf("%s depends on %s (rule: %s must not depend on %s)", p.ImportPath, d, r.pkg, f)
					}
				}
			}
		}
	}
}

// TestTransportsImportOnlyTunnel: a transport implements the tunnel
// interfaces and nothing else.

// TestTransportsAreSeparate: each transport package stands alone; the QUIC
// and yamux adapters share only the muxtunnel core, and nothing in tunnel/
// imports a transport's third-party library but that transport.
func TestTransportsAreSeparate(t *testing.T) {
	owners := map[string]string{ // third-party library → the one transport that may use it
		"github.com/quic-go/quic-go": "tunnel/quictunnel",
		"github.com/hashicorp/yamux": "tunnel/yamuxtunnel",
	}
	// tunnel/tlsbatch is not a transport: the TCP transports' TLS helper.
	allowedSiblings := map[string][]string{
		"tunnel/quictunnel":  {"tunnel/muxtunnel"},
		"tunnel/yamuxtunnel": {"tunnel/muxtunnel", "tunnel/tlsbatch"},
		"tunnel/grpctunnel":  {"tunnel/tlsbatch"},
	}
	found := map[string]bool{}
	for _, p := range listPackages(t) {
		if !under(p.ImportPath, "tunnel") {
			continue
		}
		rel := strings.TrimPrefix(p.ImportPath, mod+"/")
		found[rel] = true
		// Direct imports only: every package that uses the protocol's
		// messages reaches grpc through proto, whose generated service
		// stubs import it; what matters is who calls the library itself.
		for _, d := range p.Imports {
			for lib, owner := range owners {
				if (d == lib || strings.HasPrefix(d, lib+"/")) && rel != owner {
					t.Errorf("%s imports %s, which only %s may use", rel, d, owner)
				}
			}
		}
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, mod+"/tunnel/") {
				continue
			}
			dep := strings.TrimPrefix(d, mod+"/")
			ok := false
			for _, s := range allowedSiblings[rel] {
				ok = ok || dep == s
			}
			if !ok && !strings.HasPrefix(rel, dep) {
				t.Errorf("transport %s depends on %s; transports do not import each other", rel, dep)
			}
		}
	}
	for _, want := range []string{"tunnel/grpctunnel", "tunnel/muxtunnel", "tunnel/quictunnel", "tunnel/yamuxtunnel"} {
		if !found[want] {
			t.Errorf("package %s not found; update this test", want)
		}
	}
}
func TestTransportsImportOnlyTunnel(t *testing.T) {
	for _, p := range listPackages(t) {
		if !strings.HasPrefix(p.ImportPath, mod+"/tunnel/") {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, mod+"/") && !under(d, "tunnel") && !under(d, "proto") {
				t.Errorf("transport %s depends on %s; transports may use only tunnel and proto", p.ImportPath, d)
			}
		}
	}
}

// TestNobodyImportsLeaves: cmd and bench are entry points (bench only for
// `sallyport bench`, so cmd may import it); test helpers are for tests only.
func TestNobodyImportsLeaves(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, d := range p.Imports {
			switch {
			case under(d, "bench") && under(p.ImportPath, "cmd"):
			case under(d, "cmd"), under(d, "bench"):
				t.Errorf("%s imports %s; nothing may import cmd, and only cmd imports bench", p.ImportPath, d)
			case under(d, "internal/testrig") || under(d, "internal/e2e"):
				t.Errorf("%s imports %s outside tests", p.ImportPath, d)
			case under(d, "internal/devoidc") && !under(p.ImportPath, "cmd"):
				// The development OIDC provider is for the demo and tests only.
				t.Errorf("%s imports %s; only the demo (cmd) and tests may", p.ImportPath, d)
			}
		}
	}
}

// TestNoGrabBagPackages: no util/common/helpers packages.
func TestNoGrabBagPackages(t *testing.T) {
	for _, p := range listPackages(t) {
		switch path.Base(p.ImportPath) {
		case "util", "utils", "common", "helpers", "misc":
			t.Errorf("%s is a grab-bag package; give it one purpose and a name that says it", p.ImportPath)
		}
	}
}

// TestAgentOnlyBuild: the agent-only build of the binary (`-tags
// agentonly`, bin/sallyport-agent) reaches none of the gateway's packages,
// its database or the bench; leaving them out is what keeps its idle
// memory small.
func TestAgentOnlyBuild(t *testing.T) {
	cmd := exec.Command("go", "list", "-tags", "agentonly", "-deps", "./cmd/sallyport")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, mod+"/agent") {
		t.Fatalf("the agent-only build does not import %s/agent; deps: %v", mod, deps)
	}
	for _, d := range deps {
		for _, dir := range []string{"gateway", "bench", "internal/store", "internal/demoapp"} {
			if under(d, dir) {
				t.Errorf("the agent-only build depends on %s", d)
			}
		}
		if strings.HasPrefix(d, "modernc.org/") || strings.HasPrefix(d, "github.com/jackc/") {
			t.Errorf("the agent-only build depends on %s (the gateway's database)", d)
		}
	}
}

// TestBuildsPruneMethods: neither build (the Makefile's TAGS, the full
// binary; its AGENT_TAGS, the agent-only one) links code that calls a
// method by a name known only at run time (the linker marks it
// <ReflectMethod>: executing a text/template or html/template does, as
// gRPC's x/net/trace, cobra's usage templates and the pages before
// internal/htmlpage did). One such call makes the linker keep every
// exported method of every type in the binary: the agent-only build was
// 26.6 MB instead of 21.6 and an idle agent about 2.4 MiB more resident
// (19.0-19.3 against 16.8 MiB on gRPC); the full binary 42.9 MB instead
// of 37.7.
func TestBuildsPruneMethods(t *testing.T) {
	for _, name := range []string{"TAGS", "AGENT_TAGS"} {
		t.Run(name, func(t *testing.T) {
			tags, err := makevars.Get("../../Makefile", name)
			if err != nil {
				t.Fatal(err)
			}
			if name == "AGENT_TAGS" && !strings.Contains(tags, "agentonly") {
				t.Fatalf("the Makefile's AGENT_TAGS %q has no agentonly", tags)
			}
			checkPrunesMethods(t, tags)
		})
	}
}

// checkPrunesMethods links the binary with tags and fails on every
// <ReflectMethod> function in the linker's graph, naming its callers.
func checkPrunesMethods(t *testing.T, tags string) {
	cmd := exec.Command("go", "build", "-tags", tags, "-ldflags=-dumpdep", "-o", os.DevNull, "./cmd/sallyport")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput() // the linker writes its graph to stderr
	if err != nil {
		t.Fatalf("go build -tags %s: %v\n%.2000s", tags, err, out)
	}
	if len(out) < 1<<20 {
		t.Fatalf("go build -ldflags=-dumpdep wrote %d bytes, not the linker's graph", len(out))
	}
	var marked []string
	caller := map[string]string{} // a function's first caller in the graph
	for line := range strings.Lines(string(out)) {
		from, to, ok := strings.Cut(strings.TrimSpace(line), " -> ")
		if !ok {
			continue
		}
		from, mark, _ := strings.Cut(from, " <")
		to, _, _ = strings.Cut(to, " <")
		if mark == "ReflectMethod>" && !slices.Contains(marked, from) {
			marked = append(marked, from)
		}
		if _, ok := caller[to]; !ok && from != to {
			caller[to] = from
		}
	}
	for _, f := range marked {
		chain := []string{f}
		for c, ok := caller[f]; ok && len(chain) < 16 && !slices.Contains(chain, c); c, ok = caller[c] {
			chain = append(chain, c)
		}
		t.Errorf("the build with -tags %s calls methods by a run-time name in %s, so the linker keeps them all; "+
			"leave out (build tag) or rewrite what reaches it:\n  %s", tags, f, strings.Join(chain, "\n  <- "))
	}
}
