package tunnel

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestRoundTripReadBody: a body the caller read before it took the stream
// (Options.Body; the gateway's small bodies) goes with the head in one
// frame, and RoundTrip does not read req.Body, which the caller already
// drained; it closes it.
func TestRoundTripReadBody(t *testing.T) {
	gw, ag := newPipe(8)
	startAgent(t, ag, &testBackend{})
	want := pattern(1000)
	body := &countingReader{r: strings.NewReader("")} // already read
	req := newRequest(t, "POST", "http://backend:80/upload", body)
	req.ContentLength = int64(len(want))
	var done doneCounter
	o := done.opts()
	o.Body = want
	o.ExpectContinue = true
	res, err := RoundTrip(gw.lease(), req, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	if got := readAll(t, res); !bytes.Equal(got, want) {
		t.Fatalf("echo of %d bytes, want the %d of Options.Body", len(got), len(want))
	}
	if h := gw.frames()[0]; !bytes.Equal(h.Data, want) || !h.End || h.GetRequest().GetExpectContinue() {
		t.Fatalf("head frame with %d bytes, end %v, expect_continue %v: want Options.Body and end with the head",
			len(h.Data), h.End, h.GetRequest().GetExpectContinue())
	}
	if n := body.reads.Load(); n != 0 {
		t.Fatalf("RoundTrip read req.Body %d times; want none: Options.Body is the whole body", n)
	}
	if !body.closed.Load() {
		t.Fatal("RoundTrip did not close req.Body")
	}
	gw.wantFinish(t, true)
	done.wantOnce(t)
}
