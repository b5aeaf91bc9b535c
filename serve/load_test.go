package serve

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/models"
)

// TestLoaderOverServe loads the embedded model through the server, with
// and without the cache, and compares every tensor with the embedded copy.
// The server's ETags for embedded files are sha256 digests, so the cached
// download is also checked against them.
func TestLoaderOverServe(t *testing.T) {
	h, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	local, err := loader.Open(models.Tiny())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := loader.NewCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []loader.HTTPOptions{{}, {Cache: cache}} {
		fsys, err := loader.OpenURL(t.Context(), srv.URL+"/models/"+EmbeddedModel, o)
		if err != nil {
			t.Fatal(err)
		}
		if o.Cache != nil {
			if err := fsys.Prefetch(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		remote, err := loader.Open(fsys)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range local.Names() {
			a, err1 := local.Float32s(n)
			b, err2 := remote.Float32s(n)
			if err1 != nil || err2 != nil || len(a) != len(b) {
				t.Fatalf("%s: %v %v", n, err1, err2)
			}
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("%s[%d] differs", n, i)
				}
			}
		}
	}
	entries, err := cache.List()
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache: %v %v", entries, err)
	}
	for _, e := range entries {
		info, _ := os.Stat(e.File)
		if info == nil || info.Size() != e.Size {
			t.Errorf("cached %s missing", e.URL)
		}
	}
}

// TestLoad has 200 clients at once make ranged GETs of an 8 MiB file over
// 127.0.0.1 and checks every body's sha256. It reports requests, bytes,
// duration, the most connections open at once and the heap in use before,
// at the peak and after.
func TestLoad(t *testing.T) {
	const (
		clients  = 200
		perConn  = 10
		fileSize = 8 << 20
		maxRange = 256 << 10
	)
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "big"), 0o755))
	data := randomBytes(fileSize, 9)
	must(t, os.WriteFile(filepath.Join(dir, "big", "model.safetensors"), data, 0o644))
	h, err := New(Options{ModelsDir: dir, NoEmbedded: true})
	must(t, err)
	defer h.Close()

	var open, peakConns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := open.Add(1)
			for p := peakConns.Load(); n > p && !peakConns.CompareAndSwap(p, n); p = peakConns.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	url := srv.URL + "/models/big/model.safetensors"

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peakHeap.Load() {
				peakHeap.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	var reqs, errs, bytesIn atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	ready := make(chan struct{})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(c), 3))
			<-ready
			for range perConn {
				a := rnd.IntN(fileSize)
				b := min(fileSize-1, a+rnd.IntN(maxRange))
				err := func() error {
					req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
					req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", a, b))
					resp, err := client.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					if resp.StatusCode != http.StatusPartialContent {
						return fmt.Errorf("status %d", resp.StatusCode)
					}
					if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", a, b, fileSize) {
						return fmt.Errorf("Content-Range %q", cr)
					}
					body, err := io.ReadAll(io.LimitReader(resp.Body, maxRange+1))
					if err != nil {
						return err
					}
					if sha256.Sum256(body) != sha256.Sum256(data[a:b+1]) {
						return fmt.Errorf("bytes %d-%d: sha256 differs", a, b)
					}
					bytesIn.Add(int64(len(body)))
					return nil
				}()
				reqs.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.Do(func() { t.Errorf("client %d: %v", c, err) })
				}
			}
		}()
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	tr.CloseIdleConnections()
	after := heap()
	runtime.KeepAlive(data) // so before and after both count it
	t.Logf("%d clients, %d ranged GETs, %d errors, %.1f MiB in %v (%.0f req/s, %.0f MiB/s); peak %d connections open",
		clients, reqs.Load(), errs.Load(), float64(bytesIn.Load())/(1<<20), elapsed.Round(time.Millisecond),
		float64(reqs.Load())/elapsed.Seconds(), float64(bytesIn.Load())/(1<<20)/elapsed.Seconds(), peakConns.Load())
	t.Logf("heap in use: %.1f MiB before, %.1f MiB peak, %.1f MiB after (the 8 MiB file and test buffers included)",
		float64(before)/(1<<20), float64(peakHeap.Load())/(1<<20), float64(after)/(1<<20))
	if errs.Load() != 0 || reqs.Load() != clients*perConn {
		t.Fatalf("%d errors in %d requests", errs.Load(), reqs.Load())
	}
	if peakConns.Load() < clients/2 {
		t.Errorf("only %d connections were open at once: the clients did not run concurrently", peakConns.Load())
	}
}
