//go:build unix

package e2e

import "syscall"

// setSocketBuffer sets a socket's buffer size option (SO_RCVBUF, SO_SNDBUF).
func setSocketBuffer(fd uintptr, opt, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, n)
}
