package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/wgsl"
)

// TestAutoBackend: --backend auto takes a real GPU, else the CPU backend,
// never a software WebGPU adapter, and says on stderr which and why.
func TestAutoBackend(t *testing.T) {
	want := "mamba2: using WebGPU on "
	probe, err := wgsl.New(wgsl.Options{})
	switch {
	case err != nil:
		want = "mamba2: using the CPU backend: WebGPU is unavailable"
	case wgsl.IsSoftware(probe.Adapter()):
		want = "mamba2: using the CPU backend: the only WebGPU adapter is a software renderer on the CPU: " + probe.Describe()
	}
	if probe != nil {
		probe.Close()
	}
	var out, errb bytes.Buffer
	err = run(context.Background(), []string{"generate", "--prompt", goPrompt, "--max-new-tokens", "3", "--json"}, strings.NewReader(""), &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(errb.String(), want) {
		t.Errorf("stderr %q, want it to start with %q", errb.String(), want)
	}
}
