//go:build !js && !wasip1

// These tests run an HTTP server on 127.0.0.1, which js/wasm and wasip1
// cannot do. ReadThrough is how the browser loads (with the Cache API for
// a Store); here it runs natively over the folder Cache, which exercises
// the same download code.

package loader

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// streamInFileOrder reads every tensor of ck, in file order as the model
// loader does, as float32 bit patterns.
func streamInFileOrder(ck *Checkpoint) (map[string][]uint32, error) {
	var infos []Info
	for _, n := range ck.Names() {
		in, _ := ck.Info(n)
		infos = append(infos, in)
	}
	slices.SortFunc(infos, func(a, b Info) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Begin, b.Begin)
	})
	out := map[string][]uint32{}
	for _, in := range infos {
		v, err := ck.Float32s(in.Name)
		if err != nil {
			return nil, err
		}
		bits := make([]uint32, len(v))
		for i, x := range v {
			bits[i] = math.Float32bits(x)
		}
		out[in.Name] = bits
	}
	return out, nil
}

// wholeGets counts the GETs of name for the whole file.
func wholeGets(s *fakeServer, name string, size int) int {
	n := 0
	for _, r := range s.requests() {
		if r.method == "GET" && r.name == name && (r.rng == "" || r.rng == fmt.Sprintf("bytes=0-%d", size-1)) {
			n++
		}
	}
	return n
}

func TestReadThrough(t *testing.T) {
	files := dirFiles(t, "../models/mamba2-go-tiny")
	want := localTensors(t, files)
	s := newFakeServer(t, files)
	cache := must(NewCache(t.TempDir()))
	o := fast()
	o.Cache, o.ReadThrough, o.PreferCache = cache, true, true
	h, ck := openRemote(t, s.base(), o)
	got, err := streamInFileOrder(ck)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, want, got)
	if err := h.Finish(); err != nil {
		t.Fatal(err)
	}
	var weights int64
	for name, data := range files {
		if !strings.HasSuffix(name, ".safetensors") {
			continue
		}
		weights += int64(len(data))
		if n := wholeGets(s, name, len(data)); n != 1 {
			t.Errorf("%s: %d whole-file GETs, want 1", name, n)
		}
		checkCacheHolds(t, cache, s.base()+"/"+name, data)
	}
	if st := h.Stats(); st.Fetched != weights || st.FromCache != 0 {
		t.Errorf("stats %+v, want %d fetched", st, weights)
	}

	// Under PreferCache a second load makes no request at all.
	s.reset()
	h2, ck2 := openRemote(t, s.base(), o)
	got, err = streamInFileOrder(ck2)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, want, got)
	if r := s.requests(); len(r) != 0 {
		t.Errorf("second load made %d requests: %v", len(r), r)
	}
	if st := h2.Stats(); st.Fetched != 0 || st.FromCache != weights {
		t.Errorf("second load: stats %+v, want %d from the cache", st, weights)
	}
}

func TestReadThroughFaults(t *testing.T) {
	v1, v2 := synthModel(1), synthModel(2)
	want1 := localTensors(t, v1)
	open := func(t *testing.T, s *fakeServer) (*HTTPFS, *Checkpoint, *Cache) {
		cache := must(NewCache(t.TempDir()))
		o := fast()
		o.Cache, o.ReadThrough = cache, true
		h, ck := openRemote(t, s.base(), o)
		return h, ck, cache
	}

	t.Run("a body cut short is resumed with Range and If-Range; the cache is exact", func(t *testing.T) {
		s := newFakeServer(t, v1)
		h, ck, cache := open(t, s)
		cut := true
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			data, _ := s.get(name)
			if name != SingleFile || !cut || r.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", len(data)-1) {
				return false
			}
			cut = false
			w.Header().Set("ETag", etagOf(data))
			http.ServeContent(&cutWriter{ResponseWriter: w, left: 500_000}, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		got, err := streamInFileOrder(ck)
		if err != nil {
			t.Fatal(err)
		}
		sameTensors(t, want1, got)
		if err := h.Finish(); err != nil {
			t.Fatal(err)
		}
		resumed := false
		for _, r := range s.requests() {
			if r.name == SingleFile && strings.HasPrefix(r.rng, "bytes=") && !strings.HasPrefix(r.rng, "bytes=0-") {
				resumed = true
				if r.ifRange == "" {
					t.Errorf("resumed without If-Range: %+v", r)
				}
			}
		}
		if !resumed {
			t.Errorf("no resumption: %v", s.requests())
		}
		checkCacheHolds(t, cache, s.base()+"/"+SingleFile, v1[SingleFile])
	})

	t.Run("a change mid-download fails the read and stores nothing", func(t *testing.T) {
		s := newFakeServer(t, v1)
		h, ck, cache := open(t, s)
		changed := false
		s.setFault(func(w http.ResponseWriter, r *http.Request, name string) bool {
			data, _ := s.get(name)
			if name != SingleFile || changed || r.Header.Get("Range") != fmt.Sprintf("bytes=0-%d", len(data)-1) {
				return false
			}
			changed = true
			w.Header().Set("ETag", etagOf(data))
			cw := &cutWriter{ResponseWriter: w, left: 500_000, before: func() { s.set(name, v2[name]) }}
			http.ServeContent(cw, r, name, time.Time{}, bytes.NewReader(data))
			return true
		})
		_, err := streamInFileOrder(ck)
		if !errors.Is(err, ErrChanged) {
			t.Fatalf("got %v, want ErrChanged", err)
		}
		h.Abort()
		checkCacheHolds(t, cache, s.base()+"/"+SingleFile, nil)
	})

	t.Run("a wrong sha256 fails at the end and stores nothing", func(t *testing.T) {
		files := map[string][]byte{}
		for k, v := range v1 {
			files[k] = v
		}
		files[ManifestFile] = []byte(fmt.Sprintf(`{%q: {"sha256": %q}}`, SingleFile, strings.Repeat("ab", 32)))
		s := newFakeServer(t, files)
		h, ck, cache := open(t, s)
		_, err := streamInFileOrder(ck)
		if err == nil {
			err = h.Finish()
		}
		if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), ManifestFile) {
			t.Fatalf("got %v, want ErrIntegrity naming %s", err, ManifestFile)
		}
		h.Abort()
		checkCacheHolds(t, cache, s.base()+"/"+SingleFile, nil)
	})

	t.Run("an aborted load stores no entry of a file half read", func(t *testing.T) {
		s := newFakeServer(t, v1)
		h, ck, cache := open(t, s)
		if _, err := ck.Float32s("a"); err != nil {
			t.Fatal(err)
		}
		h.Abort()
		// The folder cache may keep a resumable part (part.go), never an entry.
		if e, ok := cache.Lookup(s.base() + "/" + SingleFile); ok {
			t.Errorf("the cache has an entry for the half-read file: %+v", e)
		}
	})
}
