//go:build js && wasm

// Command worker is the Cloudflare Worker that serves the web runtime: the
// same serve.Handler as `mamba2 serve`, with the demo and the model folders
// in an R2 bucket (bound as BUCKET in wrangler.jsonc):
//
//	web/<file>                   → /<file>   (/ is web/index.html)
//	models/<name>/<file>         → /models/<name>/<file>
//
// Weights never pass through Go memory: each answer's bytes are the body
// stream of one R2 get (with the range the Handler chose), handed to the
// Response as it is. See README.md for building, testing and deploying.
//
// Build it with -tags noembed (scripts/worker.sh does): the embedded model
// would otherwise be linked in and the Worker would be far over the size
// limit.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"syscall/js"

	"github.com/mamba2web/mamba2/serve"
	"github.com/syumai/workers"
	"github.com/syumai/workers/cloudflare"
)

// bindingName is the R2 binding in wrangler.jsonc.
const bindingName = "BUCKET"

func main() {
	workers.Serve(http.HandlerFunc(handle))
}

// rawBodyWriter is what syumai/workers' ResponseWriter offers to set the
// Response body to a JavaScript value (a ReadableStream, or null).
type rawBodyWriter interface {
	WriteRawJSBody(body js.Value)
}

var errorLog = log.New(os.Stderr, "mamba2 worker: ", 0)

// handle serves one request. Every request runs in a fresh Go instance
// (syumai/workers starts one per request), so the Handler is made here.
func handle(w http.ResponseWriter, r *http.Request) {
	unsplitHeaders(r.Header)
	b, err := openBucket(bindingName)
	if err != nil {
		errorLog.Print(err)
		http.Error(w, "the worker has no R2 bucket bound as "+bindingName, http.StatusInternalServerError)
		return
	}
	h, err := serve.New(serve.Options{
		Static:     b.sub("web/"),
		Models:     b.sub("models/"),
		NoEmbedded: true,
		// Compressing in Go would read every text file into the instance
		// and cost its CPU on every request (no cache outlives a request);
		// Cloudflare compresses at the edge instead.
		NoGzip:   true,
		ErrorLog: errorLog,
	})
	if err != nil {
		errorLog.Print(err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h.ServeHTTP(w, r)
	if r.Method == http.MethodHead {
		// A HEAD answer keeps its Content-Length but must have a null
		// body: syumai/workers would otherwise make an empty stream of
		// that length, which workerd rejects.
		if rw, ok := w.(rawBodyWriter); ok {
			rw.WriteRawJSBody(js.Null())
		}
	}
}

// unsplitHeaders undoes syumai/workers' splitting of every request header
// value at commas: "Range: bytes=0-1,5-6" arrives as two values, of which
// Header.Get sees only the first, and so do If-None-Match lists and dates
// ("Sun, 06 Nov 1994 …" in If-Modified-Since and If-Range). Joining the
// pieces with "," gives back the value the Workers runtime had.
func unsplitHeaders(h http.Header) {
	for k, vs := range h {
		if len(vs) > 1 {
			h[k] = []string{strings.Join(vs, ",")}
		}
	}
}

// bucket is the R2 binding.
type bucket struct{ v js.Value }

func openBucket(name string) (*bucket, error) {
	v := cloudflare.GetBinding(name)
	if v.IsUndefined() || v.IsNull() {
		return nil, fmt.Errorf("no R2 binding %s in the environment", name)
	}
	return &bucket{v}, nil
}
