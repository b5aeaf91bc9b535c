package loader

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A download into the cache is written to a part file and renamed into
// place once verified. When the server gives the file a strong ETag, the
// part is resumable: it has a fixed name per URL (".resume-<key>") and a
// record next to it (".resume-<key>.json") of the URL, the ETag, the size,
// the expected sha256 and how many bytes of it are on disk for sure. A
// download that is interrupted (the context cancelled on Ctrl-C or
// SIGTERM, the network gone, the process killed) leaves the part behind,
// and the next download of the URL continues from its end with Range and
// If-Range, hashing what is already there so the sha256 check at the end
// still covers the whole file. When the record names another version (the
// file changed on the server, or the expected digest is another), the
// part is emptied and the download starts from zero: bytes of two versions
// are never combined. The part is locked while in use (flock), so two
// processes never write one; the second downloads to a temporary file of
// its own. Without a strong ETag, or where files cannot be locked, the
// part is such a temporary file (".part-*"), removed on failure.

// partSyncEvery is how many bytes a resumable part takes between syncs to
// disk, each followed by an update of its record: a crash of the machine
// (or kill -9) costs at most this much to fetch again, since only synced
// bytes are trusted on resume; syncing more often would slow a fast
// download for little.
const partSyncEvery = 64 << 20

// staleTemp is the age past which NewCache removes a leftover temporary
// part (".part-*"): one that a killed process left and no one can resume.
// A download still in progress writes to its part all the time, so it is
// never that old.
const staleTemp = 24 * time.Hour

// errLocked: another download holds the resumable part.
var errLocked = errors.New("the part is in use by another download")

// partRecord is the JSON record next to a resumable part.
type partRecord struct {
	URL       string `json:"url"`
	Validator string `json:"validator"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256,omitempty"`
	Have      int64  `json:"have"` // bytes from 0 synced to disk
}

// part is the file a download goes to.
type part struct {
	c       *Cache
	f       *os.File
	path    string
	record  string // the record's path; "" for a temporary part
	rec     partRecord
	written int64     // bytes of the file in f, from byte 0
	sum     hash.Hash // sha256 of those bytes
}

func (c *Cache) resumePaths(u string) (data, record string) {
	base := filepath.Join(c.dir, ".resume-"+cacheKey(u))
	return base, base + ".json"
}

// openPart returns the part to download the file at u into (see above).
func (c *Cache) openPart(u string, want StoreEntry) (*part, error) {
	if strongValidator(want.Validator) {
		p, err := c.openResumable(u, want)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, errLocked) {
			return nil, err
		}
	} else {
		c.dropResumable(u) // left by a version that had a strong ETag
	}
	tmp, err := os.CreateTemp(c.dir, ".part-*")
	if err != nil {
		return nil, explainDisk(c.dir, err)
	}
	return &part{c: c, f: tmp, path: tmp.Name(), sum: sha256.New()}, nil
}

// openResumable opens and locks the resumable part of u, keeping the
// synced bytes its record vouches for when the record is of want's
// version, emptying it otherwise.
func (c *Cache) openResumable(u string, want StoreEntry) (*part, error) {
	data, record := c.resumePaths(u)
	var f *os.File
	for attempt := 0; ; attempt++ {
		var err error
		f, err = os.OpenFile(data, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, explainDisk(c.dir, err)
		}
		if err := lockFile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %v", errLocked, err)
		}
		// The holder of the lock before us may have renamed the part into
		// the cache just before unlocking it: then f is that finished file,
		// which must not be touched. Open the name again.
		fst, err1 := f.Stat()
		pst, err2 := os.Stat(data)
		if err1 == nil && err2 == nil && os.SameFile(fst, pst) {
			break
		}
		f.Close()
		if attempt == 2 {
			return nil, fmt.Errorf("%w: it keeps being replaced", errLocked)
		}
	}
	p := &part{c: c, f: f, path: data, record: record, sum: sha256.New(),
		rec: partRecord{URL: u, Validator: want.Validator, Size: want.Size, SHA256: want.SHA256}}
	have := int64(0)
	if old, err := readPartRecord(record); err == nil && old.URL == p.rec.URL && old.Validator == p.rec.Validator &&
		old.Size == p.rec.Size && old.SHA256 == p.rec.SHA256 && old.Have > 0 && old.Have <= old.Size {
		if st, err := f.Stat(); err == nil && st.Size() >= old.Have {
			if _, err := io.Copy(p.sum, io.NewSectionReader(f, 0, old.Have)); err == nil {
				have = old.Have
			} else {
				p.sum.Reset()
			}
		}
	}
	// Bytes past the synced ones may be garbage after a crash; the bytes of
	// another version must go.
	err := f.Truncate(have)
	if err == nil {
		_, err = f.Seek(have, io.SeekStart)
	}
	p.written, p.rec.Have = have, have
	if err == nil && have == 0 {
		err = p.writeRecord() // the new version's record before any of its bytes
	}
	if err != nil {
		p.discard()
		return nil, explainDisk(c.dir, err)
	}
	return p, nil
}

