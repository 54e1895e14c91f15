package preauth

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestDropNamelessGatewaySetCookies: an app cannot plant the gateway's
// cookies with a cookie without a name either. Browsers keep
// "Set-Cookie: =sallyport_session=x" and send it as "Cookie:
// sallyport_session=x", which the gateway reads as its session (session
// fixation through an app without sign-in on the same host). The old
// check took the name before the first "=", "", and let
// "=sallyport_session=planted" and "=__Host-sallyport_session=x" through.
func TestDropNamelessGatewaySetCookies(t *testing.T) {
	in := []string{
		"=sallyport_session=planted; Path=/", " = sallyport_login_0011223344556677=x; Path=/.sallyport/auth/callback",
		"sallyport_pending; Path=/", "=__Host-sallyport_session=x; Secure; Path=/", "app=kept", "=app2=kept; Path=/",
		"theme=sallyport_session", "sallyport_session=x", "other; Path=/",
	}
	want := []string{"app=kept", "=app2=kept; Path=/", "theme=sallyport_session", "other; Path=/"}
	if got := DropGatewaySetCookies(in); !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
}

// FuzzDropGatewaySetCookies: no Set-Cookie that DropGatewaySetCookies
// keeps makes a browser send a cookie that the gateway's server reads as
// one of its own. The browser is RFC 6265bis: the name-value pair ends at
// the first ";"; without "=", or with an empty name, the cookie has no
// name and is sent as its value alone.
func FuzzDropGatewaySetCookies(f *testing.F) {
	for _, s := range []string{"=sallyport_session=x", "sallyport_session=x", "a=b", "=a=b", "sallyport_pending", " \t=\t__Host-sallyport_session=x",
		"x;sallyport_session=y", "=;sallyport_session=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if kept := DropGatewaySetCookies([]string{v}); len(kept) == 0 {
			return
		}
		pair, _, _ := strings.Cut(v, ";")
		name, value, ok := strings.Cut(pair, "=")
		if !ok {
			name, value = "", pair
		}
		name, value = strings.Trim(name, " \t"), strings.Trim(value, " \t")
		sent := value
		if name != "" {
			sent = name + "=" + value
		}
		for _, c := range (&http.Request{Header: http.Header{"Cookie": {sent}}}).Cookies() {
			if IsGatewayCookie(c.Name) {
				t.Fatalf("Set-Cookie %q kept: the browser sends %q, read as the gateway's %s", v, sent, c.Name)
			}
		}
	})
}
