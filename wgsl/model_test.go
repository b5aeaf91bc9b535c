package wgsl

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// tiny is mamba2-go-tiny (8 layers, D 384, V 4096) from the repository's
// models folder, read from disk rather than through the models package so
// the test binary stays small enough to carry to a GPU machine.
func tiny() fs.FS {
	return os.DirFS(filepath.Join(modeltest.Root(), "..", "models", "mamba2-go-tiny"))
}

// TestFixtures is the whole model against transformers: logits of every
// position within 1e-3, the greedy ids exactly (prefill, then one step per
// token with the device sampler), both gated norms, a left-padded batch.
func TestFixtures(t *testing.T) {
	modeltest.RunFixtures(t, func(t *testing.T) model.Backend { return open(t, Options{}) }, 1e-3)
}

// TestFixturesSequentialScan is the same with prompts through the
// recurrence kernel instead of the chunked passes.
func TestFixturesSequentialScan(t *testing.T) {
	modeltest.RunFixtures(t, func(t *testing.T) model.Backend { return open(t, Options{SequentialScan: true}) }, 1e-3)
}

// TestFixturesSplit is the same with storage bindings of 112 KiB: the
// activations still fit, but the embedding and lm_head of both fixtures are
// split by rows over several buffers, so Embed and MatMul run once per part.
func TestFixturesSplit(t *testing.T) {
	var all []*Backend
	modeltest.RunFixtures(t, func(t *testing.T) model.Backend {
		b := open(t, Options{MaxBindingSize: 112 << 10})
		all = append(all, b)
		return b
	}, 1e-3)
	for i, b := range all {
		if b.Stats().SplitWeights == 0 {
			t.Errorf("fixture %d: no weight was split; the test does not test the split", i)
		}
	}
}

// TestSplitParts checks Embed and MatMul on weights split into many parts
// (with odd row lengths, packed formats and a bias) against the CPU.
func TestSplitParts(t *testing.T) {
	wide := open(t, Options{MaxBindingSize: 2048})
	narrow := open(t, Options{MaxBindingSize: 1696})
	ref := cpu.New()
	rng := rand.New(rand.NewPCG(7, 7))
	rnd := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(rng.Float64()*2 - 1)
		}
		return out
	}
	for _, f := range []string{"F32", "F16", "BF16", "int8", "int4"} {
		dt := loader.DType(f)
		if dt.Size() == 0 {
			dt = loader.F16 // the bias's
		}
		b := wide
		if dt != loader.DType(f) { // quantized rows are small
			b = narrow
		}
		for _, s := range []struct{ V, D, T int }{{101, 37, 1}, {101, 37, 3}, {57, 70, 6}} {
			t.Run(fmt.Sprintf("%s/V%d/D%d/T%d", f, s.V, s.D, s.T), func(t *testing.T) {
				var spec model.WeightSpec
				switch f {
				case "int8":
					spec = modeltest.QuantSpecOf("embeddings", []int{s.V, s.D}, rnd(s.V*s.D), model.Quant{Format: model.FormatInt8}, 29)
				case "int4":
					spec = modeltest.QuantSpecOf("embeddings", []int{s.V, s.D}, rnd(s.V*s.D), model.Quant{Format: model.FormatInt4, GroupSize: 6}, 29)
				default:
					spec = modeltest.SpecOf("embeddings", dt, []int{s.V, s.D}, rnd(s.V*s.D), 29)
				}
				gw, err := b.Weight(spec)
				if err != nil {
					t.Fatal(err)
				}
				if n := len(gw.(*tensor).parts); n < 2 || (n < 3 && b == wide) {
					t.Fatalf("%d parts; the test wants a split into several", n)
				}
				cw, _ := ref.Weight(spec)
				bspec := modeltest.SpecOf("bias", dt, []int{s.V}, rnd(s.V), 29)
				gb, err := b.Weight(bspec)
				if err != nil {
					t.Fatal(err)
				}
				cb, _ := ref.Weight(bspec)
				ids := make([]int32, s.T)
				for i := range ids {
					ids[i] = int32(rng.IntN(s.V))
				}
				ids[0] = int32(s.V - 1)
				gid, cid := b.Alloc(model.I32, s.T), ref.Alloc(model.I32, s.T)
				b.WriteIDs(gid, ids)
				ref.WriteIDs(cid, ids)
				gh, ch := b.Alloc(model.F32, s.T, s.D), ref.Alloc(model.F32, s.T, s.D)
				b.Embed(gh, gw, gid)
				ref.Embed(ch, cw, cid)
				gl, cl := b.Alloc(model.F32, s.T, s.V), ref.Alloc(model.F32, s.T, s.V)
				b.MatMul(gl, gh, gw, gb, model.Plain) // tied: the table is also the head
				ref.MatMul(cl, ch, cw, cb, model.Plain)
				for _, x := range [][2]model.Tensor{{gh, ch}, {gl, cl}} {
					got, err := b.Read(x[0])
					if err != nil {
						t.Fatal(err)
					}
					want, _ := ref.Read(x[1])
					for i := range want {
						if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
							t.Fatalf("%v [%d] = %v, want %v", x[0].Shape(), i, got[i], want[i])
						}
					}
				}
			})
		}
	}
}

