// Package atomicfile writes files that hold keys and certificates so that a
// crash never leaves a half-written file under the final name, nor loses a
// write that was reported done.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Write writes data to path with exactly mode perm (whatever the umask),
// through a temporary file (created 0600) in the same directory, synced,
// renamed into place, and the directory synced (see Rename).
func Write(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return Rename(f.Name(), path)
}

// Rename renames oldpath to newpath and then syncs newpath's directory, so
// that the rename is on disk when it returns. Without that a power loss
// seconds later may bring back the old file: for an agent's key and
// certificate, the ones a renewal replaced, which the gateway retires as
// soon as the agent connects with the new ones, so the agent would be
// locked out until enrolled again.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	syncDir(filepath.Dir(newpath))
	return nil
}

// syncDir syncs the directory dir, best effort: the rename is done, and a
// file system that cannot sync a directory (Windows cannot open one as a
// file; some network file systems refuse) offers nothing better. A
// variable, so that tests see the call.
var syncDir = func(dir string) {
	if runtime.GOOS == "windows" {
		return
	}
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync() //nolint:errcheck // best effort, see above
	d.Close()
}
