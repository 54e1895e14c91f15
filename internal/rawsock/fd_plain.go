//go:build unix && !(linux && !race)

package rawsock

import "syscall"

// Raw reports whether ReadFD and WriteFD bypass the scheduler in this
// build: not here (the race detector, or not Linux).
const Raw = false

// ReadFD is read(2) on fd into p through package syscall.
func ReadFD(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// WriteFD is write(2) of p on fd through package syscall.
func WriteFD(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
