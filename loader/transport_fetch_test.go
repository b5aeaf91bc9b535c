//go:build js

package loader

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestFetchTransport reads data: URLs through the host's fetch (Node's,
// under go test): js/wasm cannot serve HTTP, and a data: URL needs no
// server. The body must arrive exact, in reads of any size, and a
// cancelled context must end a body being read.
func TestFetchTransport(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	u := "data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString(data)
	tr := FetchTransport()

	resp, err := tr.RoundTrip(t.Context(), &Request{Method: methodGet, URL: u, Header: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != statusOK || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("status %d, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var got bytes.Buffer
	buf := make([]byte, 7777) // never a chunk boundary
	for {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	resp.Body.Close()
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d bytes, not the %d sent", got.Len(), len(data))
	}

	ctx, cancel := context.WithCancelCause(t.Context())
	resp, err = tr.RoundTrip(ctx, &Request{Method: methodGet, URL: u})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	cancel(stop)
	var readErr error
	for readErr == nil {
		_, readErr = resp.Body.Read(buf)
	}
	resp.Body.Close()
	// The body may have been complete before the abort; otherwise the
	// error is the context's.
	if readErr != io.EOF && !errors.Is(readErr, stop) {
		t.Errorf("read after cancel: %v, want the context's cause", readErr)
	}
	if _, err := tr.RoundTrip(ctx, &Request{Method: methodGet, URL: u}); !errors.Is(err, stop) {
		t.Errorf("request on a cancelled context: %v", err)
	}
}
