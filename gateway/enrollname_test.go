package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sallyport/sallyport/internal/store"
	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestEnrollSameNameWarns: enrolling under a name that unrevoked
// connectors of the same group have is not refused (an agent installed
// again keeps its name), but the answer names those connectors and the
// gateway logs a warning naming them; revoked ones, other groups and
// other names do not count. Without it nothing said that the old
// connector stayed enrolled until its certificate expired. The check
// works on a store without NamedConnectors too.
func TestEnrollSameNameWarns(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprint("wrapped=", wrapped), func(t *testing.T) {
			mem, err := store.OpenMemory(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mem.Close() })
			var st Store = mem
			if wrapped {
				st = struct{ Store }{mem} // hides NamedConnectors
			}
			core, logs := observer.New(zapcore.WarnLevel)
			g, err := New(Config{TunnelTLS: &tls.Config{}, Store: st, Log: zap.New(core),
				Tokens: []Token{{Token: "spt_g", Group: "g"}, {Token: "spt_h", Group: "h"}}})
			if err != nil {
				t.Fatal(err)
			}
			e := &enrollService{g: g}
			enroll := func(token, name string) *tunnelv1.EnrollResponse {
				t.Helper()
				res, err := e.Enroll(peerContext(), &tunnelv1.EnrollRequest{Token: token, Csr: testCSR(t), Name: name})
				if err != nil {
					t.Fatalf("enroll %s in %s: %v", name, token, err)
				}
				return res
			}
			revoked := enroll("spt_g", "web")
			if _, err := mem.RevokeConnector(context.Background(), revoked.GetConnectorId(), time.Now()); err != nil {
				t.Fatal(err)
			}
			first := enroll("spt_g", "web")
			if got := first.GetSameNameConnectorIds(); len(got) != 0 {
				t.Fatalf("same_name_connector_ids = %v beside a revoked connector, want none", got)
			}
			enroll("spt_h", "web")   // another group
			enroll("spt_g", "web-2") // another name
			enroll("spt_g", "")
			enroll("spt_g", "")
			if n := logs.FilterMessageSnippet("name that other connectors").Len(); n != 0 {
				t.Fatalf("%d warnings before a name was enrolled twice: %v", n, logs.All())
			}
			again := enroll("spt_g", "web")
			if got := again.GetSameNameConnectorIds(); len(got) != 1 || got[0] != first.GetConnectorId() {
				t.Fatalf("same_name_connector_ids = %v, want [%s]", got, first.GetConnectorId())
			}
			warned := logs.FilterMessageSnippet("name that other connectors").All()
			if len(warned) != 1 {
				t.Fatalf("warnings %v: want one about the name", logs.All())
			}
			f := warned[0].ContextMap()
			if f["connector"] != again.GetConnectorId() || f["name"] != "web" || f["group"] != "g" ||
				fmt.Sprint(f["same_name_connectors"]) != fmt.Sprint([]any{first.GetConnectorId()}) {
				t.Fatalf("warning fields %v", f)
			}
			if third := enroll("spt_g", "web"); fmt.Sprint(third.GetSameNameConnectorIds()) !=
				fmt.Sprint([]string{first.GetConnectorId(), again.GetConnectorId()}) {
				t.Fatalf("a third time: same_name_connector_ids = %v, want both, oldest first", third.GetSameNameConnectorIds())
			}
		})
	}
}
