//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/gateway"
)

// adminClient talks to the gateway's admin API.
type adminClient struct {
	url, tokenFile string
	http           *http.Client
}

func (c *adminClient) flags(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&c.url, "admin-url", "http://127.0.0.1:9090", "the gateway's admin API")
	cmd.PersistentFlags().StringVar(&c.tokenFile, "admin-token-file", "", "file with the admin token (wins over SALLYPORT_ADMIN_TOKEN)")
}

// token returns the admin token and where it came from, for messages:
// --admin-token-file when given (a flag on the command line wins over the
// environment, and a file it names must exist), else SALLYPORT_ADMIN_TOKEN.
func (c *adminClient) token() (tok, source string, err error) {
	if c.tokenFile != "" {
		source = "--admin-token-file " + c.tokenFile
		if tok, err = readTokenFile(c.tokenFile); err != nil {
			return "", source, fmt.Errorf("--admin-token-file: %w", err)
		}
		return tok, source, nil
	}
	if tok = strings.TrimSpace(os.Getenv("SALLYPORT_ADMIN_TOKEN")); tok != "" {
		return tok, "SALLYPORT_ADMIN_TOKEN", nil
	}
	return "", "", errors.New("no admin token: set SALLYPORT_ADMIN_TOKEN or --admin-token-file")
}

func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	tok, source, err := c.token()
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	base, err := adminBase(c.url)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("--admin-url: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.http
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	res, err := hc.Do(req)
	if err != nil {
		return adminDialError(c.url, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("the gateway refused the admin token (401) from %s; check it against the gateway's "+
			"admin.token_file or SALLYPORT_ADMIN_TOKEN (a gateway started without an admin token refuses every call "+
			"and says so in its log at start)", source)
	case res.StatusCode >= 300:
		var e gateway.APIError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin API: %s", e.Error)
		}
		// The admin API answers every error in JSON: this is another
		// server, most often the gateway's public listener (404 no-route)
		// or its tunnel listener (400 to plain HTTP).
		return fmt.Errorf("%s answered %s, not as the gateway's admin API does: --admin-url must name the gateway's "+
			"admin.addr (http://127.0.0.1:9090 by default), not its public.addr or tunnel.addr", c.url, res.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin API: unreadable answer: %w", err)
		}
	}
	return nil
}

// adminDialError says why a call to the admin API at url got no answer.
// Two slips answer in ways that do not read as such: https:// against the
// admin API, which speaks plain HTTP, and the address of another listener
// of the gateway that does not speak HTTP (tunnel.addr closes the
// connection without a word).
func adminDialError(url string, err error) error {
	switch {
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("--admin-url %s: the gateway's admin API speaks plain HTTP, not HTTPS: use http:// "+
			"(through an ssh tunnel or a TLS proxy of your own when it crosses a network)", url)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("--admin-url %s: the server closed the connection without an HTTP answer: this port does "+
			"not speak HTTP (perhaps it is the gateway's tunnel.addr); --admin-url must name the gateway's admin.addr "+
			"(http://127.0.0.1:9090 by default): %w", url, err)
	}
	return fmt.Errorf("cannot reach the gateway's admin API at %s: %w (is the gateway running? see admin.addr)", url, err)
}

// adminBase checks --admin-url and returns it without a trailing slash.
// The usual slip is the bare address of admin.addr (127.0.0.1:9090), which
// net/url cannot read, or reads as a scheme (localhost:9090).
func adminBase(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--admin-url %q: want the URL of the gateway's admin.addr, such as http://127.0.0.1:9090", s)
	}
	return strings.TrimSuffix(s, "/"), nil
}

