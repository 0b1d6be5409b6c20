package token_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/token"
)

func TestSignAndVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{token.KeyID(pub): pub}
	now := time.Now()
	tok, err := token.Sign(priv, "svc", "service", []string{"circuit:payments-*"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := token.Verify(tok, keys)
	if err != nil || c.Subject != "svc" || c.Role != "service" || len(c.Scopes) != 1 {
		t.Fatalf("verify: %+v %v", c, err)
	}
	if !token.Covers(c.Scopes, "circuit", "payments-eu") || token.Covers(c.Scopes, "circuit", "orders") || token.Covers(c.Scopes, "dlq", "payments-eu") {
		t.Fatal("scope matching")
	}
	bad := map[string]func() (string, error){
		"expired":   func() (string, error) { return token.Sign(priv, "svc", "viewer", nil, -time.Minute, now) },
		"other key": func() (string, error) { return token.Sign(other, "svc", "viewer", nil, time.Hour, now) },
	}
	for name, mk := range bad {
		tok, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := token.Verify(tok, keys); err == nil {
			t.Errorf("%s token verified", name)
		}
	}
	if _, err := token.Verify(strings.Replace(tok, ".", ".x", 1), keys); err == nil {
		t.Error("tampered token verified")
	}
	for _, sc := range []string{"circuit", "queue:x", "circuit:[", "circuit:"} {
		if err := token.CheckScope(sc); err == nil {
			t.Errorf("scope %q accepted", sc)
		}
	}
}

// BenchmarkVerify is the per-call cost of a signed token (Ed25519 verify,
// JSON claims), which a node pays on every call that carries one.
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]ed25519.PublicKey{token.KeyID(pub): pub}
	tok, err := token.Sign(priv, "svc", "service", []string{"circuit:payments-*", "dlq:payment"}, time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := token.Verify(tok, keys); err != nil {
			b.Fatal(err)
		}
	}
}
