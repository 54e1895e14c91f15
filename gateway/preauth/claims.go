package preauth

import "github.com/go-jose/go-jose/v4/jwt"

func claimsFor(subject, app string) jwt.Claims {
	return jwt.Claims{Subject: subject, Audience: jwt.Audience{app}}
}
