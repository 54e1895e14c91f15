package demoapp

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIndexShowsIdentity(t *testing.T) {
	h := New()
	req := httptest.NewRequest("GET", "/", nil)
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"sub-alice","aud":"private"}`))
	req.Header.Set("X-Sallyport-User", "sub-alice")
	req.Header.Set("X-Sallyport-Email", "alice@example.com")
	req.Header.Set("X-Sallyport-Groups", "staff")
	req.Header.Set("X-Sallyport-Assertion", "e30."+payload+".sig")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := rec.Body.String()
	for _, want := range []string{`id="identity"`, `<dd id="id-email">alice@example.com</dd>`, `&#34;aud&#34;: &#34;private&#34;`,
		`href="/.sallyport/auth/logout"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if strings.Contains(rec.Body.String(), `id="identity"`) {
		t.Error("identity section without identity headers")
	}
}
