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
	return rawRW(syscall.SYS_READ, fd, p)
}

// WriteFD is write(2) of p on fd, as ReadFD.
func WriteFD(fd uintptr, p []byte) (int, error) {
	if off.Load() || len(p) == 0 {
		return plainWrite(fd, p)
	}
	return rawRW(syscall.SYS_WRITE, fd, p)
}

// rawRW makes read(2) or write(2) (trap) on fd with p, which is not empty.
func rawRW(trap, fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
