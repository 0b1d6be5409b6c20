package main

import (
	"fmt"
	"time"

	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/internal/token"
	"github.com/spf13/cobra"
)

func tokenCmd() *cobra.Command {
	var keyFile, subject, role string
	var scopes []string
	var ttl time.Duration
	create := &cobra.Command{Use: "create --key-file F --subject S --role viewer|service|operator|admin [--scope PATTERN]... [--ttl D]",
		Short: "Sign a token with a private key whose public half is in the nodes' --token-public-keys", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if keyFile == "" || subject == "" || role == "" {
				return fmt.Errorf("--key-file, --subject and --role are required")
			}
			if ttl <= 0 || ttl > 366*24*time.Hour {
				return fmt.Errorf("--ttl %v: between 1s and 366 days", ttl)
			}
			key, err := tlsconf.LoadSigningKey(keyFile)
			if err != nil {
				return fmt.Errorf("--key-file: %w", err)
			}
			tok, err := token.Sign(key, subject, role, scopes, ttl, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), tok)
			return nil
		}}
	f := create.Flags()
	f.StringVar(&keyFile, "key-file", "", "PEM Ed25519 private key (token-key.pem from certs init)")
	f.StringVar(&subject, "subject", "", "who the token names (the audited actor)")
	f.StringVar(&role, "role", "", "viewer, service, operator or admin")
	f.StringArrayVar(&scopes, "scope", nil, "resource pattern, repeatable: circuit:payments-*, dlq:payment, lease:billing-*, election:NAME, job:RESOURCE")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	cmd := &cobra.Command{Use: "token", Short: "Signed tokens with a role and scopes"}
	cmd.AddCommand(create)
	return cmd
}
