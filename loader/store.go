package loader

import (
	"errors"
	"io"
)

// Store keeps whole model files fetched over HTTP, keyed by URL, so that a
// model is fetched once. The HTTPFS decides what to store, when a stored
// copy may be used and how a download is verified; a Store only keeps
// bytes and their record, with two guarantees: an entry is either a whole,
// verified file or absent, and a missing-marker never hides a file.
// Implementations: *Cache, a folder on disk (native builds; downloads
// there are resumable, see part.go), and the browser's Cache API
// (NewWebCache, js/wasm builds).
//
// A Store may be used by several goroutines at once.
type Store interface {
	// Lookup returns the entry stored for url; ok is false when there is
	// none (or it is unusable: the Store then forgets it).
	Lookup(url string) (e StoreEntry, ok bool)
	// Open opens the stored copy that Lookup described, for random access.
	Open(url string, e StoreEntry) (StoredFile, error)
	// MarkMissing records that the server has no file at url (a 404), and
	// drops a copy of an older version.
	MarkMissing(url string)
	// Remove drops what is stored for url.
	Remove(url string)
	// Create starts storing the file want describes (Size, Validator and,
	// when known, SHA256, all set). An error that matches ErrNotStored
	// means the Store declines it (no room): the file is read without
	// being stored.
	Create(url string, want StoreEntry) (StoreWriter, error)
}

// StoreEntry is the record of one stored URL.
type StoreEntry struct {
	Size      int64
	Validator string // the ETag, or Last-Modified with the size; "" when none
	SHA256    string // lower-case hex of the bytes, when known
	Missing   bool   // a remembered 404; the other fields are unset
	Local     string // the copy on disk, for a Store that has one
}

// StoredFile is the stored copy of a file.
type StoredFile interface {
	io.ReaderAt
	io.Closer
}

// StoreWriter receives the bytes of a file in order, from Offset on.
type StoreWriter interface {
	// Offset is how many bytes of the file the Store already holds from an
	// earlier, interrupted download of this version (0 when it keeps
	// none): the writer wants the bytes from there on.
	Offset() int64
	// Write appends bytes of the file.
	Write(p []byte) (int, error)
	// Commit is called after the last byte. It checks that the bytes are
	// Size long and, when the digest is known, have that sha256 (an error
	// matching ErrIntegrity otherwise, and nothing is stored); then the
	// entry appears at once and whole. It returns the sha256 of the file.
	// An error that matches ErrNotStored (the Store ran out of room) does
	// not mean the bytes were wrong.
	Commit() (sha256 string, err error)
	// Abort drops the download: nothing of it is ever stored as an entry.
	// With resumable set, a Store that can resume may keep the bytes for
	// the next download of the same version (the download was cut off,
	// not wrong).
	Abort(resumable bool)
}

// ErrNotStored is matched by the errors of a Store that declines to keep
// a file (its storage is full). The file is still read; it will be
// fetched again next time.
var ErrNotStored = errors.New("not stored")
