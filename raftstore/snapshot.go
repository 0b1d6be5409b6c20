package raftstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// snapshotMagic starts every snapshot stream.
var snapshotMagic = []byte("BALDURSNAP")

const (
	snapshotFormat  = 1
	maxHeaderLength = 4096
)

// ErrBadSnapshot is returned for a snapshot stream that is truncated, has a
// bad header or does not match its checksum.
var ErrBadSnapshot = errors.New("raftstore: invalid snapshot")

// writeSnapshot writes the header and a copy of the database as seen by tx.
// The data is streamed twice from the same read transaction: once to hash,
// once to write, so the header can carry the checksum up front.
func writeSnapshot(w io.Writer, tx *bolt.Tx, schemaVersion uint32) (*raftv1.SnapshotHeader, error) {
	h := sha256.New()
	if _, err := tx.WriteTo(h); err != nil {
		return nil, fmt.Errorf("hash state: %w", err)
	}
	index, term := readApplied(tx)
	hdr := &raftv1.SnapshotHeader{
		Format:        snapshotFormat,
		SchemaVersion: schemaVersion,
		AppliedIndex:  index,
		AppliedTerm:   term,
		Size:          uint64(tx.Size()),
		Sha256:        h.Sum(nil),
	}
	raw, err := proto.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot header: %w", err)
	}
	var prefix bytes.Buffer
	prefix.Write(snapshotMagic)
	_ = binary.Write(&prefix, binary.BigEndian, uint32(len(raw)))
	prefix.Write(raw)
	if _, err := w.Write(prefix.Bytes()); err != nil {
		return nil, fmt.Errorf("write snapshot header: %w", err)
	}
	if _, err := tx.WriteTo(w); err != nil {
		return nil, fmt.Errorf("write snapshot data: %w", err)
	}
	return hdr, nil
}

// readSnapshotHeader reads and checks the magic and header.
func readSnapshotHeader(r io.Reader, maxSchema uint32) (*raftv1.SnapshotHeader, error) {
	var magic [10]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("%w: reading magic: %v", ErrBadSnapshot, err)
	}
	if !bytes.Equal(magic[:], snapshotMagic) {
		return nil, fmt.Errorf("%w: not a baldurd snapshot (bad magic)", ErrBadSnapshot)
	}
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("%w: reading header length: %v", ErrBadSnapshot, err)
	}
	if n == 0 || n > maxHeaderLength {
		return nil, fmt.Errorf("%w: header length %d out of range", ErrBadSnapshot, n)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("%w: reading header: %v", ErrBadSnapshot, err)
	}
	hdr := &raftv1.SnapshotHeader{}
	if err := proto.Unmarshal(raw, hdr); err != nil {
		return nil, fmt.Errorf("%w: decoding header: %v", ErrBadSnapshot, err)
	}
	switch {
	case hdr.Format != snapshotFormat:
		return nil, fmt.Errorf("%w: format %d, this binary reads %d", ErrBadSnapshot, hdr.Format, snapshotFormat)
	case hdr.SchemaVersion == 0 || hdr.SchemaVersion > maxSchema:
		return nil, fmt.Errorf("%w: schema version %d, this binary reads up to %d", ErrBadSnapshot, hdr.SchemaVersion, maxSchema)
	case len(hdr.Sha256) != sha256.Size:
		return nil, fmt.Errorf("%w: header has no SHA-256", ErrBadSnapshot)
	case hdr.Size == 0:
		return nil, fmt.Errorf("%w: header says the state is empty", ErrBadSnapshot)
	}
	return hdr, nil
}

// receiveSnapshot reads a whole snapshot stream into path, verifying the
// header, the length and the checksum, and that the result opens as a bbolt
// file holding the meta bucket. On any failure path is removed.
func receiveSnapshot(r io.Reader, path string, maxSchema uint32) (hdr *raftv1.SnapshotHeader, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	hdr, err = readSnapshotHeader(br, maxSchema)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(br, int64(hdr.Size)+1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: reading data: %v", ErrBadSnapshot, err)
	}
	if uint64(n) != hdr.Size {
		f.Close()
		return nil, fmt.Errorf("%w: data is %d bytes, header says %d", ErrBadSnapshot, n, hdr.Size)
	}
	if !bytes.Equal(h.Sum(nil), hdr.Sha256) {
		f.Close()
		return nil, fmt.Errorf("%w: SHA-256 mismatch (file corrupted or truncated)", ErrBadSnapshot)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeoutOpen, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%w: state does not open: %v", ErrBadSnapshot, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(metaBucket) == nil {
			return fmt.Errorf("%w: state has no meta bucket", ErrBadSnapshot)
		}
		if idx, _ := readApplied(tx); idx != hdr.AppliedIndex {
			return fmt.Errorf("%w: state applied index %d, header says %d", ErrBadSnapshot, idx, hdr.AppliedIndex)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return hdr, nil
}
