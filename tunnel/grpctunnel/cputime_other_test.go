//go:build !unix

package grpctunnel_test

import (
	"testing"
	"time"
)

// processCPU is not measured outside Unix; the metric then reads 0.
func processCPU(testing.TB) time.Duration { return 0 }
