package loader

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// DefaultHubEndpoint is where Hugging Face hub ids resolve unless the
// HF_ENDPOINT environment variable (the Python stack's) names a mirror.
const DefaultHubEndpoint = "https://huggingface.co"

// hubID is a repository id as the hub spells them, org/name, with an
// optional @revision (a branch, tag or commit; refs/pr/1 as well).
var hubID = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]{0,95})/([A-Za-z0-9][A-Za-z0-9._-]{0,95})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{0,127}))?$`)

// IsHubID reports whether s has the form of a hub id, org/name[@revision].
// A local folder of that name takes precedence, as it does for
// transformers' from_pretrained; the caller checks for one first.
func IsHubID(s string) bool {
	m := hubID.FindStringSubmatch(s)
	return m != nil && !strings.Contains(m[3], "..") && !strings.HasSuffix(m[3], "/") && m[1] != ".." && m[2] != ".."
}

// HubURL is the folder URL of a hub id: {endpoint}/org/name/resolve/{rev}/,
// rev being main when the id names none. endpoint "" means
// DefaultHubEndpoint. A revision with slashes (refs/pr/1) is escaped as
// the hub expects.
func HubURL(id, endpoint string) (string, error) {
	if !IsHubID(id) {
		return "", fmt.Errorf("%q is not a hub id (org/name or org/name@revision)", id)
	}
	m := hubID.FindStringSubmatch(id)
	rev := m[3]
	if rev == "" {
		rev = "main"
	}
	if endpoint == "" {
		endpoint = DefaultHubEndpoint
	}
	u, err := url.Parse(strings.TrimSuffix(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("HF_ENDPOINT %q: want an http(s) URL without query", endpoint)
	}
	return u.String() + "/" + m[1] + "/" + m[2] + "/resolve/" + url.PathEscape(rev) + "/", nil
}

// SameOrigin reports whether two URLs have the same scheme, host and port:
// a hub token goes only to the hub's own origin.
func SameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Hostname(), ub.Hostname()) && port(ua) == port(ub)
}
