//go:build unix

package gateway

import "syscall"

// openFileLimit is the process's open-file limit (the soft one, which Go
// raises to the hard one at start); 0 when unknown.
func openFileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 0
	}
	return int(lim.Cur)
}
