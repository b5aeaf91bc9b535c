package wgsl

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestProfile checks kernel times from timestamp queries on mamba2-go-tiny:
// a decode step times exactly the kernels the forward pass dispatches (each
// with a positive time, calls adding up to the dispatches), a prompt times
// the chunked scan's passes, the times add up to no more than the wall time
// of the submission (which checks the tick conversion), and the logits are
// bit for bit those of a backend opened without profiling.
func TestProfile(t *testing.T) {
	b := open(t, Options{Profile: true})
	if err := b.SetProfiling(true); err != nil {
		t.Skipf("skipping: kernel times are unavailable: %v", err)
	}
	t.Logf("adapter %s: timestamp period %g ns/tick", describeAdapter(b.Adapter()), b.TimestampPeriod())
	plain := open(t, Options{})
	mp, err := model.Load(tiny(), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mq, err := model.Load(tiny(), plain, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Profile() // loading records nothing, but start clean

	prompt := make([]int32, 64)
	for i := range prompt {
		prompt[i] = int32(i*37%4000 + 5)
	}
	sp, sq := mp.NewState(1), mq.NewState(1)
	defer sp.Close()
	defer sq.Close()
	forward := func(m *model.Model, st *model.State, ids []int32, lastOnly bool) []float32 {
		t.Helper()
		if !lastOnly {
			logits, err := st.Logits(ids, nil)
			if err != nil {
				t.Fatal(err)
			}
			return logits
		}
		out, err := st.Forward(ids, nil)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Backend.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		return logits
	}
	same := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: logit %d is %v with profiling, %v without", what, i, got[i], want[i])
			}
		}
	}
	check := func(what string, prof map[string]model.KernelTime, dispatches int) time.Duration {
		t.Helper()
		var total time.Duration
		calls := 0
		for _, name := range slices.Sorted(maps.Keys(prof)) {
			k := prof[name]
			if k.Calls <= 0 || k.Time <= 0 {
				t.Errorf("%s: kernel %s: %d calls, %v", what, name, k.Calls, k.Time)
			}
			total += k.Time
			calls += k.Calls
		}
		if calls != dispatches {
			t.Errorf("%s: the profile counts %d calls, the backend %d dispatches", what, calls, dispatches)
		}
		return total
	}

	// A prompt: the chunked scan's five passes and the tiled matmul.
	before := b.Stats()
	all := forward(mp, sp, prompt, false)
	same("prompt", all, forward(mq, sq, prompt, false))
	prof := b.Profile()
	check("prompt", prof, b.Stats().Dispatches-before.Dispatches)
	for _, k := range []string{"ssm_scan.dt_cumsum", "ssm_scan.cb", "ssm_scan.chunk_states", "ssm_scan.carry", "ssm_scan.output"} {
		if prof[k].Calls != mp.Config.Layers {
			t.Errorf("prompt: %s ran %d times, want once per layer (%d)", k, prof[k].Calls, mp.Config.Layers)
		}
	}
	t.Logf("prompt of %d tokens: %s", len(prompt), describeProfile(prof))

	// Decode steps: exactly the kernels of one token's forward pass.
	w := mp.Weights
	f := func(x model.Tensor) string {
		return x.(*tensor).format.String()
	}
	L := mp.Config.Layers
	// The norms are inside the products (float weights), the conv in
	// in_proj's epilogue, the gate inside the SSM step, and one position
	// needs no Last.
	want := map[string]int{
		"embed." + f(w.Embed): len(w.Embed.(*tensor).parts),
		"matmul.matvec_" + f(w.Layers[0].InProj) + "(in_proj)": L,
		"ssm_step": L,
		"matmul.matvec_" + f(w.Layers[0].OutProj) + "(out_proj)": L,
		"matmul.matvec_" + f(w.LMHead) + "(lm_head)":             len(w.LMHead.(*tensor).parts),
	}
	id := int32(model.Argmax(all[len(all)-mp.Config.VocabSize:]))
	for step := range 4 {
		before := b.Stats()
		start := time.Now()
		got := forward(mp, sp, []int32{id}, true)
		wall := time.Since(start)
		prof := b.Profile()
		same(fmt.Sprintf("decode step %d", step), got, forward(mq, sq, []int32{id}, true))
		id = int32(model.Argmax(got))
		if step == 0 {
			continue // the first step creates the L=1 scratch and pipelines
		}
		after := b.Stats()
		if after.Submissions-before.Submissions != 1 {
			t.Errorf("decode step %d: %d submissions, want 1", step, after.Submissions-before.Submissions)
		}
		total := check(fmt.Sprintf("decode step %d", step), prof, after.Dispatches-before.Dispatches)
		gotCalls := map[string]int{}
		for k, v := range prof {
			gotCalls[k] = v.Calls
		}
		if !maps.Equal(gotCalls, want) {
			t.Errorf("decode step %d: kernels and calls\n got %v\nwant %v", step, gotCalls, want)
		}
		// The kernels run inside the submission, so they cannot take longer
		// than the wall time around it (a tick taken for the wrong unit would
		// be off by its factor, 10 or more on the GPUs that differ).
		t.Logf("decode step %d: kernels %v of %v wall: %s", step, total, wall, describeProfile(prof))
		if total > wall {
			t.Errorf("decode step %d: kernels took %v on the device, more than the %v the step took", step, total, wall)
		}
	}

	// Off, nothing is recorded and dispatches share one pass again.
	if err := b.SetProfiling(false); err != nil {
		t.Fatal(err)
	}
	same("unprofiled step", forward(mp, sp, []int32{id}, true), forward(mq, sq, []int32{id}, true))
	if prof := b.Profile(); len(prof) != 0 {
		t.Errorf("with profiling off, Profile gave %v", prof)
	}
	if bs, ps := b.Stats(), plain.Stats(); bs.Dispatches != ps.Dispatches {
		t.Errorf("%d dispatches with profiling, %d without", bs.Dispatches, ps.Dispatches)
	}
}

