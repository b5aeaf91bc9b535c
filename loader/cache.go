package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Cache keeps whole model files downloaded over HTTP on disk, so that a
// model is fetched once and later loads read the local copy.
//
// Each file is stored under a name derived from its URL and its ETag (or,
// without one, Last-Modified and size), next to a small JSON record of the
// URL, ETag, size and sha256. A download goes to a temporary file in the
// same folder, is synced to disk and verified (size, and sha256 when
// known), and only then renamed into place, and its record written the
// same way: a crash or a failed check leaves at most a part file, which no
// lookup uses and Clear removes. A download cut off (Ctrl-C, a dead
// network, a kill) of a file with a strong ETag leaves a ".resume-" part
// that the next download continues, when the server still has that
// version; see part.go. A new version of a URL replaces the old one, so
// the cache holds one copy per URL.
//
// Several processes may share a cache: renames are atomic, so they never
// see a half-written file; at worst two of them download the same file.
type Cache struct{ dir string }

// DefaultCacheDir is $MAMBA2_CACHE when set, else the user's cache folder
// plus "mamba2": $XDG_CACHE_HOME/mamba2 or ~/.cache/mamba2 on Linux.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("MAMBA2_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cannot find a folder for the model cache (%v); set MAMBA2_CACHE", err)
	}
	return filepath.Join(d, "mamba2"), nil
}

// NewCache opens (creating it if needed) the cache in dir, or in
// DefaultCacheDir when dir is "". Entries live in its "http" subfolder.
func NewCache(dir string) (*Cache, error) {
	if dir == "" {
		var err error
		if dir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	sub := filepath.Join(dir, "http")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return nil, explainDisk(sub, err)
	}
	c := &Cache{dir: sub}
	c.sweep()
	return c, nil
}

// Dir is the folder that holds the cached files.
func (c *Cache) Dir() string { return c.dir }

// CacheEntry describes one cached file.
type CacheEntry struct {
	URL     string
	ETag    string // the validator it was stored under
	Size    int64
	SHA256  string
	Fetched time.Time
	File    string // the copy on disk
}

// cacheMeta is the JSON record of a cached URL.
type cacheMeta struct {
	URL     string    `json:"url"`
	ETag    string    `json:"etag,omitempty"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256,omitempty"`
	Fetched time.Time `json:"fetched"`
	Blob    string    `json:"blob,omitempty"`
	Missing bool      `json:"missing,omitempty"` // the server answered 404
	path    string
}

func cacheKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func (c *Cache) metaPath(u string) string { return filepath.Join(c.dir, cacheKey(u)+".json") }

// blobName is the file name of one version of a URL: a key of URL and
// validator, then the file's own name to help a person reading the folder.
func blobName(u, validator, name string) string {
	base := []byte(path.Base(name))
	for i, b := range base {
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '-' || b == '_') {
			base[i] = '_'
		}
	}
	if len(base) > 80 {
		base = base[len(base)-80:]
	}
	return cacheKey(u+"\n"+validator) + "-" + string(base)
}

