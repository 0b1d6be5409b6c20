// Package token signs and verifies baldurd's bearer tokens: EdDSA
// (Ed25519) JWTs naming a subject, a role and optional resource scopes,
// with an expiry and the id of the signing key (golang-jwt/jwt/v5).
package token

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Roles, least to most.
var Roles = []string{"viewer", "service", "operator", "admin"}

// ScopeKinds are the resource kinds a scope may name.
var ScopeKinds = []string{"circuit", "dlq", "lease", "election", "job"}

// Claims are what a token says.
type Claims struct {
	Role   string   `json:"role"`
	Scopes []string `json:"scopes,omitempty"`
	jwt.RegisteredClaims
}

// KeyID names a public key: the first 8 bytes of the SHA-256 of its PKIX
// encoding, in hex. Tokens carry it in their "kid" header.
func KeyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// Sign makes a token for subject with role and scopes, valid for ttl from
// now.
func Sign(key ed25519.PrivateKey, subject, role string, scopes []string, ttl time.Duration, now time.Time) (string, error) {
	if subject == "" {
		return "", errors.New("a token needs a subject")
	}
	if err := CheckRole(role); err != nil {
		return "", err
	}
	for _, sc := range scopes {
		if err := CheckScope(sc); err != nil {
			return "", err
		}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, Claims{Role: strings.ToLower(role), Scopes: scopes, RegisteredClaims: jwt.RegisteredClaims{
		Subject: subject, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}})
	t.Header["kid"] = KeyID(key.Public().(ed25519.PublicKey))
	return t.SignedString(key)
}

// Verify checks a token's signature against keys (by key id; every key
// when the token names none), its expiry (required), its role and scopes.
func Verify(tok string, keys map[string]ed25519.PublicKey) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != "" {
			k, ok := keys[kid]
			if !ok {
				return nil, fmt.Errorf("no public key with id %q", kid)
			}
			return k, nil
		}
		set := jwt.VerificationKeySet{}
		for _, k := range keys {
			set.Keys = append(set.Keys, k)
		}
		return set, nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second))
	if err != nil {
		return Claims{}, err
	}
	if c.Subject == "" {
		return Claims{}, errors.New("token has no subject")
	}
	if err := CheckRole(c.Role); err != nil {
		return Claims{}, err
	}
	for _, sc := range c.Scopes {
		if err := CheckScope(sc); err != nil {
			return Claims{}, err
		}
	}
	return c, nil
}

// CheckRole refuses a role that is not one of Roles.
func CheckRole(role string) error {
	for _, r := range Roles {
		if strings.EqualFold(role, r) {
			return nil
		}
	}
	return fmt.Errorf("role %q: use viewer, service, operator or admin", role)
}

// CheckScope refuses a scope that is not "kind:pattern" with a known kind
// and a well-formed pattern (a shell glob).
func CheckScope(sc string) error {
	kind, pattern, ok := strings.Cut(sc, ":")
	if !ok || pattern == "" {
		return fmt.Errorf("scope %q: want kind:pattern, e.g. circuit:payments-*", sc)
	}
	known := false
	for _, k := range ScopeKinds {
		known = known || k == kind
	}
	if !known {
		return fmt.Errorf("scope %q: kind %q is not one of %s", sc, kind, strings.Join(ScopeKinds, ", "))
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Errorf("scope %q: %v", sc, err)
	}
	return nil
}

// Covers reports whether one of scopes covers kind:value.
func Covers(scopes []string, kind, value string) bool {
	for _, sc := range scopes {
		k, pattern, ok := strings.Cut(sc, ":")
		if !ok || k != kind {
			continue
		}
		if ok, _ := path.Match(pattern, value); ok {
			return true
		}
	}
	return false
}
