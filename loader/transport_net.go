//go:build !js

package loader

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// NetTransport is the Transport of native builds: net/http's client c
// (http.DefaultClient when nil), whose redirects carry the headers of
// HTTPOptions.Header (hdr) and the credential headers (Authorization,
// Cookie…) only while they stay on the first request's origin (see
// redirect.go).
func NetTransport(c *http.Client, hdr map[string]string) Transport {
	if c == nil {
		c = http.DefaultClient
	}
	return netTransport{c: guardRedirects(c, hdr)}
}

// defaultTransport is the Transport of an HTTPOptions without one.
func defaultTransport(o HTTPOptions) Transport { return NetTransport(nil, o.Header) }

type netTransport struct{ c *http.Client }

func (t netTransport) RoundTrip(ctx context.Context, r *Request) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	resp, err := t.c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named by the HTTPError around it
		}
		return nil, err
	}
	h := make(Header, len(resp.Header))
	for k, v := range resp.Header {
		if len(v) > 0 {
			h[strings.ToLower(k)] = v[0]
		}
	}
	ce := resp.Header.Get("Content-Encoding")
	return &Response{
		Status:        resp.StatusCode,
		Header:        h,
		ContentLength: resp.ContentLength,
		Encoded:       resp.Uncompressed || (ce != "" && !strings.EqualFold(ce, "identity")),
		Body:          resp.Body,
	}, nil
}
