//go:build linux && !race

package rawsock

import (
	"syscall"
	"unsafe"
)

// Raw reports whether ReadFD and WriteFD bypass the scheduler in this
// build: on Linux without the race detector.
const Raw = true

// ReadFD is read(2) on fd into p (not empty) through syscall.RawSyscall: the
// scheduler is not told (see the package comment). fd must be non-blocking.
func ReadFD(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// WriteFD is write(2) of p (not empty) on fd, as ReadFD.
func WriteFD(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