// decodeStep runs one token through the state and samples on the device.
func decodeStep(t *testing.T, b *Backend, st *model.State, idT model.Tensor, id int32, s model.Sampling, u float32) int32 {
	t.Helper()
	out, err := st.Forward([]int32{id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Sample(idT, out, nil, s, []float32{u})
	ids, err := b.ReadIDs(idT)
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

// TestDecodeSteadyState loads mamba2-go-tiny (8 layers) and checks that a
// decode step after warm-up creates no buffer, bind group or pipeline and is
// exactly one submission, and bounds the dispatches per token. It also checks
// greedy generation against the CPU backend.
func TestDecodeSteadyState(t *testing.T) {
	b := open(t, Options{})
	m, err := model.Load(tiny(), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{1, 17, 300, 42, 9, 1000, 7, 3}
	for _, s := range []model.Sampling{{}, {Temperature: 0.8, TopK: 40, TopP: 0.9}} {
		st := m.NewState(1)
		idT := b.Alloc(model.I32, 1)
		out, err := st.Forward(prompt, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Sample(idT, out, nil, s, []float32{0.5})
		ids, err := b.ReadIDs(idT)
		if err != nil {
			t.Fatal(err)
		}
		id := ids[0]
		for range 2 { // warm-up: the first step allocates the L=1 scratch and pipelines
			id = decodeStep(t, b, st, idT, id, s, 0.25)
		}
		before := b.Stats()
		const steps = 3
		for range steps {
			id = decodeStep(t, b, st, idT, id, s, 0.75)
		}
		after := b.Stats()
		if after.Buffers != before.Buffers || after.BindGroups != before.BindGroups || after.Pipelines != before.Pipelines {
			t.Errorf("%+v: decode steps created GPU objects: before %+v, after %+v", s, before, after)
		}
		subs := after.Submissions - before.Submissions
		disp := after.Dispatches - before.Dispatches
		if subs != steps {
			t.Errorf("%+v: %d submissions for %d tokens, want one per token", s, subs, steps)
		}
		t.Logf("mamba2-go-tiny (%d layers), sampling %+v: %d dispatches and %d submission per decoded token",
			m.Config.Layers, s, disp/steps, subs/steps)
		// Issue 12's bound: 3 per layer (the conv in in_proj's epilogue),
		// 4 per token (embedding, final norm with the LM head, sampler).
		if max := 3*m.Config.Layers + 4; disp > max*steps {
			t.Errorf("%+v: %d dispatches per token, want at most %d (3 per layer and 4 more)", s, disp/steps, max)
		}
	}

	// A batch of 8 takes the same dispatches per step as one sequence:
	// Options.MatvecTokens (8) keeps its products on the matrix-vector
	// kernel with the norms and the conv inside.
	st8 := m.NewState(8)
	ids8 := b.Alloc(model.I32, 8)
	step8 := func() {
		out, err := st8.Forward([]int32{1, 2, 3, 4, 5, 6, 7, 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Sample(ids8, out, nil, model.Sampling{}, nil)
		if _, err := b.ReadIDs(ids8); err != nil {
			t.Fatal(err)
		}
	}
	step8()
	step8()
	before := b.Stats()
	step8()
	after := b.Stats()
	if d, max := after.Dispatches-before.Dispatches, 3*m.Config.Layers+4; d > max || after.Submissions-before.Submissions != 1 {
		t.Errorf("batch 8: %d dispatches and %d submissions per step, want at most %d and 1",
			d, after.Submissions-before.Submissions, max)
	}

	// Greedy generation matches the CPU backend id for id.
	ref, err := model.Load(tiny(), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]int, len(prompt))
	for i, v := range prompt {
		p[i] = int(v)
	}
	opts := model.Options{MaxNewTokens: 12, StopIDs: []int{}}
	got, err := m.Generate(context.Background(), p, opts)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.Generate(context.Background(), p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.IDs) != fmt.Sprint(want.IDs) {
		t.Errorf("greedy ids differ from the CPU:\n got %v\nwant %v", got.IDs, want.IDs)
	}
}

// TestErrors checks that misuse and limits give errors that say what is
// wrong, and that the backend keeps working after one is reported.
func TestErrors(t *testing.T) {
	t.Run("model too big for the limits", func(t *testing.T) {
		b := open(t, Options{MaxBindingSize: 1024})
		_, err := model.Load(tiny(), b, model.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), "backbone.embeddings.weight") || !strings.Contains(err.Error(), "1024 bytes") {
			t.Fatalf("got %v, want an error naming the embedding and the 1024-byte limit", err)
		}
		t.Log(err)
	})
	b := open(t, Options{MaxBindingSize: 1 << 20})
	okT := b.Alloc(model.F32, 4)
	b.Write(okT, []float32{1, 2, 3, 4})
	check := func(t *testing.T, want ...string) {
		t.Helper()
		_, err := b.Read(okT)
		if err == nil {
			t.Fatalf("no error, want one mentioning %q", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
		t.Log(err)
		if got, err := b.Read(okT); err != nil || got[3] != 4 {
			t.Errorf("after the error: %v, %v", got, err)
		}
	}
	t.Run("activation too big", func(t *testing.T) {
		b.Alloc(model.F32, 1024, 1024)
		check(t, "[1024 1024]", "4194304 bytes", "1048576 bytes")
	})
	t.Run("shape mismatch", func(t *testing.T) {
		x, w, out := b.Alloc(model.F32, 2, 5), b.Alloc(model.F32, 3, 4), b.Alloc(model.F32, 2, 3)
		b.MatMul(out, x, w, nil, model.Plain)
		check(t, "matmul", "[2 5]", "4 columns")
	})
	t.Run("aliasing", func(t *testing.T) {
		h, w := b.Alloc(model.F32, 2, 8), b.Alloc(model.F32, 8)
		b.RMSNorm(h, h, w, nil, 1, 1e-5)
		check(t, "rmsnorm", "aliasing")
	})
	t.Run("foreign tensor", func(t *testing.T) {
		x := cpu.New().Alloc(model.F32, 4)
		b.Last(okT, x)
		check(t, "last", "not a tensor of the webgpu backend")
	})
	t.Run("bad format", func(t *testing.T) {
		none := func(func(int64, []byte) error) error { return nil }
		for _, c := range []struct {
			spec model.WeightSpec
			want string
		}{
			{model.WeightSpec{Name: "w", Format: model.Format(9), Shape: []int{4}, Data: none}, "Format(9)"},
			{model.WeightSpec{Name: "w", Format: model.FormatInt8, Shape: []int{4}, Data: none, Scales: none}, "int8 wants a matrix"},
			{model.WeightSpec{Name: "w", Format: model.FormatInt4, Shape: []int{4, 4}, Data: none, Scales: none, Zeros: none, GroupSize: 3}, "group size 3"},
		} {
			_, err := b.Weight(c.spec)
			if err == nil || !strings.Contains(err.Error(), "tensor w") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: got %v, want an error naming the tensor and %q", c.spec.Format, err, c.want)
			}
		}
	})
	t.Run("short stream", func(t *testing.T) {
		spec := modeltest.SpecOf("w", loader.F16, []int{4, 3}, make([]float32, 10), 4)
		spec.Shape = []int{4, 3}
		_, err := b.Weight(spec)
		if err == nil || !strings.Contains(err.Error(), "tensor w") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
}

// TestSmallArena gives the parameter arena 7 slots, so every forward pass is
// cut into many submissions; results must not change.
func TestSmallArena(t *testing.T) {
	var all []*Backend
	modeltest.RunFixtures(t, func(t *testing.T) model.Backend {
		b := open(t, Options{ArenaSlots: 7})
		all = append(all, b)
		return b
	}, 1e-3)
	for _, b := range all {
		if s := b.Stats(); s.Submissions*7 < s.Dispatches {
			t.Errorf("%d dispatches in %d submissions with 7 slots", s.Dispatches, s.Submissions)
		}
	}
}

// TestOverflow: logits that overflow are refused by the device sampler
// (greedy and sampled), as by the host one.
func TestOverflow(t *testing.T) { modeltest.RunOverflow(t, open(t, Options{})) }

// TestGeneratePenalties: greedy generation with repetition, frequency and
// presence penalties on the device (counted there) gives the CPU backend's
// ids, and they differ from the unpenalized ones, which repeat.
func TestGeneratePenalties(t *testing.T) {
	b := open(t, Options{})
	gm, err := model.Load(tiny(), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := model.Load(tiny(), cpu.New(), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{1, 17, 300, 42, 9, 1000, 7, 3}
	n := 24
	if runtime.GOOS == "js" {
		n = 8 // SwiftShader under Node decodes a few tokens a second
	}
	gen := func(m *model.Model, s model.Sampling) []int {
		t.Helper()
		res, err := m.Generate(context.Background(), prompt, model.Options{Sampling: s, MaxNewTokens: n, StopIDs: []int{}})
		if err != nil {
			t.Fatal(err)
		}
		return res.IDs
	}
	plain := gen(cm, model.Sampling{})
	for _, s := range []model.Sampling{
		{RepetitionPenalty: 1.5},
		{FrequencyPenalty: 1, PresencePenalty: 0.5},
		{RepetitionPenalty: 1.2, FrequencyPenalty: 0.4, Temperature: 0.7, MinP: 0.1, Seed: 5},
	} {
		want, got := gen(cm, s), gen(gm, s)
		if !slices.Equal(got, want) {
			t.Errorf("%+v: device gave %v, CPU %v", s, got, want)
		}
		if s.Temperature == 0 && slices.Equal(want, plain) {
			t.Errorf("%+v: the penalties changed nothing (%v)", s, want)
		}
	}
}

// TestQuantizedFixtures loads the fixtures quantized (int8, int4) and
// checks the WebGPU kernels against the CPU's dequantized products.
func TestQuantizedFixtures(t *testing.T) {
	modeltest.RunQuantizedFixtures(t, func(t *testing.T) model.Backend { return open(t, Options{}) }, 1e-3)
}

// TestHiddenStates checks the residual stream after each layer against
// transformers' output_hidden_states.
func TestHiddenStates(t *testing.T) { modeltest.RunHiddenStates(t, open(t, Options{}), 1e-3) }

// TestGenerateAhead checks decoding with steps in flight (model.DecodeAhead:
// ids kept on the device, read back in batches) against decoding that
// waits for every token (a caller's state turns running ahead off): the
// same ids for greedy and seeded sampling, and stop ids, stop lengths and
// stop strings that land inside a batch of steps end it there.
func TestGenerateAhead(t *testing.T) {
	b := open(t, Options{})
	m, err := model.Load(tiny(), b, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{1, 17, 300, 42, 9, 1000, 7, 3}
	run := func(o model.Options, ahead bool) model.Result {
		t.Helper()
		if !ahead {
			o.State = m.NewState(1)
			defer o.State.Close()
		}
		r, err := m.Generate(context.Background(), prompt, o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, s := range []model.Sampling{{}, {Temperature: 1, TopK: 50, RepetitionPenalty: 1.3, Seed: 7}} {
		o := model.Options{Sampling: s, MaxNewTokens: 10, StopIDs: []int{}}
		want := run(o, false)
		got := run(o, true)
		if fmt.Sprint(got.IDs) != fmt.Sprint(want.IDs) || got.Reason != want.Reason {
			t.Fatalf("%+v: ahead %v (%s), step by step %v (%s)", s, got.IDs, got.Reason, want.IDs, want.Reason)
		}
		// A stop id at step 6 (inside the batch of steps 4..7) and a
		// length of 5 end there.
		o.StopIDs = []int{want.IDs[5]}
		stop := run(o, true)
		first := slices.Index(want.IDs, want.IDs[5])
		if fmt.Sprint(stop.IDs) != fmt.Sprint(want.IDs[:first]) || stop.Reason != "eos" {
			t.Errorf("%+v: stop id %d: got %v (%s), want %v (eos)", s, want.IDs[5], stop.IDs, stop.Reason, want.IDs[:first])
		}
		o.StopIDs, o.MaxNewTokens = []int{}, 5
		short := run(o, true)
		if fmt.Sprint(short.IDs) != fmt.Sprint(want.IDs[:5]) || short.Reason != "length" {
			t.Errorf("%+v: 5 tokens: got %v (%s), want %v (length)", s, short.IDs, short.Reason, want.IDs[:5])
		}
	}
	// The state a caller continues ends right after the last token fed back.
	st := m.NewState(1)
	defer st.Close()
	r, err := m.Generate(context.Background(), prompt, model.Options{MaxNewTokens: 4, StopIDs: []int{}, State: st})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(prompt) + len(r.IDs) - 1; st.Pos != want {
		t.Errorf("continued state at position %d, want %d", st.Pos, want)
	}
}
