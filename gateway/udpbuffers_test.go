package gateway

import (
	"errors"
	"strings"
	"testing"
)

func TestUDPBufferAdvice(t *testing.T) {
	files := func(r, w string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			switch {
			case strings.HasSuffix(name, "rmem_max"):
				return []byte(r + "\n"), nil
			case strings.HasSuffix(name, "wmem_max"):
				return []byte(w + "\n"), nil
			}
			return nil, errors.New("no such file")
		}
	}
	low := udpBufferAdvice(files("212992", "212992"))
	for _, want := range []string{"net.core.rmem_max=212992", "net.core.wmem_max=212992", "sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032", "QUIC still works"} {
		if !strings.Contains(low, want) {
			t.Errorf("advice %q lacks %q", low, want)
		}
	}
	if a := udpBufferAdvice(files("7340032", "8388608")); a != "" {
		t.Errorf("large enough caps: %q", a)
	}
	if a := udpBufferAdvice(files("7340032", "4096")); !strings.Contains(a, "wmem_max=4096") || strings.Contains(a, "rmem_max=7340032,") {
		t.Errorf("only wmem low: %q", a)
	}
	if a := udpBufferAdvice(func(string) ([]byte, error) { return nil, errors.New("not linux") }); a != "" {
		t.Errorf("unknown caps: %q", a)
	}
}
