//go:build !js

package loader

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// credentialHeaders are sent only to the origin of the model URL, whether
// or not HTTPOptions.Header sets them (a caller's own Client may add some).
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Cookie2"}

// guardRedirects returns a copy of c whose redirects carry the headers of
// HTTPOptions.Header (hdr) and the credential headers only while every hop
// so far stays on the origin of the first request: same scheme, host and
// port. Go's client drops Authorization only when the host name leaves
// the first one's domain, so on its own it would send a Hugging Face
// token to another port of the same host, over http:// after a downgrade,
// or to any subdomain. c's own CheckRedirect, if any, still runs after.
func guardRedirects(c *http.Client, hdr map[string]string) *http.Client {
	guarded := *c
	next := c.CheckRedirect
	guarded.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && leftOrigin(via[0].URL, via[1:], req.URL) {
			for k := range hdr {
				req.Header.Del(k)
			}
			for _, k := range credentialHeaders {
				req.Header.Del(k)
			}
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 { // net/http's default policy
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &guarded
}

// leftOrigin reports whether any of the hops after the first (via, then
// dest) is on another origin than first. Once credentials have been held
// back they stay held back, as with Go's own rule: a server elsewhere
// could otherwise bounce the request back to collect them.
func leftOrigin(first *url.URL, via []*http.Request, dest *url.URL) bool {
	for _, r := range via {
		if !sameOrigin(first, r.URL) {
			return true
		}
	}
	return !sameOrigin(first, dest)
}

// sameOrigin compares scheme, host and port, with the default port of the
// scheme filled in (https://h and https://h:443 are one origin).
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) &&
		strings.EqualFold(a.Hostname(), b.Hostname()) &&
		port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
