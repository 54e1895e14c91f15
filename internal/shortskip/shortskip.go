// Package shortskip is the one rule for tests too long for `go test
// -short`: skipped with -short on a developer's machine, saying why, and
// failed under CI (CI set), so that CI never skips them silently. It
// imports nothing of this module, so that the tests of any package (the
// transports too, which internal/testrig imports) can use it.
package shortskip

import (
	"os"
	"testing"
)

// Long skips t with -short, saying why (make test runs it), and fails it
// when CI is set as well: there the test must run.
func Long(t testing.TB, why string) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("-short under CI would skip this test (%s); run `make test`", why)
	}
	t.Skipf("%s; skipped with -short (make test runs it)", why)
}

// Unsupported skips t on a machine that cannot run it, saying why and what
// to do, and fails it when CI is set: CI's machines must run every test.
func Unsupported(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI must run this test", why)
	}
	t.Skip(why)
}
