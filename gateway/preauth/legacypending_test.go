package preauth

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/assertion"
)

// TestLegacyPendingBoundedUnderTLS: after an upgrade under TLS a browser
// holds 8 pending sign-ins of the previous version (sallyport_login_<id>,
// without the __Secure- prefix). Starting a ninth expires the oldest under
// its old name too, and the callback expires the old-named ones (they
// complete no sign-in under TLS any more): before, neither did, and a
// callback carried 16 pre-login cookies (up to ~62 KB with long return
// addresses, near the 64 KiB head limit) for up to 10 minutes (review12).
func TestLegacyPendingBoundedUnderTLS(t *testing.T) {
	ks, _ := assertion.NewKeySet(assertion.KeySetConfig{})
	s, err := New(Config{CookieKey: make([]byte, KeySize), Keys: ks,
		Providers: []ProviderConfig{{Name: "corp", Issuer: "https://idp.example", ClientID: "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(5 * time.Minute).Unix()
	var list, cookies []string
	for i := range maxPendingSignIns {
		id := fmt.Sprintf("%016x", i+1)
		v, err := s.sealer.seal("login", &loginState{State: "s", Expires: end + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, fmt.Sprintf("%s:%d", id, end+int64(i)))
		cookies = append(cookies, loginCookiePfx+id+"="+v)
	}
	r := httptest.NewRequest("GET", "https://app.example/", nil)
	r.Header.Set("Cookie", "__Host-"+pendingCookie+"="+strings.Join(list, ".")+"; "+strings.Join(cookies, "; "))
	rec := httptest.NewRecorder()
	s.addPending(rec, r, "00000000000000aa", end+100)
	oldest := loginCookiePfx + fmt.Sprintf("%016x", 1)
	expiredOldest := false
	for _, c := range rec.Result().Cookies() {
		expiredOldest = expiredOldest || c.Name == oldest && c.MaxAge < 0
	}
	if !expiredOldest {
		t.Errorf("starting a ninth sign-in did not expire the oldest, %s; set %q", oldest, rec.Result().Header.Values("Set-Cookie"))
	}

	// At the callback, the browser sends the 8 legacy cookies and 8 new ones.
	var newer []string
	for i := range maxPendingSignIns {
		id := fmt.Sprintf("%016x", 0x100+i)
		v, _ := s.sealer.seal("login", &loginState{State: "s", Expires: end + 200 + int64(i)})
		newer = append(newer, "__Secure-"+loginCookiePfx+id+"="+v)
	}
	r = httptest.NewRequest("GET", "https://app.example"+callbackPath+"?state=x", nil)
	r.Header.Set("Cookie", strings.Join(cookies, "; ")+"; "+strings.Join(newer, "; "))
	rec = httptest.NewRecorder()
	s.tidyPending(rec, r, loginCookieName(r, "ffffffffffffffff"))
	expired := 0
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 && strings.HasPrefix(c.Name, loginCookiePfx) {
			expired++
		}
	}
	if expired != len(cookies) {
		t.Errorf("the callback expired %d of the %d pre-login cookies of the previous version", expired, len(cookies))
	}
}
