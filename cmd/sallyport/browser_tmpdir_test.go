//go:build !agentonly

package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sallyport/sallyport/internal/shortskip"
)

// TestBrowserLeavesNoTempDir: the headless Chromium of the browser tests
// (browserOptions) leaves nothing in the system's temporary directory once
// the test is over, though it is killed (its context cancelled, or a
// timeout) rather than closed. Chromium keeps its profile lock's socket in
// a directory of its own under $TMPDIR (org.chromium.Chromium.*), which a
// killed browser never removes: every run of a browser test left one in
// /tmp.
func TestBrowserLeavesNoTempDir(t *testing.T) {
	shortskip.Long(t, "starts headless Chromium")
	exe := chromiumPath(t)
	var socketDir string
	t.Run("browser", func(t *testing.T) {
		profile := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // bounds a hung browser
		defer cancel()
		actx, cancelAlloc := chromedp.NewExecAllocator(ctx, browserOptions(t, exe, chromedp.UserDataDir(profile))...)
		defer cancelAlloc()
		bctx, cancelBrowser := chromedp.NewContext(actx)
		defer cancelBrowser()
		if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
			t.Fatalf("browser: %v", err)
		}
		socket, err := os.Readlink(filepath.Join(profile, "SingletonSocket"))
		if err != nil {
			t.Fatalf("Chromium's profile has no SingletonSocket link: %v", err)
		}
		socketDir = filepath.Dir(socket)
		cancelBrowser() // kills it, as the browser tests' cancel does
		cancelAlloc()   // waits for it to exit
	})
	if socketDir == "" {
		return // the subtest failed
	}
	if _, err := os.Stat(socketDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Chromium's socket directory %s is left after the test (stat: %v); want it inside the test's temporary directory", socketDir, err)
	}
}
