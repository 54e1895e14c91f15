package agent

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestErrorCodesHaveOutcomes: every error code the agent answers with is
// an outcome of exchanges_total; backend-1xx-limit was missing and counted
// as backend-unreachable, which blames reachability.
func TestErrorCodesHaveOutcomes(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		vs, ok := node.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
				continue
			}
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				continue
			}
			code, _ := strconv.Unquote(lit.Value)
			n++
			if got := errorOutcomes[errorOutcome(code)]; got != code {
				t.Errorf("%s (%q) is counted as outcome %q", name.Name, code, got)
			}
		}
		return true
	})
	if n < 4 {
		t.Fatalf("found only %d Code constants in errors.go", n)
	}
}
