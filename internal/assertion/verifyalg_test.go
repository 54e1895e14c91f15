package assertion

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestVerifyAlgorithmConfusion: Verify takes ES256 by a key of the set
// only: not "none", not HS256 keyed with the published public key, not a
// key the token carries itself (jwk header), not a foreign key under a kid
// of the set, not another issuer.
func TestVerifyAlgorithmConfusion(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	ks, err := NewKeySet(KeySetConfig{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	set := jwksOf(t, ks)
	good := sign(t, ks, "alice", "app")
	head, _, _ := strings.Cut(good, ".")
	var h struct {
		Kid string `json:"kid"`
	}
	raw, _ := base64.RawURLEncoding.DecodeString(head)
	_ = json.Unmarshal(raw, &h)
	claims := Claims{Claims: jwt.Claims{Issuer: Issuer, Subject: "admin", Audience: jwt.Audience{"app"},
		IssuedAt: jwt.NewNumericDate(c.t), Expiry: jwt.NewNumericDate(c.t.Add(time.Minute))}}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	forged := map[string]string{
		"alg none": enc(map[string]string{"alg": "none", "kid": h.Kid}) + "." + enc(claims) + ".",
	}
	// HS256 with the public key's JSON (and its PEM-less bytes) as secret.
	pub, _ := json.Marshal(set.Keys[0])
	for name, secret := range map[string][]byte{"hs256 jwk": pub, "hs256 kid": []byte(h.Kid)} {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", h.Kid))
		if err != nil {
			t.Fatal(err)
		}
		forged[name], _ = jwt.Signed(s).Claims(claims).Serialize()
	}
	foreign, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: foreign, KeyID: h.Kid}}, nil)
	forged["foreign key, known kid"], _ = jwt.Signed(s).Claims(claims).Serialize()
	s, _ = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: foreign}, (&jose.SignerOptions{EmbedJWK: true}).WithHeader("kid", h.Kid))
	forged["embedded jwk"], _ = jwt.Signed(s).Claims(claims).Serialize()
	for name, tok := range forged {
		if got, err := Verify(tok, set, "app", c.t); err == nil {
			t.Errorf("%s: verified as %+v", name, got)
		}
	}
	other := claims
	other.Issuer = "someone-else"
	tok, err := jwt.Signed(ks.signer).Claims(other).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tok, set, "app", c.t); err == nil {
		t.Error("another issuer verified")
	}
	if _, err := Verify(good, set, "app", c.t); err != nil {
		t.Errorf("the gateway's own assertion: %v", err)
	}
}

// FuzzHeaderFold: a header name that lighttpd, Apache httpd < 2.4, PHP,
// WSGI or Rack would hand an app as HTTP_X_SALLYPORT_... (every byte but
// letters and digits to "_", letters upper case) is one IsHeader reports.
func FuzzHeaderFold(f *testing.F) {
	for _, s := range []string{"X-Sallyport-User", "X.Sallyport.User", "x_sallyport_", "X-Sallyport", "X~Sallyport~Groups", "Xsallyport-User"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var b strings.Builder
		for i := 0; i < len(name); i++ {
			switch c := name[i]; {
			case 'a' <= c && c <= 'z':
				b.WriteByte(c - 'a' + 'A')
			case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
				b.WriteByte(c)
			default:
				b.WriteByte('_')
			}
		}
		if cgi := b.String(); strings.HasPrefix(cgi, "X_SALLYPORT_") != IsHeader(name) {
			t.Fatalf("%q: CGI variable HTTP_%s, IsHeader %v", name, cgi, IsHeader(name))
		}
	})
}
