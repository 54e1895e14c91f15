package gateway

import (
	"strings"
	"sync"
	"testing"
)

func TestRequestIDKeepsSaneIDs(t *testing.T) {
	for _, in := range []string{
		"a",
		"abc123",
		"0f8fad5b-d9cb-469f-a165-70867728950e",
		"1-5759e988-bd862e3fe1be46a994272793",
		"req_1.2:3-4",
		strings.Repeat("x", 128),
	} {
		if got := RequestID(in); got != in {
			t.Errorf("RequestID(%q) = %q, want it kept", in, got)
		}
	}
}

func TestRequestIDReplacesOtherInput(t *testing.T) {
	for _, in := range []string{
		"",
		strings.Repeat("x", 129),
		"abc\r\nX-Injected: 1",
		"abc\nSet-Cookie: s=1",
		"abc\r",
		"a b",
		"a\tb",
		"<script>alert(1)</script>",
		`"quoted"`,
		"a/b",
		"a;b",
		"a,b",
		"a=b",
		"ünïcode",
		"\x00",
		"id\x7f",
		"%0d%0a",
	} {
		got := RequestID(in)
		if got == in {
			t.Errorf("RequestID(%q) kept the input", in)
		}
		checkGeneratedID(t, got)
	}
}

func checkGeneratedID(t *testing.T, id string) {
	t.Helper()
	if len(id) != 32 {
		t.Fatalf("generated id %q has %d characters, want 32", id, len(id))
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdef", c) {
			t.Fatalf("generated id %q is not lower-case hex", id)
		}
	}
	if !saneRequestID(id) {
		t.Fatalf("generated id %q is not itself sane", id)
	}
}

func TestNewRequestIDUnique(t *testing.T) {
	const goroutines, each = 8, 2000
	var (
		mu   sync.Mutex
		seen = make(map[string]bool, goroutines*each)
		wg   sync.WaitGroup
	)
	for range goroutines {
		wg.Go(func() {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = NewRequestID()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] {
					t.Errorf("duplicate id %q", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
	for id := range seen {
		checkGeneratedID(t, id)
		break
	}
}

func TestRequestIDAllocs(t *testing.T) {
	if a := testing.AllocsPerRun(1000, func() { _ = RequestID("kept-id") }); a != 0 {
		t.Errorf("RequestID(sane): %v allocations, want 0", a)
	}
	if a := testing.AllocsPerRun(1000, func() { _ = RequestID("") }); a > 1 {
		t.Errorf("RequestID(\"\"): %v allocations, want 1 (the string)", a)
	}
}

func BenchmarkNewRequestID(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = NewRequestID()
		}
	})
}
