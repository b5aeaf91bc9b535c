//go:build !js

package loader

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

// TestGuardRedirects checks the redirect policy without a network, for
// the cases two local test servers cannot show: another scheme on the same
// host and port (an https to http downgrade), explicit default ports,
// host names in other cases, subdomains. Credentials stay only while the
// origin (scheme, host, port) is the first request's.
func TestGuardRedirects(t *testing.T) {
	tests := []struct {
		name  string
		chain []string // the first request, then each redirect target
		keep  bool     // the last request still carries the credentials
	}{
		{"same origin", []string{"https://hf.co/a", "https://hf.co/b"}, true},
		{"explicit default port", []string{"https://hf.co/a", "https://hf.co:443/b"}, true},
		{"explicit default port, http", []string{"http://h:80/a", "http://h/b"}, true},
		{"host name in capitals", []string{"https://hf.co/a", "https://HF.CO/b"}, true},
		{"downgrade to http", []string{"https://hf.co/a", "http://hf.co/b"}, false},
		{"downgrade, same port", []string{"https://hf.co:8443/a", "http://hf.co:8443/b"}, false},
		{"upgrade to https", []string{"http://h/a", "https://h/b"}, false},
		{"another port", []string{"https://hf.co/a", "https://hf.co:8443/b"}, false},
		{"a subdomain", []string{"https://huggingface.co/a", "https://cdn-lfs.huggingface.co/b"}, false},
		{"another host", []string{"https://hf.co/a", "https://cdn.example/b"}, false},
		{"away and back", []string{"https://hf.co/a", "https://cdn.example/b", "https://hf.co/c"}, false},
		{"two hops at home", []string{"https://hf.co/a", "https://hf.co/b", "https://hf.co/c"}, true},
		{"IPv6 ports", []string{"http://[::1]:8080/a", "http://[::1]:8081/b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := guardRedirects(&http.Client{}, map[string]string{"X-Token": "t"})
			var via []*http.Request
			for i, u := range tt.chain {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				// As net/http does, every hop starts with the headers of
				// the first request.
				req := &http.Request{URL: pu, Header: http.Header{"Authorization": {"Bearer x"}, "Cookie": {"c=1"}, "X-Token": {"t"}, "Range": {"bytes=0-9"}}}
				if i > 0 {
					if err := c.CheckRedirect(req, via); err != nil {
						t.Fatal(err)
					}
				}
				via = append(via, req)
			}
			last := via[len(via)-1].Header
			for _, k := range []string{"Authorization", "Cookie", "X-Token"} {
				if got := last.Get(k) != ""; got != tt.keep {
					t.Errorf("%s sent: %v, want %v", k, got, tt.keep)
				}
			}
			if last.Get("Range") == "" {
				t.Error("Range was dropped: it is no credential")
			}
		})
	}

	t.Run("the client's own policy still runs", func(t *testing.T) {
		stop := errors.New("no redirects")
		c := guardRedirects(&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return stop }}, nil)
		u, _ := url.Parse("https://a/")
		if err := c.CheckRedirect(&http.Request{URL: u, Header: http.Header{}}, []*http.Request{{URL: u}}); err != stop {
			t.Errorf("got %v", err)
		}
	})
	t.Run("at most 10 redirects by default", func(t *testing.T) {
		c := guardRedirects(&http.Client{}, nil)
		u, _ := url.Parse("https://a/")
		via := make([]*http.Request, 10)
		for i := range via {
			via[i] = &http.Request{URL: u}
		}
		if err := c.CheckRedirect(&http.Request{URL: u, Header: http.Header{}}, via); err == nil {
			t.Error("11th redirect followed")
		}
	})
}
