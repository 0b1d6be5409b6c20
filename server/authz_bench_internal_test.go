package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/internal/token"
)

// BenchmarkSignedTokenPerCall is what a node pays per call for a signed
// token it has seen in the last minute (the Ed25519 check itself is
// internal/token's BenchmarkVerify, paid about once a minute per token).
func BenchmarkSignedTokenPerCall(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	file := filepath.Join(b.TempDir(), "keys.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	keys, err := tlsconf.LoadKeySet(file, nil)
	if err != nil {
		b.Fatal(err)
	}
	a, err := newAuthenticator("", keys, false)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := token.Sign(priv, "svc", "service", []string{"circuit:payments-*"}, time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := a.verifySigned(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.verifySigned(tok); err != nil {
			b.Fatal(err)
		}
	}
}
