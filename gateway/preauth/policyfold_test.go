package preauth

import "testing"

// TestPolicyFoldsASCIIOnly: emails and domains in a policy match without
// regard to ASCII case, and only that. The old match used
// strings.EqualFold, for which the KELVIN SIGN (U+212A) is "k" and the
// LONG S (U+017F) is "s": a user whose provider vouched for
// "\u212aate@example.com" passed a policy that lists kate@example.com, and
// one at "ban\u212a.example" a policy that lists the domain bank.example.
func TestPolicyFoldsASCIIOnly(t *testing.T) {
	pol := &Policy{Emails: []string{"kate@example.com"}, Domains: []string{"bank.example", "@corp.example"}}
	for email, want := range map[string]bool{
		"kate@example.com": true, "KATE@Example.COM": true, "x@bank.example": true, "x@BANK.example": true,
		"x@corp.example": true, "\u212aate@example.com": false, "x@ban\u212a.example": false, "x@corp.exampl\u212a": false,
		"\u017fam@corp.example\u017f": false, "kate@example.co": false, "x@sub.bank.example": false,
	} {
		if got := pol.allows(&Identity{Subject: "s", Email: email}); got != want {
			t.Errorf("allows(%q) = %v, want %v", email, got, want)
		}
	}
}
