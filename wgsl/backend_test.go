package wgsl

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// open returns a backend, or skips the test when this machine has no WebGPU
// adapter, unless MAMBA2_REQUIRE_GPU=1 (as CI sets) makes that a failure so
// a broken setup cannot pass silently.
func open(t testing.TB, opts Options) *Backend {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		if os.Getenv("MAMBA2_REQUIRE_GPU") == "1" {
			t.Fatalf("MAMBA2_REQUIRE_GPU=1 but: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

func TestOps(t *testing.T) {
	b := open(t, Options{})
	a := b.Adapter()
	t.Logf("adapter %q (%s, %s), max storage binding %d bytes", a.Name, a.BackendType, a.AdapterType, b.MaxBinding())
	modeltest.RunOps(t, b)
}

// TestOpsSequentialScan runs the suite with prompts through the recurrence
// kernel, so both SSM paths are checked against the CPU.
func TestOpsSequentialScan(t *testing.T) {
	modeltest.RunOps(t, open(t, Options{SequentialScan: true}))
}

func TestPreprocess(t *testing.T) {
	src, err := preprocess("matmul.wgsl", defs("WF16", "MATVEC", "TPR=64u"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(src, "fn wg_index") != 1 || !strings.Contains(src, "unpack2x16float") ||
		strings.Contains(src, "const TS") || !strings.Contains(src, "const TPR") {
		t.Errorf("matmul[WF16,MATVEC] expanded wrongly:\n%s", src)
	}
	src, err = preprocess("conv.wgsl", defs("WF32", "KC=4u"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src, "const KC = 4u;\n") || strings.Contains(src, "#") {
		t.Errorf("conv[KC=4u] expanded wrongly:\n%s", src[:200])
	}
	entries, _ := shaderFS.ReadDir("shaders")
	for _, e := range entries {
		for _, d := range []defines{defs("WF32"), defs("WF16", "MATVEC"), defs("WBF16"), defs("PASS_OUT")} {
			if _, err := preprocess(e.Name(), d); err != nil {
				t.Errorf("%s %v: %v", e.Name(), d, err)
			}
		}
	}
}

var _ model.Backend = (*Backend)(nil)

// TestIsSoftware: the adapters "auto" turns down.
func TestIsSoftware(t *testing.T) {
	tests := []struct {
		info wgpu.AdapterInfo
		want bool
	}{
		{wgpu.AdapterInfo{Name: "llvmpipe (LLVM 15.0.6, 256 bits)", AdapterType: wgpu.AdapterTypeCPU}, true},
		{wgpu.AdapterInfo{Name: "SwiftShader Device (Subzero)", AdapterType: wgpu.AdapterTypeCPU}, true},
		{wgpu.AdapterInfo{Name: "", VendorName: "google", DriverDescription: "SwiftShader driver", AdapterType: wgpu.AdapterTypeUnknown}, true},
		{wgpu.AdapterInfo{Name: "Microsoft Basic Render Driver", AdapterType: wgpu.AdapterTypeUnknown}, true},
		{wgpu.AdapterInfo{Name: "NVIDIA H200", AdapterType: wgpu.AdapterTypeDiscreteGPU}, false},
		{wgpu.AdapterInfo{Name: "Apple M2", AdapterType: wgpu.AdapterTypeIntegratedGPU}, false},
		{wgpu.AdapterInfo{VendorName: "nvidia", AdapterType: wgpu.AdapterTypeUnknown}, false}, // a browser's real GPU
	}
	for _, tt := range tests {
		if got := IsSoftware(tt.info); got != tt.want {
			t.Errorf("IsSoftware(%+v) = %v, want %v", tt.info, got, tt.want)
		}
	}
	// RefuseSoftware turns down exactly those.
	b := open(t, Options{})
	other, err := New(Options{RefuseSoftware: true})
	if err == nil {
		other.Close()
	}
	if soft := IsSoftware(b.Adapter()); soft != errors.Is(err, ErrSoftwareAdapter) {
		t.Errorf("adapter %s (software: %v): New with RefuseSoftware gave %v", b.Describe(), soft, err)
	}
}

// TestMatvecKnobs checks Options.MatvecLanes and Options.MatvecTokens and
// their environment variables: defaults, accepted values, and errors that
// name the setting.
func TestMatvecKnobs(t *testing.T) {
	for _, c := range []struct {
		opt    int
		env    string
		want   int
		errHas string
	}{
		{0, "", defaultMatvecTokens, ""}, {4, "", 4, ""}, {0, "16", 16, ""}, {2, "16", 2, ""},
		{0, "0", 0, `MAMBA2_WGSL_MATVEC_TOKENS="0": want 1 to 64`}, {0, "x", 0, `MAMBA2_WGSL_MATVEC_TOKENS="x"`},
		{65, "", 0, "Options.MatvecTokens is 65: want 1 to 64"}, {-3, "", 0, "Options.MatvecTokens is -3"},
	} {
		t.Setenv("MAMBA2_WGSL_MATVEC_TOKENS", c.env)
		got, err := matvecTokens(c.opt)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("tokens %d/%q: got %d, %v; want an error with %q", c.opt, c.env, got, err, c.errHas)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("tokens %d/%q: got %d, %v; want %d", c.opt, c.env, got, err, c.want)
		}
	}
	t.Setenv("MAMBA2_WGSL_MATVEC_TOKENS", "")
	for _, c := range []struct {
		opt, want int
		env       string
		ok        bool
	}{{0, 64, "", true}, {8, 8, "", true}, {0, 32, "32", true}, {12, 0, "", false}, {0, 0, "7", false}} {
		t.Setenv("MAMBA2_WGSL_MATVEC_LANES", c.env)
		got, err := matvecLanes(c.opt)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("lanes %d/%q: got %d, %v; want %d (ok %v)", c.opt, c.env, got, err, c.want, c.ok)
		}
	}
}
