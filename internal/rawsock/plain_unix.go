//go:build unix

package rawsock

import "syscall"

// plainRead is read(2) through package syscall, which enters the
// scheduler's system-call state and tells the race detector.
func plainRead(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// plainWrite is write(2) through package syscall.
func plainWrite(fd uintptr, p []byte) (int, error) {
	n, err := syscall.Write(int(fd), p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
