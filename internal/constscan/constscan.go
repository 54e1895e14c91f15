// Package constscan reads the string constants of a Go source file, for
// tests that check every constant of a kind is handled somewhere (the
// X-Sallyport-Error codes against the metrics' labels).
package constscan

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// Strings returns the string constants of file whose names start with
// prefix, by name. It fails t when the file does not parse or has fewer
// than atLeast of them (a renamed file or prefix must not pass silently).
func Strings(t testing.TB, file, prefix string, atLeast int) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
				continue
			}
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if v, err := strconv.Unquote(lit.Value); err == nil {
					consts[name.Name] = v
				}
			}
		}
		return true
	})
	if len(consts) < atLeast {
		t.Fatalf("%s: %d string constants named %s*, want at least %d", file, len(consts), prefix, atLeast)
	}
	return consts
}
