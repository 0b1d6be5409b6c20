package tlsconf

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// KeySet is a file of PEM Ed25519 public keys (token verification keys),
// reloaded when it changes: several keys at once let tokens signed with an
// old and a new key both verify while a signing key is rotated.
type KeySet struct {
	r *reloading[map[string]ed25519.PublicKey]
}

// LoadKeySet reads a file of PEM "PUBLIC KEY" blocks holding Ed25519 keys.
func LoadKeySet(file string, onError func(error)) (*KeySet, error) {
	r, err := newReloading(func() (map[string]ed25519.PublicKey, error) {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		out := map[string]ed25519.PublicKey{}
		for n := 1; ; n++ {
			var b *pem.Block
			b, raw = pem.Decode(raw)
			if b == nil {
				break
			}
			if b.Type != "PUBLIC KEY" {
				return nil, fmt.Errorf("%s: block %d is %q, want PUBLIC KEY", file, n, b.Type)
			}
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: block %d: %w", file, n, err)
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("%s: block %d is a %T, want an Ed25519 key", file, n, k)
			}
			out[keyID(pub)] = pub
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s: no PEM public key", file)
		}
		return out, nil
	}, onError, file)
	if err != nil {
		return nil, err
	}
	return &KeySet{r}, nil
}

// Keys is the current set, by key id.
func (k *KeySet) Keys() map[string]ed25519.PublicKey { return k.r.get() }

// LoadSigningKey reads a PEM PKCS#8 Ed25519 private key (token-key.pem).
func LoadSigningKey(file string) (ed25519.PrivateKey, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return nil, fmt.Errorf("%s: not PEM", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New(file + ": not an Ed25519 private key")
	}
	return priv, nil
}

// keyID is token.KeyID (kept here so this package needs no dependency).
func keyID(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}
