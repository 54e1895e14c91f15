//go:build !agentonly

package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

func newCACmd() *cobra.Command {
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Manage the connector CA that signs agent certificates",
	}
	var path, dataDir string
	var retire, force bool
	rotate := &cobra.Command{
		Use:   "rotate --config gateway.yaml",
		Short: "Add a new connector CA that signs from now on; the previous CAs stay trusted",
		Long: "rotate adds a new connector CA to the gateway's store (in data_dir, or the PostgreSQL database\n" +
			"that the config's store section names). New enrollments and\n" +
			"renewals are signed by it at once; certificates of the previous CA stay valid, and agents\n" +
			"move to the new CA when they renew (at two thirds of their lifetime). It works on the\n" +
			"store directly and may run while the gateway (or its replicas) runs: the gateway reads the CAs from the\n" +
			"store at every session start and signature.\n\n" +
			"After one certificate lifetime (tunnel.cert_lifetime, 30 days by default) every agent has\n" +
			"renewed: run `sallyport gateway ca rotate --retire-previous` to drop the old CAs (without\n" +
			"adding a new one), so their keys are no longer trusted. It refuses while connectors that are\n" +
			"not revoked still hold unexpired certificates from before the newest CA (they would have to\n" +
			"enroll again), unless --force.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if force && !retire {
				// Without this, --force alone added a new CA: a rotation
				// nobody asked for, which also restarts the wait before
				// the previous CAs can be retired.
				return errors.New("--force works only with --retire-previous (retire the previous CAs even while " +
					"connectors hold their certificates); nothing was changed. To add a new CA, run rotate without --force")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			st, again, err := caStore(ctx, path, dataDir)
			if err != nil {
				return err
			}
			defer st.Close()
			if retire && !force {
				if err := checkRetire(ctx, st, time.Now()); err != nil {
					return err
				}
			}
			return runCARotate(ctx, st, again, retire, cmd.OutOrStdout())
		},
	}
	rotate.Flags().StringVarP(&path, "config", "c", "", "gateway config file (its store section or data_dir names the store)")
	rotate.Flags().StringVar(&dataDir, "data-dir", "", "the gateway's data_dir, for a store in SQLite (instead of --config)")
	rotate.Flags().BoolVar(&retire, "retire-previous", false, "remove the CAs that no longer sign instead of adding one")
	rotate.Flags().BoolVar(&force, "force", false, "with --retire-previous: retire even while connectors hold certificates from those CAs")
	ca.AddCommand(rotate)
	return ca
}

// caStore opens the store that --config or --data-dir names, and returns
// the flags that name it again (for the advice printed after a rotation).
func caStore(ctx context.Context, path, dataDir string) (st *store.DB, again string, err error) {
	switch {
	case path != "" && dataDir != "":
		return nil, "", errors.New("give --config or --data-dir, not both")
	case dataDir != "":
		if err := storeExists(dataDir); err != nil {
			return nil, "", fmt.Errorf("%w; check --data-dir: it must be the gateway's data_dir", err)
		}
		st, err := store.Open(ctx, dataDir)
		return st, "--data-dir " + dataDir, err
	case path != "":
		cfg, err := config.LoadGateway(path)
		if err != nil {
			return nil, "", err
		}
		if cfg.Store.PostgresKey() == "" {
			if err := storeExists(cfg.DataDirOrDefault()); err != nil {
				unset := ""
				if cfg.DataDir == "" {
					unset = " (data_dir is not set, so this is its default)"
				}
				return nil, "", cfg.SettingError("data_dir", fmt.Errorf("%w%s; check data_dir: it must be the directory "+
					"the gateway keeps its store in", err, unset))
			}
		}
		st, err := openStore(ctx, cfg)
		return st, "--config " + path, err
	}
	return nil, "", errors.New("missing --config (or --data-dir); see --help")
}

// storeExists fails unless dir holds a SQLite store. Opening a store
// creates one: a mistyped data dir would get a new store and a new CA, and
// rotate would report success on a CA no gateway uses.
func storeExists(dir string) error {
	p := filepath.Join(dir, store.FileName)
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("no Sallyport store in %s (no %s there%s)", dir, store.FileName, config.RelativeDirNote(dir))
	case err != nil:
		return fmt.Errorf("the store in %s: %w", dir, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("the store in %s: %s is not a file", dir, p)
	}
	return nil
}

// checkRetire refuses --retire-previous while a connector that is not
// revoked holds an unexpired certificate issued before the newest CA was
// added: retiring would lock it out at its next session (the README's
// "after one certificate lifetime", checked instead of trusted). It used
// to retire at once, also a minute after the rotation.
func checkRetire(ctx context.Context, st *store.DB, now time.Time) error {
	cas, err := st.CAs(ctx)
	if err != nil {
		return err
	}
	var active time.Time
	for _, ca := range cas {
		if ca.Active {
			active = ca.Created
		}
	}
	if len(cas) < 2 || active.IsZero() {
		return nil
	}
	cs, err := st.Connectors(ctx)
	if err != nil {
		return err
	}
	var held []string
	for _, c := range cs {
		// CertIssued is the NotBefore of the certificate in use, which the
		// CA backdates; a connector that never presented one has the
		// certificate of its enrollment.
		issued := c.CertIssued.Add(pki.Backdate)
		if c.CertIssued.IsZero() {
			issued = c.Enrolled
		}
		if c.Revoked.IsZero() && c.CertExpires.After(now) && issued.Before(active) {
			held = append(held, fmt.Sprintf("%s (%s, group %s, until %s)", c.ID, c.Name, c.Group,
				c.CertExpires.UTC().Format(time.RFC3339)))
		}
	}
	if len(held) == 0 {
		return nil
	}
	return fmt.Errorf("not retiring: %d connector(s) still hold certificates from the previous CA(s) and would have to "+
		"enroll again: %s. Run it once they have renewed to the newest CA (at two thirds of tunnel.cert_lifetime; "+
		"the CA was added %s), revoke the connectors that are gone (sallyport connector revoke ID), or pass --force",
		len(held), strings.Join(held, ", "), active.UTC().Format(time.RFC3339))
}

func runCARotate(ctx context.Context, st *store.DB, again string, retire bool, out io.Writer) error {
	if retire {
		n, err := st.RetireCAs(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			fmt.Fprintln(out, "no previous connector CA to remove: the store holds only the CA that signs")
			return nil
		}
		fmt.Fprintf(out, "removed %d previous connector CA(s); agents whose certificates they signed must enroll again\n", n)
		return nil
	}
	a := &pki.Authority{Store: st}
	if _, err := a.Init(ctx); err != nil {
		return err
	}
	ca, err := a.Rotate(ctx)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(ca.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	cas, err := st.CAs(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "new connector CA %q (valid until %s) signs from now on; %d CA(s) in the trust bundle.\n"+
		"Agents move to it when they renew. After one certificate lifetime, drop the old CAs with\n"+
		"  sallyport gateway ca rotate --retire-previous %s\n",
		cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.DateOnly), len(cas), again)
	return nil
}
