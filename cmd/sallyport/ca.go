//go:build !agentonly

package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
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
	var retire bool
	rotate := &cobra.Command{
		Use:   "rotate --config gateway.yaml",
		Short: "Add a new connector CA that signs from now on; the previous CAs stay trusted",
		Long: "rotate adds a new connector CA to the gateway's store in data_dir. New enrollments and\n" +
			"renewals are signed by it at once; certificates of the previous CA stay valid, and agents\n" +
			"move to the new CA when they renew (at two thirds of their lifetime). It works on the\n" +
			"data_dir directly and may run while the gateway runs: the gateway reads the CAs from the\n" +
			"store at every session start and signature.\n\n" +
			"After one certificate lifetime (tunnel.cert_lifetime, 30 days by default) every agent has\n" +
			"renewed: run `sallyport gateway ca rotate --retire-previous` to drop the old CAs (without\n" +
			"adding a new one), so their keys are no longer trusted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := caDataDir(path, dataDir)
			if err != nil {
				return err
			}
			return runCARotate(cmd.Context(), dir, retire, cmd.OutOrStdout())
		},
	}
	rotate.Flags().StringVarP(&path, "config", "c", "", "gateway config file (its data_dir holds the store)")
	rotate.Flags().StringVar(&dataDir, "data-dir", "", "the gateway's data_dir (instead of --config)")
	rotate.Flags().BoolVar(&retire, "retire-previous", false, "remove the CAs that no longer sign instead of adding one")
	ca.AddCommand(rotate)
	return ca
}

func caDataDir(path, dataDir string) (string, error) {
	switch {
	case path != "" && dataDir != "":
		return "", errors.New("give --config or --data-dir, not both")
	case dataDir != "":
		return dataDir, nil
	case path != "":
		cfg, err := config.LoadGateway(path)
		if err != nil {
			return "", err
		}
		return cfg.DataDirOrDefault(), nil
	}
	return "", errors.New("missing --config (or --data-dir); see --help")
}

func runCARotate(ctx context.Context, dir string, retire bool, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	st, err := store.Open(ctx, dir)
	if err != nil {
		return err
	}
	defer st.Close()
	if retire {
		n, err := st.RetireCAs(ctx)
		if err != nil {
			return err
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
		"  sallyport gateway ca rotate --retire-previous --data-dir %s\n",
		cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.DateOnly), len(cas), dir)
	return nil
}
