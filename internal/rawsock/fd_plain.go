//go:build unix && !(linux && !race)

package rawsock

// ReadFD is read(2) on fd into p through package syscall.
func ReadFD(fd uintptr, p []byte) (int, error) { return plainRead(fd, p) }

// WriteFD is write(2) of p on fd through package syscall.
func WriteFD(fd uintptr, p []byte) (int, error) { return plainWrite(fd, p) }
