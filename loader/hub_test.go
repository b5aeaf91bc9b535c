package loader

import "testing"

func TestHubURL(t *testing.T) {
	tests := []struct {
		id, endpoint, want string
	}{
		{"state-spaces/mamba2-130m", "", "https://huggingface.co/state-spaces/mamba2-130m/resolve/main/"},
		{"state-spaces/mamba2-130m@v1.0", "", "https://huggingface.co/state-spaces/mamba2-130m/resolve/v1.0/"},
		{"org/m@0123abcd", "http://127.0.0.1:8080/models/", "http://127.0.0.1:8080/models/org/m/resolve/0123abcd/"},
		{"mistralai/Mamba-Codestral-7B-v0.1@refs/pr/1", "https://hf-mirror.example", "https://hf-mirror.example/mistralai/Mamba-Codestral-7B-v0.1/resolve/refs%2Fpr%2F1/"},
	}
	for _, tt := range tests {
		got, err := HubURL(tt.id, tt.endpoint)
		if err != nil || got != tt.want {
			t.Errorf("HubURL(%q, %q) = %q, %v; want %q", tt.id, tt.endpoint, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "name", "a/b/c", "../x", "a/..", "a/b@", "a/b@../../etc", "a/b@x/", "/a/b", "a b/c", "a/b?x=1", "./models", "models/", "https://huggingface.co/a/b"} {
		if IsHubID(bad) {
			t.Errorf("IsHubID(%q) = true", bad)
		}
		if _, err := HubURL(bad, ""); err == nil {
			t.Errorf("HubURL(%q) gave no error", bad)
		}
	}
	for _, ep := range []string{"ftp://x", "huggingface.co", "https://x/?q=1", "http://"} {
		if _, err := HubURL("a/b", ep); err == nil {
			t.Errorf("endpoint %q was accepted", ep)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://huggingface.co/a/resolve/main/", "https://huggingface.co/x", true},
		{"https://huggingface.co/", "https://huggingface.co:443/", true},
		{"https://huggingface.co/", "http://huggingface.co/", false},
		{"https://huggingface.co/", "https://huggingface.co:8443/", false},
		{"https://huggingface.co/", "https://cdn-lfs.huggingface.co/", false},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8081/", false},
		{"http://HOST/", "http://host:80/", true},
	}
	for _, tt := range tests {
		if got := SameOrigin(tt.a, tt.b); got != tt.want {
			t.Errorf("SameOrigin(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}
