//go:build unix

package gateway

import "syscall"

// setReceiveBuffer sets a socket's SO_RCVBUF (see smallReceiveBuffer).
func setReceiveBuffer(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
