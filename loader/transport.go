package loader

import (
	"context"
	"io"
	"strings"
	"time"
)

// Transport sends one HTTP request. It is the only part of an HTTP model
// source that differs between a native program (net/http, in
// transport_net.go) and a web page (the browser's fetch, in
// transport_fetch.go): retries, timeouts, Range and ETag handling, size
// limits, integrity checks and the cache all live once, in this package,
// above it. Keeping net/http out of the package's core keeps its client
// (about 5 MB of wasm) out of the browser runtime.
//
// RoundTrip returns once the response headers have arrived, or fails. The
// context bounds the whole exchange, body included: when it ends, the
// request and a body still being read are aborted. Any answer the server
// gives, an error status included, is a Response, not an error; redirects
// are followed by the transport. The caller closes the body.
type Transport interface {
	RoundTrip(ctx context.Context, req *Request) (*Response, error)
}

// Request is one HTTP request of a model source: no body, headers by
// canonical name ("Range", "If-Range", "Authorization").
type Request struct {
	Method string
	URL    string
	Header map[string]string
}

// Response is the answer to a Request.
type Response struct {
	Status int
	Header Header
	// ContentLength is the length of the body as sent, -1 when unknown.
	ContentLength int64
	// Encoded is set when the body was content-encoded (gzip, br…) on the
	// wire and is decoded by the transport: ContentLength, when known, is
	// then not the length of the file's bytes.
	Encoded bool
	Body    io.ReadCloser
}

// Header holds response headers under lower-case names; Get is
// case-insensitive.
type Header map[string]string

// Get returns the value of the header name, "" when absent.
func (h Header) Get(name string) string { return h[strings.ToLower(name)] }

// Set stores a header value under its lower-case name.
func (h Header) Set(name, value string) { h[strings.ToLower(name)] = value }

// HTTP methods and statuses the loader uses (net/http's constants, which
// the core of the package does not import).
const (
	methodGet  = "GET"
	methodHead = "HEAD"

	statusOK                  = 200
	statusPartialContent      = 206
	statusNotModified         = 304
	statusUnauthorized        = 401
	statusForbidden           = 403
	statusNotFound            = 404
	statusMethodNotAllowed    = 405
	statusGone                = 410
	statusRangeNotSatisfiable = 416
	statusTooManyRequests     = 429
	statusNotImplemented      = 501
)

// StatusText is the reason phrase of an HTTP status a model server gives
// ("Not Found"), "" for others.
func StatusText(code int) string { return statusText(code) }

// statusText is the reason phrase of the statuses a model server gives.
func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 206:
		return "Partial Content"
	case 304:
		return "Not Modified"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 410:
		return "Gone"
	case 416:
		return "Requested Range Not Satisfiable"
	case 429:
		return "Too Many Requests"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return ""
}

// parseHTTPTime reads a Last-Modified date in the three formats HTTP
// allows (RFC 9110 §5.6.7).
func parseHTTPTime(s string) (time.Time, bool) {
	for _, layout := range []string{
		"Mon, 02 Jan 2006 15:04:05 GMT",
		"Monday, 02-Jan-06 15:04:05 GMT",
		"Mon Jan _2 15:04:05 2006",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
