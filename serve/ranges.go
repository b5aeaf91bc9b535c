package serve

import (
	"math"
	"net/http"
	"strconv"
	"strings"
)

// fixRange rewrites the Range header of r, for a file of size bytes, into
// a form http.ServeContent answers correctly, so that every answer is valid
// HTTP (RFC 9110, section 14). ServeContent does the rest: If-Range,
// conditional requests, 206 with Content-Range, 416 with "bytes */size".
//
//   - A unit other than bytes (compared without case): Range is dropped, and
//     the whole file is sent with 200; a server must ignore a range unit it
//     does not know. ServeContent would answer 416.
//   - Several ranges (or several Range header lines): dropped, whole file
//     with 200, as the package comment explains.
//   - bytes=-0, a suffix of length 0, is unsatisfiable: 416.
//     ServeContent would answer 206 with an impossible Content-Range
//     ("bytes size-(size-1)/size") and an empty body.
//   - A range that begins at or past the end: 416 (ServeContent already
//     does this).
//   - A malformed range (bytes=5-2, bytes=x-, bytes=, signs):
//     416 with Content-Range "bytes */size", which says what is there.
//     ServeContent would answer 416 without it.
//   - bytes=0-, bytes=a-b past the end, bytes=-N longer than the file:
//     satisfiable, clipped to the file (ServeContent does this).
//
// A 416 is made by asking ServeContent for bytes=size-, which it answers
// with 416 and "Content-Range: bytes */size" after the conditional headers
// are checked (so If-Range that does not match still gives the whole file
// with 200). Any Range on an empty file is dropped: 200 with the empty body.
func fixRange(r *http.Request, size int64) *http.Request {
	vals := r.Header.Values("Range")
	if len(vals) == 0 {
		return r
	}
	var rewrite string // "" drops the header
	if len(vals) == 1 {
		rewrite = canonicalRange(vals[0], size)
	}
	if len(vals) == 1 && rewrite == vals[0] {
		return r
	}
	r = r.Clone(r.Context())
	if rewrite == "" {
		r.Header.Del("Range")
	} else {
		r.Header.Set("Range", rewrite)
	}
	return r
}

// canonicalRange is the Range header to hand ServeContent for h; "" means
// no range at all (see fixRange).
func canonicalRange(h string, size int64) string {
	unit, set, ok := strings.Cut(h, "=")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return "" // another unit, or not a ranges-specifier at all: ignored
	}
	if size == 0 {
		// Nothing of an empty file can be satisfied; the whole (empty)
		// file with 200 is the answer ServeContent gives for bytes=0-, and
		// the only one it gets right: for bytes=-N it would send 206 with
		// "Content-Range: bytes 0--1/0".
		return ""
	}
	unsatisfiable := "bytes=" + strconv.FormatInt(size, 10) + "-"
	var specs []string
	for _, s := range strings.Split(set, ",") {
		if s = strings.Trim(s, " \t"); s != "" { // a list may have empty elements
			specs = append(specs, s)
		}
	}
	switch len(specs) {
	case 0:
		return unsatisfiable // "bytes=": malformed
	case 1:
	default:
		return "" // several ranges: the whole file
	}
	first, last, ok := strings.Cut(specs[0], "-")
	if !ok {
		return unsatisfiable
	}
	if first == "" { // suffix-range: the last N bytes
		n, ok := digits(last)
		if !ok || n == 0 {
			return unsatisfiable
		}
		return "bytes=-" + strconv.FormatInt(n, 10)
	}
	a, ok := digits(first)
	if !ok {
		return unsatisfiable
	}
	if last == "" {
		return "bytes=" + strconv.FormatInt(a, 10) + "-"
	}
	b, ok := digits(last)
	if !ok || b < a {
		return unsatisfiable
	}
	return "bytes=" + strconv.FormatInt(a, 10) + "-" + strconv.FormatInt(b, 10)
}

// digits parses a non-empty run of ASCII digits (1*DIGIT); strconv alone
// would also take a sign. A number too large for an int64 is
// math.MaxInt64, which means the same here: past the end of any file.
func digits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return math.MaxInt64, true // only a range error is left
	}
	return n, true
}
