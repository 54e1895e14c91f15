//go:build unix

package bench

import "syscall"

// raiseOpenFiles raises the soft limit on open files to the hard limit
// (the Go runtime does this at start on most systems already) and returns
// the soft limit now in force.
func raiseOpenFiles() (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		}
	}
	return int(min(lim.Cur, 1<<30)), nil
}
