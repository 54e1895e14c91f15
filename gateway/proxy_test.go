package gateway

import (
	"testing"
	"time"
)

func TestGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"500000u", 500 * time.Millisecond, true},
		{"99999999n", 99999999 * time.Nanosecond, true},
		{"100m", 100 * time.Millisecond, true},
		{"5S", 5 * time.Second, true},
		{"2M", 2 * time.Minute, true},
		{"1H", time.Hour, true},
		{"0n", 0, true},
		{"99999999H", 0, false},  // beyond a Duration: no deadline
		{"123456789S", 0, false}, // more than 8 digits
		{"", 0, false},
		{"S", 0, false},
		{"10", 0, false},
		{"10s", 0, false},
		{"-1S", 0, false},
		{"+1S", 0, false},
		{"1.5S", 0, false},
	} {
		got, ok := grpcTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("grpcTimeout(%q) = %v, %t; want %v, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
