package devoidc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProvider(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.Start()
	defer ts.Close()
	p := New(Config{Issuer: ts.URL, Users: []User{{Username: "u", Password: "pw", Email: "u@example.com"}},
		Clients: []Client{{ID: "c", Secret: "s"}}})
	ts.Config.Handler = p.Handler()
	c := ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	verifier := "0123456789abcdef0123456789abcdef0123456789ab"
	sum := sha256.Sum256([]byte(verifier))
	authz := url.Values{"response_type": {"code"}, "client_id": {"c"}, "redirect_uri": {"http://app/cb"},
		"scope": {"openid email"}, "state": {"st"}, "nonce": {"n"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	if res := get(t, c, ts.URL+"/authorize?"+authz.Encode()); res.StatusCode != 200 {
		t.Fatalf("form: %d", res.StatusCode)
	}
	bad := url.Values{}
	for k, v := range authz {
		bad[k] = v
	}
	bad.Del("code_challenge")
	if res := get(t, c, ts.URL+"/authorize?"+bad.Encode()); res.StatusCode != 400 {
		t.Errorf("without PKCE: %d", res.StatusCode)
	}
	signIn := func(pw string) *http.Response {
		f := url.Values{"username": {"u"}, "password": {pw}}
		for k, v := range authz {
			f[k] = v
		}
		res, err := c.PostForm(ts.URL+"/authorize", f)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := signIn("wrong"); res.StatusCode != 401 {
		t.Errorf("wrong password: %d", res.StatusCode)
	}
	loc, _ := url.Parse(signIn("pw").Header.Get("Location"))
	code := loc.Query().Get("code")
	if loc.Host != "app" || loc.Query().Get("state") != "st" || code == "" {
		t.Fatalf("redirect %v", loc)
	}
	token := func(f url.Values, secret string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", ts.URL+"/token", strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("c", secret)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	exchange := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://app/cb"}, "code_verifier": {verifier}}
	if st, _ := token(exchange, "wrong"); st != 401 {
		t.Errorf("wrong secret: %d", st)
	}
	wrongVerifier := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://app/cb"}, "code_verifier": {"x"}}
	if st, m := token(wrongVerifier, "s"); st != 400 || m["error"] != "invalid_grant" {
		t.Errorf("wrong verifier: %d %v", st, m)
	}
	// The failed attempt used the code up: codes are single use.
	if st, _ := token(exchange, "s"); st != 400 {
		t.Errorf("code reused: %d", st)
	}
	code = mustCode(t, signIn("pw"))
	exchange.Set("code", code)
	st, m := token(exchange, "s")
	if st != 200 || m["id_token"] == nil || m["refresh_token"] == nil {
		t.Fatalf("exchange: %d %v", st, m)
	}
	rt := m["refresh_token"].(string)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if st, m := token(refresh, "s"); st != 200 || m["refresh_token"] == rt {
		t.Errorf("refresh: %d %v", st, m)
	}
	if st, _ := token(refresh, "s"); st != 400 {
		t.Errorf("refresh token reused: %d", st)
	}
	p.SetDown(true)
	if res := get(t, c, ts.URL+"/.well-known/openid-configuration"); res.StatusCode != 503 {
		t.Errorf("down: %d", res.StatusCode)
	}
}

func mustCode(t *testing.T, res *http.Response) string {
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code in %v", res.Header)
	}
	return loc.Query().Get("code")
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// TestRotateKey: after a rotation the provider signs with the new key and
// publishes it; the old key stays published only when asked to, and the
// userinfo endpoint accepts tokens of every published key.
func TestRotateKey(t *testing.T) {
	ts := httptest.NewServer(nil)
	defer ts.Close()
	p := New(Config{Issuer: ts.URL, Users: []User{{Username: "u", Password: "pw"}}, Clients: []Client{{ID: "c"}}})
	ts.Config.Handler = p.Handler()
	c := ts.Client()
	kids := func() []string {
		res, err := c.Get(ts.URL + "/jwks")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.Kid)
		}
		return ids
	}
	userinfo := func(tok string) int {
		req, _ := http.NewRequest("GET", ts.URL+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	first := p.KeyID()
	old := p.Mint(map[string]any{"sub": "u"})
	second := p.RotateKey(true)
	if p.KeyID() != second || second == first {
		t.Fatalf("key ids %q then %q, KeyID %q", first, second, p.KeyID())
	}
	if got := strings.Join(kids(), ","); got != first+","+second {
		t.Errorf("published %s, want %s,%s", got, first, second)
	}
	if st := userinfo(old); st != 200 {
		t.Errorf("token of the old, still published key: %d", st)
	}
	third := p.RotateKey(false)
	if got := strings.Join(kids(), ","); got != third {
		t.Errorf("published %s, want only %s", got, third)
	}
	if st := userinfo(old); st != 401 {
		t.Errorf("token of a withdrawn key: %d", st)
	}
	if st := userinfo(p.Mint(map[string]any{"sub": "u"})); st != 200 {
		t.Errorf("token of the new key: %d", st)
	}
}

// TestMoveEndpoints: after MoveEndpoints the discovery document names the
// new addresses, which answer, and the old ones answer 404.
func TestMoveEndpoints(t *testing.T) {
	ts := httptest.NewServer(nil)
	defer ts.Close()
	p := New(Config{Issuer: ts.URL})
	ts.Config.Handler = p.Handler()
	c := ts.Client()
	p.MoveEndpoints("/v2")
	res, err := c.Get(ts.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	err = json.NewDecoder(res.Body).Decode(&meta)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if meta["jwks_uri"] != ts.URL+"/v2/jwks" || meta["token_endpoint"] != ts.URL+"/v2/token" || meta["issuer"] != ts.URL {
		t.Fatalf("discovery after the move: %v", meta)
	}
	for path, want := range map[string]int{"/v2/jwks": 200, "/jwks": 404, "/v2jwks": 404} {
		if res := get(t, c, ts.URL+path); res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, res.StatusCode, want)
		}
	}
	p.MoveEndpoints("")
	if res := get(t, c, ts.URL+"/jwks"); res.StatusCode != 200 {
		t.Errorf("GET /jwks after moving back: %d", res.StatusCode)
	}
}

// TestSignInFormEscapes: the sign-in form carries every parameter of the
// authorization request back as a hidden field, escaped, and the error
// and the demo user's hint escaped too.
func TestSignInFormEscapes(t *testing.T) {
	p := New(Config{Users: []User{{Username: `al"ice<`, Password: "pw&1"}}})
	q := url.Values{}
	for _, k := range signInParams {
		q.Set(k, k+`"><script>`)
	}
	w := httptest.NewRecorder()
	p.renderForm(w, q, "<b>wrong</b> password")
	page := w.Body.String()
	if w.Code != http.StatusUnauthorized || strings.Contains(page, "<script>") || strings.Contains(page, "<b>wrong") {
		t.Fatalf("status %d, raw input on the page:\n%s", w.Code, page)
	}
	for _, k := range signInParams {
		if want := `<input type="hidden" name="` + k + `" value="` + k + `&#34;&gt;&lt;script&gt;">`; !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, want := range []string{`<p id="error" style="color:#a00">&lt;b&gt;wrong&lt;/b&gt; password</p>`,
		`value="al&#34;ice&lt;"`, `<code>pw&amp;1</code>`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}
