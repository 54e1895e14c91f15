//go:build !unix

package procstune

import "time"

// processCPU is 0 where the tuner has no cheap way to read the process's
// CPU time: the scheduling latencies decide alone.
func processCPU() time.Duration { return 0 }
