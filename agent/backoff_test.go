package agent

import (
	"math"
	"testing"
	"time"
)

func constBackoffRand(v float64) func() float64 { return func() float64 { return v } }

func TestBackoffNext(t *testing.T) {
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"defaults first step, no jitter", Backoff{Rand: constBackoffRand(0)}, 0, 500 * time.Millisecond},
		{"defaults first step, most jitter", Backoff{Rand: constBackoffRand(1)}, 0, 250 * time.Millisecond},
		{"defaults second step", Backoff{Rand: constBackoffRand(0)}, 1, time.Second},
		{"defaults half jitter", Backoff{Rand: constBackoffRand(0.5)}, 2, 1500 * time.Millisecond},
		{"defaults capped", Backoff{Rand: constBackoffRand(0)}, 6, 30 * time.Second},
		{"defaults capped, most jitter", Backoff{Rand: constBackoffRand(1)}, 6, 15 * time.Second},
		{"just below cap", Backoff{Rand: constBackoffRand(0)}, 5, 16 * time.Second},
		{"huge attempt", Backoff{Rand: constBackoffRand(0)}, math.MaxInt, 30 * time.Second},
		{"attempt 63", Backoff{Rand: constBackoffRand(0)}, 63, 30 * time.Second},
		{"attempt 64", Backoff{Rand: constBackoffRand(0)}, 64, 30 * time.Second},
		{"negative attempt", Backoff{Rand: constBackoffRand(0)}, -3, 500 * time.Millisecond},
		{"custom", Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: constBackoffRand(0)}, 3, 800 * time.Millisecond},
		{"custom capped", Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: constBackoffRand(0)}, 4, time.Second},
		{"max below min", Backoff{Min: time.Minute, Max: time.Second, Rand: constBackoffRand(0)}, 0, time.Second},
		{"max below min, jitter", Backoff{Min: time.Minute, Max: time.Second, Rand: constBackoffRand(1)}, 0, 500 * time.Millisecond},
		{"negative fields use defaults", Backoff{Min: -1, Max: -1, Rand: constBackoffRand(0)}, 0, 500 * time.Millisecond},
		{"1ns never zero", Backoff{Min: 1, Max: 1, Rand: constBackoffRand(1)}, 0, 1},
		{"3ns most jitter", Backoff{Min: 3, Max: 3, Rand: constBackoffRand(1)}, 0, 2},
		{"rand above 1 clamped", Backoff{Rand: constBackoffRand(7)}, 0, 250 * time.Millisecond},
		{"rand negative clamped", Backoff{Rand: constBackoffRand(-7)}, 0, 500 * time.Millisecond},
		{"rand NaN clamped", Backoff{Rand: constBackoffRand(math.NaN())}, 0, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Next(tt.attempt); got != tt.want {
				t.Errorf("Next(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffDefaultRandBounds(t *testing.T) {
	for _, b := range []Backoff{
		{},
		{Min: time.Nanosecond, Max: 2 * time.Nanosecond},
		{Min: time.Millisecond, Max: time.Hour},
	} {
		lo, hi := b.bounds()
		for attempt := -1; attempt < 80; attempt++ {
			step := lo
			for i := 0; i < attempt && step < hi; i++ {
				step *= 2
			}
			step = min(step, hi)
			for range 50 {
				d := b.Next(attempt)
				if d <= 0 || d > hi || d > step || d < step-step/2 {
					t.Fatalf("%+v Next(%d) = %v, want in [%v, %v]", b, attempt, d, step-step/2, step)
				}
			}
		}
	}
}

func TestBackoffStepsNeverShrink(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 5 * time.Second, Rand: constBackoffRand(0)}
	prev := time.Duration(0)
	for attempt := range 100 {
		d := b.Next(attempt)
		if d < prev {
			t.Fatalf("Next(%d) = %v < Next(%d) = %v", attempt, d, attempt-1, prev)
		}
		prev = d
	}
	if prev != 5*time.Second {
		t.Fatalf("final step %v, want Max", prev)
	}
}

// TestBackoffStable: a connection counts as working once it lasted Max.
func TestBackoffStable(t *testing.T) {
	for _, tt := range []struct {
		b    Backoff
		d    time.Duration
		want bool
	}{
		{Backoff{}, 29 * time.Second, false},
		{Backoff{}, 30 * time.Second, true},
		{Backoff{}, 0, false},
		{Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, 199 * time.Millisecond, false},
		{Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, time.Second, true},
		{Backoff{Min: time.Minute, Max: time.Second}, time.Second, true},
	} {
		if got := tt.b.Stable(tt.d); got != tt.want {
			t.Errorf("%+v.Stable(%v) = %v, want %v", tt.b, tt.d, got, tt.want)
		}
	}
}
