package gateway

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// codeConstants returns the string constants named Code* in file: the
// X-Sallyport-Error codes.
func codeConstants(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
				continue
			}
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				codes[name.Name] = v
			}
		}
		return true
	})
	if len(codes) < 10 {
		t.Fatalf("found only %d Code constants in %s", len(codes), file)
	}
	return codes
}

// TestErrorCodesHaveMetricLabels: every X-Sallyport-Error code is a value
// of errors_total's code label; backend-1xx-limit was missing and counted
// as "other".
func TestErrorCodesHaveMetricLabels(t *testing.T) {
	for name, code := range codeConstants(t, "errors.go") {
		if errorCodeLabel(errorCodeIndex(code)) != code {
			t.Errorf("%s (%q) is counted as %q in errors_total", name, code, errorCodeLabel(errorCodeIndex(code)))
		}
	}
}
