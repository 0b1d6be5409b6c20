package tlsconf

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestKeyPairReloadsARenewedCertificateAndKeepsTheLastGoodOne(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(InitOptions{Dir: dir, Nodes: []string{"n1"}, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(InitOptions{Dir: dir, Nodes: []string{"n1"}}); err == nil {
		t.Fatal("Init overwrote an existing CA")
	}
	var failures int
	kp, err := LoadKeyPair(filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"), func(error) { failures++ })
	if err != nil {
		t.Fatal(err)
	}
	first := kp.Certificate().Leaf.SerialNumber.String()
	if cn := kp.Certificate().Leaf.Subject.CommonName; cn != "n1" {
		t.Fatalf("common name %q", cn)
	}
	if err := IssueNode(dir, dir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	time.Sleep(recheck + 50*time.Millisecond)
	second := kp.Certificate().Leaf.SerialNumber.String()
	if second == first {
		t.Fatal("the renewed certificate was not loaded")
	}
	// A broken file is reported and the last good pair stays.
	if err := os.WriteFile(filepath.Join(dir, "n1.pem"), []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(recheck + 50*time.Millisecond)
	if got := kp.Certificate().Leaf.SerialNumber.String(); got != second || failures == 0 {
		t.Fatalf("after a broken file: serial %s (want %s), %d failures reported", got, second, failures)
	}

	pool, err := LoadPool(filepath.Join(dir, "ca.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(filepath.Join(dir, "n1-key.pem"), nil); err == nil {
		t.Fatal("a key file was accepted as a CA pool")
	}
	_ = pool.CertPool()
}