// isBlobName reports whether a directory entry is a blob this cache made.
func isBlobName(n string) bool {
	if len(n) < 34 || n[32] != '-' {
		return false
	}
	_, err := hex.DecodeString(n[:32])
	return err == nil && !strings.ContainsAny(n, `/\`)
}

func (c *Cache) readMeta(p string) (cacheMeta, error) {
	var m cacheMeta
	data, err := os.ReadFile(p)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%s: %v", p, err)
	}
	if !m.Missing {
		if !isBlobName(m.Blob) {
			return m, fmt.Errorf("%s: bad blob name %q", p, m.Blob)
		}
		m.path = filepath.Join(c.dir, m.Blob)
	}
	return m, nil
}

// lookup returns the record of u whose file is present with its recorded
// size (or which says u was missing).
func (c *Cache) lookup(u string) (cacheMeta, bool) {
	m, err := c.readMeta(c.metaPath(u))
	if err != nil || m.URL != u {
		return m, false
	}
	if m.Missing {
		return m, true
	}
	st, err := os.Stat(m.path)
	if err != nil || !st.Mode().IsRegular() || st.Size() != m.Size {
		return m, false
	}
	return m, true
}

// markMissing remembers that the server has no file at u (for PreferCache
// loads that must not ask again) and drops a copy of an older version.
func (c *Cache) markMissing(u string) {
	old, err := c.readMeta(c.metaPath(u))
	if err == nil && !old.Missing {
		os.Remove(old.path)
	}
	if err == nil && old.Missing {
		return
	}
	c.writeMeta(cacheMeta{URL: u, Missing: true, Fetched: time.Now().UTC()}) // best effort
}

// writeMeta replaces the record of m.URL atomically.
func (c *Cache) writeMeta(m cacheMeta) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(c.dir, ".part-*.json")
	if err != nil {
		return explainDisk(c.dir, err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.metaPath(m.URL))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return explainDisk(c.dir, err)
	}
	return nil
}

// List returns the cached files, sorted by URL.
func (c *Cache) List() ([]CacheEntry, error) {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, explainDisk(c.dir, err)
	}
	var out []CacheEntry
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, ".json") || strings.HasPrefix(n, ".") {
			continue
		}
		m, err := c.readMeta(filepath.Join(c.dir, n))
		if err != nil || m.Missing {
			continue
		}
		if st, err := os.Stat(m.path); err != nil || st.Size() != m.Size {
			continue
		}
		out = append(out, CacheEntry{URL: m.URL, ETag: m.ETag, Size: m.Size, SHA256: m.SHA256, Fetched: m.Fetched, File: m.path})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].URL < out[b].URL })
	return out, nil
}

// Clear removes every cached file, record and leftover temporary file.
// It removes only files named the way the cache names them, so a cache
// pointed at a folder that holds other things leaves those alone.
func (c *Cache) Clear() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return explainDisk(c.dir, err)
	}
	var first error
	for _, de := range des {
		n := de.Name()
		ours := strings.HasPrefix(n, ".part-") || strings.HasPrefix(n, ".resume-") || isBlobName(n) ||
			(strings.HasSuffix(n, ".json") && isHex(strings.TrimSuffix(n, ".json"), 32))
		if !ours || de.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = explainDisk(c.dir, err)
		}
	}
	return first
}

func isHex(s string, n int) bool {
	_, err := hex.DecodeString(s)
	return err == nil && len(s) == n
}

// The Store methods of a Cache.

var _ Store = (*Cache)(nil)

// Lookup returns the record of u whose file is present with its recorded
// size (or which says u was missing).
func (c *Cache) Lookup(u string) (StoreEntry, bool) {
	m, ok := c.lookup(u)
	if !ok {
		return StoreEntry{}, false
	}
	if m.Missing {
		return StoreEntry{Missing: true}, true
	}
	return StoreEntry{Size: m.Size, Validator: m.ETag, SHA256: m.SHA256, Local: m.path}, true
}

// Open opens the cached copy Lookup found.
func (c *Cache) Open(u string, e StoreEntry) (StoredFile, error) {
	if e.Local == "" {
		return nil, fmt.Errorf("%s is not in the cache", u)
	}
	return openBlob(e.Local)
}

// MarkMissing remembers that the server has no file at u.
func (c *Cache) MarkMissing(u string) { c.markMissing(u) }

// Remove drops the record of u and its file.
func (c *Cache) Remove(u string) {
	if m, err := c.readMeta(c.metaPath(u)); err == nil {
		os.Remove(c.metaPath(u))
		if !m.Missing {
			os.Remove(m.path)
		}
	}
}

// Create starts a download of u into a part file (see part.go): an
// interrupted one, aborted as resumable, leaves a part that the next
// download of the same version continues; any other failure leaves
// nothing. Only verified bytes are ever renamed into the cache.
func (c *Cache) Create(u string, want StoreEntry) (StoreWriter, error) {
	p, err := c.openPart(u, want)
	if err != nil {
		return nil, err
	}
	return &cacheWriter{c: c, url: u, want: want, p: p}, nil
}

// cacheWriter is a download into the cache.
type cacheWriter struct {
	c    *Cache
	url  string
	want StoreEntry
	p    *part
	done bool
}

func (w *cacheWriter) Offset() int64 { return w.p.written }

func (w *cacheWriter) Write(b []byte) (int, error) {
	if err := w.p.write(b); err != nil {
		return 0, explainDisk(w.c.dir, err)
	}
	return len(b), nil
}

func (w *cacheWriter) Abort(resumable bool) {
	if w.done {
		return
	}
	w.done = true
	if resumable {
		w.p.keep()
	} else {
		w.p.discard()
	}
}

// Commit verifies the part and renames it into the cache, then writes its
// record; the record of an older version of the URL goes, with its file.
func (w *cacheWriter) Commit() (string, error) {
	c, p := w.c, w.p
	w.done = true
	got := hex.EncodeToString(p.sum.Sum(nil))
	if p.written != w.want.Size {
		p.discard()
		return "", fmt.Errorf("%w: received %d bytes, the file has %d", ErrIntegrity, p.written, w.want.Size)
	}
	if w.want.SHA256 != "" && got != w.want.SHA256 {
		p.discard()
		return "", fmt.Errorf("%w: sha256 of the download is %s, expected %s", ErrIntegrity, got, w.want.SHA256)
	}
	v := w.want.Validator
	blob := blobName(w.url, v, w.url)
	dst := filepath.Join(c.dir, blob)
	if err := p.commit(dst); err != nil {
		return "", explainDisk(c.dir, err)
	}
	old, oldErr := c.readMeta(c.metaPath(w.url))
	if err := c.writeMeta(cacheMeta{URL: w.url, ETag: v, Size: w.want.Size, SHA256: got, Fetched: time.Now().UTC(), Blob: blob}); err != nil {
		os.Remove(dst)
		return "", err
	}
	if oldErr == nil && !old.Missing && old.Blob != blob {
		os.Remove(old.path) // the previous version of this URL
	}
	syncDir(c.dir)
	return got, nil
}

// syncDir makes the renames in dir durable where the system allows it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// explainDisk turns a file-system error met while writing the cache into a
// sentence that says what to do, keeping the original for errors.Is.
func explainDisk(where string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("the disk holding the model cache (%s) is full: free some space, run `mamba2 cache clear`, or set MAMBA2_CACHE to a folder on a disk with room (%w)", where, err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("the model cache folder %s cannot be written (no permission, or a read-only disk): set MAMBA2_CACHE to a folder you can write to (%w)", where, err)
	}
	return fmt.Errorf("model cache %s: %w", where, err)
}

func openBlob(p string) (*os.File, error) { return os.Open(p) }
