//go:build linux && !race

package rawsock

import (
	"syscall"
	"unsafe"
)

// ReadFD is read(2) on fd into p through syscall.RawSyscall: the scheduler
// is not told (see the package comment). fd must be non-blocking. While the
// raw calls are off (Set), through package syscall; an empty p, as there.
func ReadFD(fd uintptr, p []byte) (int, error) {
	if off.Load() || len(p) == 0 {
		return plainRead(fd, p)
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// WriteFD is write(2) of p on fd, as ReadFD.
func WriteFD(fd uintptr, p []byte) (int, error) {
	if off.Load() || len(p) == 0 {
		return plainWrite(fd, p)
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