func newTokenCmd() *cobra.Command {
	c := &adminClient{}
	cmd := &cobra.Command{Use: "token", Short: "Manage enrollment tokens (through the gateway's admin API)"}
	c.flags(cmd)
	var group, ttl string
	var uses int
	create := &cobra.Command{
		Use:   "create --group G [--ttl 1h] [--uses 1]",
		Short: "Create an enrollment token; prints only the token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if group == "" {
				return errors.New("missing --group")
			}
			var t gateway.APIToken
			if err := c.do(cmd.Context(), "POST", "/api/v1/tokens", gateway.APITokenRequest{Group: group, TTL: ttl, Uses: &uses}, &t); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	create.Flags().StringVar(&group, "group", "", "connector group the token enrolls agents into")
	create.Flags().StringVar(&ttl, "ttl", "1h", "how long the token may be used (0s: never expires)")
	create.Flags().IntVar(&uses, "uses", 1, "how many agents may enroll with it (0: unlimited)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var toks []gateway.APIToken
			if err := c.do(cmd.Context(), "GET", "/api/v1/tokens", nil, &toks); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			// STATE is the gateway's judgement, by its clock ("-" from a
			// gateway older than the field); it comes last so that the
			// columns before it keep their places.
			fmt.Fprintln(w, "ID\tGROUP\tUSED\tUSES\tEXPIRES\tSOURCE\tSTATE")
			for _, t := range toks {
				uses := "unlimited"
				if t.Uses > 0 {
					uses = fmt.Sprint(t.Uses)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", shown(t.ID), shown(t.Group), t.Used, uses, timeOr(t.Expires, "never"), t.Source,
					orDash(t.State))
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an enrollment token",
		Args:  oneID("token delete", "the token's ID (the ID column of sallyport token list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted token %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

func newConnectorCmd() *cobra.Command {
	c := &adminClient{}
	cmd := &cobra.Command{Use: "connector", Short: "List and revoke enrolled connectors (through the gateway's admin API)"}
	c.flags(cmd)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List enrolled connectors with their sessions and certificate expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cs []gateway.APIConnector
			if err := c.do(cmd.Context(), "GET", "/api/v1/connectors", nil, &cs); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tGROUP\tVERSION\tPLATFORM\tREMOTE\tSESSIONS\tCONNECTED SINCE\tCERT EXPIRES\tSTATUS")
			shared := sharedNames(cs)
			for _, x := range cs {
				st := "ok"
				if x.Revoked != nil {
					st = "revoked " + x.Revoked.UTC().Format(time.RFC3339)
				} else if n := shared[[2]string{x.Group, x.Name}]; n > 1 {
					st = fmt.Sprintf("ok, name used by %d connectors", n)
				}
				if x.Revoked == nil && x.SetAside > 0 {
					// Two processes of one connector: the earlier one is a
					// standby until the later one leaves.
					st += fmt.Sprintf(", %d of its sessions set aside: a later process of this connector connected "+
						"(a restart, or the agent runs twice from one data_dir)", x.SetAside)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", shown(x.ID), shown(x.Name), shown(x.Group),
					shown(x.Version), shown(x.Platform), shown(orDash(x.RemoteAddr)), x.Sessions, timeOr(x.ConnectedSince, "-"), x.CertExpires.UTC().Format(time.RFC3339), st)
			}
			return w.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a connector: close its sessions now and refuse its reconnects and renewals",
		Args:  oneID("connector revoke", "the connector's ID (the ID column of sallyport connector list)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var x gateway.APIRevoked
			if err := c.do(cmd.Context(), "POST", "/api/v1/connectors/"+url.PathEscape(args[0])+"/revoke", nil, &x); err != nil {
				return err
			}
			if x.AlreadyRevoked {
				fmt.Fprintf(cmd.OutOrStdout(), "connector %s (%s, group %s) was already revoked at %s\n", shown(x.ID), shown(x.Name),
					shown(x.Group), timeOr(x.Revoked, "an unknown time"))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked connector %s (%s, group %s)\n", shown(x.ID), shown(x.Name), shown(x.Group))
			return nil
		},
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

// sharedNames counts the unrevoked connectors of each group and name: an
// agent installed again under its old name leaves its predecessor enrolled
// until it is revoked.
func sharedNames(cs []gateway.APIConnector) map[[2]string]int {
	n := map[[2]string]int{}
	for _, x := range cs {
		if x.Revoked == nil {
			n[[2]string{x.Group, x.Name}]++
		}
	}
	return n
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shown makes a field of the admin API's answer safe to print on a
// terminal: control characters (escape sequences, line breaks, tabs that
// would shift the columns), format characters (bidirectional overrides,
// zero-width ones) and line separators become Go escapes (\x1b, \u202e).
// Gateways refuse such names at enrollment since they check them, but a
// store kept from an older gateway may still hold them, and the admin URL
// may name another server.
func shown(s string) string {
	if !strings.ContainsFunc(s, unprintable) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unprintable(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// oneID is the Args check of a command that takes one ID: cobra's own
// said only "accepts 1 arg(s), received 0", naming neither the ID nor
// where to find it.
func oneID(cmd, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("sallyport %s takes one argument, %s; got %d", cmd, what, len(args))
		}
		return nil
	}
}
