//go:build !unix

package tunneltest

import (
	"testing"
	"time"
)

// ProcessCPU is not measured outside Unix; the metric then reads 0.
func ProcessCPU(testing.TB) time.Duration { return 0 }
