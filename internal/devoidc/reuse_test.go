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
)

// TestRefreshTokenReuse: refresh tokens rotate; a used one presented
// again is refused and counted, and with RevokeOnReuse it also revokes
// the token its use gave (the sign-in's whole family), as providers with
// reuse detection do. Another sign-in's tokens are not touched.
func TestRefreshTokenReuse(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		t.Run(map[bool]string{false: "refuse", true: "revoke"}[revoke], func(t *testing.T) {
			ts := httptest.NewServer(nil)
			defer ts.Close()
			p := New(Config{Issuer: ts.URL, Users: []User{{Username: "u", Password: "pw"}},
				Clients: []Client{{ID: "c", Secret: "s"}}, RevokeOnReuse: revoke})
			ts.Config.Handler = p.Handler()
			c := ts.Client()
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			token := func(f url.Values) (int, string) {
				req, _ := http.NewRequest("POST", ts.URL+"/token", strings.NewReader(f.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth("c", "s")
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				var m struct {
					RefreshToken string `json:"refresh_token"`
					IDToken      string `json:"id_token"`
				}
				json.NewDecoder(res.Body).Decode(&m)
				return res.StatusCode, m.RefreshToken
			}
			signIn := func() string {
				verifier := "0123456789abcdef0123456789abcdef0123456789ab"
				sum := sha256.Sum256([]byte(verifier))
				f := url.Values{"response_type": {"code"}, "client_id": {"c"}, "redirect_uri": {"http://app/cb"},
					"scope": {"openid"}, "state": {"st"}, "nonce": {"n"}, "username": {"u"}, "password": {"pw"},
					"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
				res, err := c.PostForm(ts.URL+"/authorize", f)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				st, rt := token(url.Values{"grant_type": {"authorization_code"}, "code": {mustCode(t, res)},
					"redirect_uri": {"http://app/cb"}, "code_verifier": {verifier}})
				if st != 200 || rt == "" {
					t.Fatalf("exchange: %d %q", st, rt)
				}
				return rt
			}
			refresh := func(rt string) (int, string) {
				return token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			}
			first, other := signIn(), signIn()
			st, second := refresh(first)
			if st != 200 || second == "" || second == first {
				t.Fatalf("refresh: %d %q", st, second)
			}
			if st, _ := refresh(first); st != 400 {
				t.Errorf("a used refresh token presented again: %d, want 400", st)
			}
			if n := p.Reused(); n != 1 {
				t.Errorf("Reused() = %d, want 1", n)
			}
			want := 200
			if revoke {
				want = 400
			}
			if st, _ := refresh(second); st != want {
				t.Errorf("the token the reused one gave: %d, want %d (RevokeOnReuse %v)", st, want, revoke)
			}
			if st, _ := refresh(other); st != 200 {
				t.Errorf("another sign-in's refresh token: %d, want 200", st)
			}
		})
	}
}