// dropResumable removes the resumable part of u, unless a download holds it.
func (c *Cache) dropResumable(u string) {
	data, record := c.resumePaths(u)
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		os.Remove(record)
		return
	}
	defer f.Close()
	if lockFile(f) == nil {
		if st, err := os.Stat(data); err == nil {
			if fst, err := f.Stat(); err == nil && os.SameFile(st, fst) {
				os.Remove(data)
				os.Remove(record)
			}
		}
	}
}

func readPartRecord(p string) (partRecord, error) {
	var r partRecord
	data, err := os.ReadFile(p)
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	return r, err
}

// writeRecord replaces the record atomically.
func (p *part) writeRecord() error {
	data, err := json.Marshal(p.rec)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(p.c.dir, ".part-*.json")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p.record)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// write appends b, syncing and recording progress every partSyncEvery.
func (p *part) write(b []byte) error {
	n, err := p.f.Write(b)
	p.sum.Write(b[:n])
	p.written += int64(n)
	if err != nil {
		return err
	}
	if p.record != "" && p.written-p.rec.Have >= partSyncEvery {
		return p.checkpoint()
	}
	return nil
}

// checkpoint syncs the bytes written and records them as safe.
func (p *part) checkpoint() error {
	if err := p.f.Sync(); err != nil {
		return err
	}
	p.rec.Have = p.written
	return p.writeRecord()
}

// keep ends an interrupted download: a resumable part is synced and
// recorded for the next run (on failure its record still vouches only for
// what was synced before); a temporary one is removed.
func (p *part) keep() {
	if p.record == "" {
		p.discard()
		return
	}
	if p.written > p.rec.Have {
		p.checkpoint()
	}
	p.f.Close()
}

// discard removes the part and its record.
func (p *part) discard() {
	p.f.Close()
	os.Remove(p.path)
	if p.record != "" {
		os.Remove(p.record)
	}
}

// commit makes the verified part the file at dst. A resumable part is
// renamed while still locked, and its record removed, so no other download
// can take the finished file for a part.
func (p *part) commit(dst string) error {
	err := p.f.Sync()
	if err == nil {
		err = os.Rename(p.path, dst)
	}
	if err != nil {
		p.discard()
		return err
	}
	if p.record != "" {
		os.Remove(p.record)
	}
	p.f.Close() // synced and renamed: an error here changes nothing
	return nil
}

// strongValidator reports whether a Store validator is a strong ETag,
// the only kind that If-Range accepts and so the only kind a download
// can be resumed under.
func strongValidator(v string) bool {
	return v != "" && !strings.HasPrefix(v, "W/") && !strings.HasPrefix(v, "mtime=")
}

// sweep removes temporary parts that no one has written for staleTemp.
func (c *Cache) sweep() {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), ".part-") || !de.Type().IsRegular() {
			continue
		}
		if info, err := de.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(c.dir, de.Name()))
		}
	}
}
