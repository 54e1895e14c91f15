//go:build !agentonly

package main

import (
	"context"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/store"
)

// TestCARotateForceNeedsRetire: `gateway ca rotate --force` without
// --retire-previous is refused and adds no CA. It used to be ignored: the
// command added a new CA, a rotation the operator did not ask for. And a
// --retire-previous with nothing to retire says so instead of "removed 0
// previous connector CA(s); agents ... must enroll again".
func TestCARotateForceNeedsRetire(t *testing.T) {
	ctx := context.Background()
	dataDir, st := newCAStore(t)
	st.Close()
	cas := func() int {
		t.Helper()
		st, err := store.Open(ctx, dataDir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		list, err := st.CAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	out, err := runCLI(t, "gateway", "ca", "rotate", "--force", "--data-dir", dataDir)
	if err == nil || !strings.Contains(err.Error(), "--force works only with --retire-previous") {
		t.Errorf("ca rotate --force = %q, %v; want it refused", out, err)
	}
	if n := cas(); n != 1 {
		t.Errorf("after ca rotate --force: %d CAs in the store, want 1 (nothing added)", n)
	}
	out, err = runCLI(t, "gateway", "ca", "rotate", "--retire-previous", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "no previous connector CA to remove") {
		t.Errorf("ca rotate --retire-previous with one CA = %q, %v; want \"no previous connector CA to remove\"", out, err)
	}
}
