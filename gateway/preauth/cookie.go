package preauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/sallyport/sallyport/internal/forwarded"
)

// KeySize is the length of the cookie key.
const KeySize = 32

// Cookie format: "v1." + base64url(12-byte nonce || AES-256-GCM ciphertext
// of the JSON payload). The cookie's purpose ("session" or "login") is the
// additional data, so a login cookie can never pass for a session cookie.
const cookieVersion = "v1."

// sealer encrypts and authenticates cookie payloads.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("preauth: cookie key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("preauth: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("preauth: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(purpose string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(purpose))
	return cookieVersion + base64.RawURLEncoding.EncodeToString(out), nil
}

// errBadCookie is any cookie that does not decrypt: tampered, from another
// key (the key file was replaced), or not ours.
var errBadCookie = errors.New("cookie does not decrypt")

func (s *sealer) open(purpose, value string, v any) error {
	rest, ok := strings.CutPrefix(value, cookieVersion)
	if !ok {
		return errBadCookie
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return errBadCookie
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return errBadCookie
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return errBadCookie
	}
	return nil
}

// LoadOrCreateKey reads the cookie key from file, or creates the file (mode
// 0600) with a new random key. Sessions survive a restart as long as the
// file does; deleting it signs everybody out. Gateways that share sessions
// (replicas, or cookie_domain across gateways) must share the file.
//
// A new key is written to a temporary file, synced, and linked to file's
// name, which fails if file exists: a crash never leaves a half-written
// key, and of processes starting together on one data_dir the first one's
// key is used by all.
func LoadOrCreateKey(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err == nil {
		return decodeKey(file, data)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("session key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	encoded := []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*.tmp") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(encoded)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	err = os.Link(tmp.Name(), file)
	switch {
	case errors.Is(err, os.ErrExist): // another process was first
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
		return decodeKey(file, data)
	case err != nil:
		// A file system without hard links: replace instead (still never
		// half-written).
		if err := os.Rename(tmp.Name(), file); err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
	}
	return key, nil
}

func decodeKey(file string, data []byte) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("session key %s: want %d random bytes in base64 (delete the file to create a new key; everybody must sign in again)", file, KeySize)
	}
	return key, nil
}

// Cookie names. Under TLS the session cookie takes a prefix the browser
// enforces: __Host- (Secure, Path=/, no Domain) for host-only cookies,
// __Secure- when cookie_domain shares it across hosts.
const (
	sessionCookie    = "sallyport_session"
	loginCookiePfx   = "sallyport_login_"
	callbackPath     = "/.sallyport/auth/callback"
	logoutPath       = "/.sallyport/auth/logout"
	maxCookieValue   = 3800 // browsers keep at least 4096 bytes per cookie, name and attributes included
	maxChunks        = 4    // a session may span sallyport_session, _1, _2 and _3
	loginCookieLife  = 10 * 60
	cookieNameMarker = "sallyport_"
)

// CallbackPath is the sign-in callback, on every host (the gateway's
// metrics tell a completed sign-in by it).
const CallbackPath = callbackPath

// secure reports whether the browser reached the gateway over HTTPS
// (directly, or through a trusted proxy): then cookies are Secure and the
// callback URL is https.
func secure(r *http.Request) bool { return forwarded.HTTPS(r) }

// sessionCookieName is the session cookie's name for r.
func (s *Service) sessionCookieName(r *http.Request) string {
	switch {
	case !secure(r):
		return sessionCookie
	case s.cookieDomain(r) == "":
		return "__Host-" + sessionCookie
	default:
		return "__Secure-" + sessionCookie
	}
}

// cookieDomain is the Domain attribute for r's host: cookie_domain when the
// host is that domain or under it, else "" (host-only).
func (s *Service) cookieDomain(r *http.Request) string {
	d := s.cfg.CookieDomain
	if d == "" {
		return ""
	}
	host := strings.ToLower(hostOnly(r.Host))
	if host == d || strings.HasSuffix(host, "."+d) {
		return d
	}
	return ""
}

// A sealed session longer than maxCookieValue (many groups and a long
// refresh token) is split over chunk cookies: the session cookie holds the
// first part, NAME_1, NAME_2… the rest. AES-GCM authenticates the whole, so
// a missing or stale chunk reads as an invalid session.
func chunkName(base string, i int) string {
	if i == 0 {
		return base
	}
	return base + "_" + string(rune('0'+i))
}

// readSessionCookie joins the session cookie and its chunks.
func (s *Service) readSessionCookie(r *http.Request) string {
	base := s.sessionCookieName(r)
	var b strings.Builder
	for i := range maxChunks {
		c, err := r.Cookie(chunkName(base, i))
		if err != nil {
			break
		}
		b.WriteString(c.Value)
	}
	return b.String()
}

// setSessionCookie writes value (split into chunks when long) and removes
// chunks r carries that value no longer needs. value "" clears them all.
func (s *Service) setSessionCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	base := s.sessionCookieName(r)
	for i := range maxChunks {
		part := value
		if len(part) > maxCookieValue {
			part = part[:maxCookieValue]
		}
		value = value[len(part):]
		age := maxAge
		if part == "" {
			if _, err := r.Cookie(chunkName(base, i)); err != nil && i > 0 {
				continue // nothing to remove
			}
			age = -1
		}
		http.SetCookie(w, &http.Cookie{
			Name: chunkName(base, i), Value: part, Path: "/", Domain: s.cookieDomain(r),
			MaxAge: age, HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteLaxMode,
		})
	}
}

func (s *Service) clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	s.setSessionCookie(w, r, "", -1)
}

// IsGatewayCookie reports whether a cookie name is one of the gateway's
// (never forwarded to apps).
func IsGatewayCookie(name string) bool {
	name = strings.TrimPrefix(strings.TrimPrefix(name, "__Host-"), "__Secure-")
	return strings.HasPrefix(name, cookieNameMarker)
}

// hostOnly strips a port from a Host value.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}
