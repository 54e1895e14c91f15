package demoapp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
)

// identity is what the page shows about the signed-in user, from the
// headers Sallyport's gateway sets for apps with pre-authentication.
type identity struct {
	User, Email, Groups string
	// Claims is the assertion's payload, decoded but not verified: a real
	// app verifies it with the gateway's JWKS (see the README).
	Claims string
}

// identityFrom reads the X-Sallyport-* identity headers; nil when absent.
func identityFrom(r *http.Request) *identity {
	user := r.Header.Get("X-Sallyport-User")
	if user == "" {
		return nil
	}
	id := &identity{User: user, Email: r.Header.Get("X-Sallyport-Email"), Groups: r.Header.Get("X-Sallyport-Groups")}
	parts := strings.Split(r.Header.Get("X-Sallyport-Assertion"), ".")
	if len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var pretty bytes.Buffer
			if json.Indent(&pretty, payload, "", "  ") == nil {
				id.Claims = pretty.String()
			}
		}
	}
	return id
}