// TestProfileUnavailable: a backend opened without Options.Profile says so.
func TestProfileUnavailable(t *testing.T) {
	b := open(t, Options{})
	err := b.SetProfiling(true)
	if err == nil || !strings.Contains(err.Error(), "Options.Profile") {
		t.Fatalf("SetProfiling(true) without Options.Profile: %v", err)
	}
	if err := b.SetProfiling(false); err != nil {
		t.Error(err)
	}
	if p := b.Profile(); len(p) != 0 {
		t.Errorf("Profile gave %v", p)
	}
}

func TestKernelNames(t *testing.T) {
	for _, c := range []struct {
		shader string
		d      defines
		want   string
	}{
		{"rmsnorm.wgsl", nil, "rmsnorm"},
		{"matmul.wgsl", defs("WF16", "MATVEC"), "matmul.matvec_f16"},
		{"matmul.wgsl", defs("WBF16"), "matmul.tiled_bf16"},
		{"embed.wgsl", defs("WF32"), "embed.f32"},
		{"matmul.wgsl", defs("WQ4", "WQ", "QGS=128u", "MATVEC"), "matmul.matvec_int4"},
		{"embed.wgsl", defs("WQ8", "WQ"), "embed.int8"},
		{"conv.wgsl", defs("WF16", "KC=4u"), "conv.f16"},
		{"ssm_scan.wgsl", defs("PASS_STATES"), "ssm_scan.chunk_states"},
		{"ssm_step.wgsl", defs("NPL=2u"), "ssm_step"},
		{"sample.wgsl", defs("PASS_SCAN", "SUBGROUPS"), "sample.scan"},
		{"sample.wgsl", nil, "sample"},
	} {
		if got := kernelName(c.shader, c.d); got != c.want {
			t.Errorf("kernelName(%s, %v) = %s, want %s", c.shader, c.d, got, c.want)
		}
	}
	for role, want := range map[model.Role]string{
		model.RoleInProj:    "in_proj",
		model.RoleOutProj:   "out_proj",
		model.RoleEmbedding: "lm_head",
		model.RoleLMHead:    "lm_head",
		model.RoleVector:    "",
	} {
		if got := roleName(role); got != want {
			t.Errorf("roleName(%q) = %q, want %q", role, got, want)
		}
	}
}

// describeProfile lists kernels by time, for logs.
func describeProfile(p map[string]model.KernelTime) string {
	names := slices.Collect(maps.Keys(p))
	slices.SortFunc(names, func(a, b string) int { return int(p[b].Time - p[a].Time) })
	var s []string
	for _, n := range names {
		s = append(s, fmt.Sprintf("%s ×%d %v", n, p[n].Calls, p[n].Time))
	}
	return strings.Join(s, ", ")
}

// TestProfileSmallArena runs the fixtures profiled with 7 parameter slots,
// so the query set fills and submissions are cut often: results must not
// change, and every dispatch must be timed.
func TestProfileSmallArena(t *testing.T) {
	if err := open(t, Options{Profile: true}).SetProfiling(true); err != nil {
		t.Skipf("skipping: kernel times are unavailable: %v", err)
	}
	var all []*Backend
	modeltest.RunFixtures(t, func(t *testing.T) model.Backend {
		b := open(t, Options{Profile: true, ArenaSlots: 7})
		all = append(all, b)
		return b
	}, 1e-3)
	for i, b := range all {
		calls := 0
		for _, k := range b.Profile() {
			calls += k.Calls
		}
		if s := b.Stats(); calls != s.Dispatches || s.Submissions*7 < s.Dispatches {
			t.Errorf("fixture %d: %d kernel calls timed, %d dispatches in %d submissions", i, calls, s.Dispatches, s.Submissions)
		}
	}
}
