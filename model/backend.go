package model

import (
	"errors"
	"fmt"
	"time"
)

// Tensor is an array owned by a Backend: float32 activations and state, int32
// token ids, or weights in whatever format the backend keeps them. Shapes are
// row-major; a [B, L, X] tensor holds B sequences of L positions.
type Tensor interface {
	Shape() []int
}

// Kind is the element type of an allocated tensor.
type Kind int

// Tensor kinds.
const (
	F32 Kind = iota // float32 activations and state
	I32             // int32 token ids
)

// Role is what a weight is for. WeightSpec carries it so a backend can
// pick kernels and name profile entries without parsing tensor names.
type Role string

// Weight roles.
const (
	RoleEmbedding Role = "embedding" // [V, D]; also the LM head when tied
	RoleLMHead    Role = "lm_head"   // [V, D]
	RoleInProj    Role = "in_proj"   // [ProjDim, D]
	RoleOutProj   Role = "out_proj"  // [D, I]
	RoleConv      Role = "conv1d"    // [ConvDim, K]
	RoleVector    Role = "vector"    // norms, biases, dt_bias, A_log, D
)

// Stream hands over a tensor's bytes in order, in chunks, so no backend
// needs the whole tensor in memory. off is the byte offset of b.
type Stream func(fn func(off int64, b []byte) error) error

// WeightSpec describes one weight for Backend.Weight: a matrix (or vector)
// of a logical shape stored in a Format as one or more streams.
//
//	f32, f16, bf16  Data: the elements, row-major, little-endian
//	int8            Data: N×K int8; Scales: N f16
//	int4            Data: N rows of ceil(K/2) bytes, element 2j in the
//	                low nibble of byte j; Scales, Zeros: N×Groups(K) f16
//
// A backend reads Data first, then Scales, then Zeros, each once: a load
// that quantizes while streaming produces the scales as the data passes.
type WeightSpec struct {
	Name      string
	Role      Role
	Shape     []int // the shape the model uses (conv weights are flattened to [C, K])
	Format    Format
	GroupSize int // int4: elements per group along a row
	Data      Stream
	Scales    Stream // int8 and int4
	Zeros     Stream // int4
}

// Rows and Cols are the matrix view of a spec's shape: a vector is one row.
func (w WeightSpec) Rows() int {
	if len(w.Shape) < 2 {
		return 1
	}
	return w.Shape[0]
}

// Cols is the number of elements per row.
func (w WeightSpec) Cols() int {
	n := 1
	for _, d := range w.Shape {
		n *= d
	}
	if r := w.Rows(); r > 0 {
		return n / r
	}
	return 0
}

// Check validates a spec's format against its shape and streams.
func (w WeightSpec) Check() error {
	if w.Data == nil {
		return fmt.Errorf("no data stream")
	}
	switch w.Format {
	case FormatF32, FormatF16, FormatBF16:
	case FormatInt8:
		if len(w.Shape) != 2 || w.Scales == nil {
			return fmt.Errorf("int8 wants a matrix with scales, got shape %v", w.Shape)
		}
	case FormatInt4:
		if len(w.Shape) != 2 || w.Scales == nil || w.Zeros == nil {
			return fmt.Errorf("int4 wants a matrix with scales and zeros, got shape %v", w.Shape)
		}
		if w.GroupSize <= 0 || w.GroupSize%2 != 0 {
			return fmt.Errorf("int4 group size %d must be a positive even number", w.GroupSize)
		}
	default:
		return fmt.Errorf("unsupported format %s", w.Format)
	}
	return nil
}

// Product says what Backend.MatMul does besides the product: normalise
// the rows of x first (Norm set: Backend.RMSNorm with Norm as its weight,
// Mask, Groups and Eps), and add into out instead of replacing it (Add).
type Product struct {
	Norm   Tensor
	Mask   Tensor
	Groups int // with Norm; 0 means 1: the whole row
	Eps    float32
	Add    bool
	// Conv, when set, runs Backend.Conv after the product, with the
	// product's out as its proj: Conv(c.Out, out, c.State, c.W, c.Bias,
	// c.Mask, c.Config). The causal conv of a decoded token reads only its
	// own channel's column, so a GPU computes it in the product's epilogue,
	// where that column is written, instead of in a dispatch of its own.
	Conv *ConvArgs
}

// ConvArgs are Backend.Conv's arguments besides proj (Product.Conv).
type ConvArgs struct {
	Out, State, W, Bias, Mask Tensor
	Config                    Config
}

// Plain is a product without a norm, replacing out.
var Plain = Product{}

// SSMArgs are the per-call parameters of Backend.SSM.
type SSMArgs struct {
	Config
	// Chunked selects the chunked (SSD) form with the dt clamp, as for a
	// prompt; false selects the recurrence without the clamp, as for one
	// decoded token (SPEC §2.2). Both must give the same y otherwise.
	Chunked bool
	// Gate multiplies y by silu(z), z the first I columns of proj.
	Gate bool
}

// Backend executes the operations of the Mamba-2 forward pass. The model code
// in forward.go calls them in order; a backend may run each at once (the CPU
// reference) or record them and run them together at the next Read (WebGPU).
// Inputs are never modified unless the doc says so.
//
// The operations are deliberately coarse and Mamba-shaped: each is one step
// of SPEC §2, so the forward pass reads like the spec and a GPU backend can
// implement each with one or a few fused kernels.
type Backend interface {
	// Name is "cpu" or "webgpu".
	Name() string
	// Weight takes ownership of a model tensor, converting it as the backend
	// prefers (the CPU keeps float32; a GPU may keep f16 packed).
	Weight(w WeightSpec) (Tensor, error)
	// Alloc returns a zeroed tensor.
	Alloc(kind Kind, shape ...int) Tensor
	// Write replaces the contents of an F32 tensor.
	Write(t Tensor, data []float32)
	// WriteIDs replaces the contents of an I32 tensor.
	WriteIDs(t Tensor, ids []int32)
	// Read waits for every operation issued so far and returns a copy of t.
	Read(t Tensor) ([]float32, error)
	// Zero clears a tensor (used to reset recurrent state).
	Zero(t Tensor)
	// Free releases t's memory now rather than at Close. Operations issued
	// before Free still see t; t must not be used afterwards. Freeing nil or
	// a freed tensor does nothing. State.Close frees what a state allocated.
	Free(t Tensor)
	// Close releases everything the backend holds.
	Close() error

	// Embed gathers rows: out[t, :] = table[ids[t], :]. out is [T, D].
	Embed(out, table, ids Tensor)
	// RMSNorm writes out = rmsnorm(h)·w: each row of h ([T, D]) is cut
	// into groups of D/groups channels, each divided by
	// sqrt(mean(group²) + eps), then multiplied by w and by mask[t] when
	// mask is not nil (padded positions become 0).
	RMSNorm(out, h, w, mask Tensor, groups int, eps float32)
	// MatMul computes out[t, n] = Σ_k x'[t, k] · w[n, k] (+ bias[n] when bias
	// is not nil): x' times w transposed, w in checkpoint layout [N, K].
	// x' is x, or, when p.Norm is set, RMSNorm(x, p.Norm, p.Mask, p.Groups,
	// p.Eps), so a norm and the product that reads it are one operation (a
	// GPU fuses them when decoding). With p.Add the product is added to
	// out (the residual stream) instead of replacing it. With p.Conv, out
	// is then the proj of a Conv (Product.Conv).
	MatMul(out, x, w, bias Tensor, p Product)
	// Conv runs the causal depthwise convolution over the xBC columns
	// [I, 2I+2GN) of proj ([B, L, ProjDim]), each sequence continuing from
	// state ([B, K-1, ConvDim], the previous K-1 inputs, zeros for a new
	// sequence), then SiLU, then the mask ([B, L], nil for none). out is
	// [B, L, ConvDim]. state is replaced by the last K-1 inputs.
	Conv(out, proj, state, w, bias, mask Tensor, c Config)
	// SSM computes y ([B, L, I]) = SSM(x, dt, A, B, C) + D·x for each sequence,
	// from xbc ([B, L, ConvDim]) and the dt columns of proj, starting from
	// state ([B, H, P, N]) and leaving the final state there (SPEC §2.1);
	// with a.Gate, y is then multiplied by silu(z), z being the first I
	// columns of proj (the gate of the gated norm, SPEC §2.2).
	SSM(y, xbc, proj, state, dtBias, aLog, d Tensor, a SSMArgs)
	// Last copies the last position of each sequence: x is [B, L, X], out [B, X].
	Last(out, x Tensor)
}

// DeviceSampler is an optional Backend extension that chooses tokens where
// the logits are, so that decoding reads back only the chosen ids, never the
// logits. Generate uses it when the backend has it.
type DeviceSampler interface {
	// Sample writes into ids ([B], I32) the token chosen from each row of
	// logits ([B, V]) as Sampler.Sample does, with u[b] in [0, 1) as row
	// b's random number; for a row CheckLogits refuses it writes
	// LogitsCode of its error, a negative number (DecodeLogits reads it).
	// history ([B, 2, V], nil when s has no penalties) is each row's
	// record for Sampling.Penalize; the chosen token's count goes up by
	// one there, so decoding keeps it on the device.
	Sample(ids, logits, history Tensor, s Sampling, u []float32)
	// ReadIDs waits for every operation issued so far and returns ids.
	ReadIDs(ids Tensor) ([]int32, error)
}

// IDStager is an optional extension of a DeviceSampler that reads ids
// back without waiting for later work: StageIDs records a copy of each ids
// tensor (in order) after everything issued so far and submits it; the
// returned function waits for that copy alone, not for work issued after
// StageIDs, and returns the ids concatenated. Decoding uses it to keep
// several steps in flight: the next steps are recorded and running while
// the ids of earlier ones come back. Each returned function must be called
// once.
type IDStager interface {
	StageIDs(ids ...Tensor) func() ([]int32, error)
}

// KernelTime is the device time one kernel took over a profiled stretch.
type KernelTime struct {
	Calls int           // dispatches
	Time  time.Duration // their total device time
}

// Profiler is an optional Backend extension for backends that can time each
// kernel on the device (WebGPU with timestamp queries). mamba2 bench
// --profile prints its figures.
type Profiler interface {
	// SetProfiling starts or stops recording kernel times. Starting returns
	// an error saying why when the backend cannot time kernels.
	SetProfiling(on bool) error
	// Profile returns the time of each kernel recorded since the last call,
	// by kernel name, and starts counting afresh.
	Profile() map[string]KernelTime
}

// DeviceMemory is an optional Backend extension for backends that hold
// tensors in device memory (WebGPU): DeviceBytes is the bytes of every
// buffer they hold now, weights, states and scratch. bench and the JS
// info() report it.
type DeviceMemory interface {
	DeviceBytes() int64
}

// ErrDeviceLost is wrapped by the errors of a backend whose device is gone:
// the driver reset it, a GPU watchdog or the browser reclaimed it, or it
// stopped answering. Nothing on that backend works any more; open a new one
// and load the model again.
var ErrDeviceLost = errors.New("the GPU device was lost")

// SubmissionBudget is the device time one submission of a prompt aims at.
// A GPU runs a submission to its end, and drivers and browsers give up on
// work that runs for seconds (Windows resets a GPU after 2 s; some engines
// return zeros after 5 s), so long prompts go through in pieces sized from
// measured timings, each layer of a piece submitted on its own. A quarter
// of a second keeps a wide margin below every watchdog and costs a fast GPU
// nothing: there the pieces are limited by memory long before time.
const SubmissionBudget = 250 * time.Millisecond

// Pacer is an optional Backend extension for backends that queue work for a
// device and run it later (WebGPU). Forward uses it to keep submissions
// short (SubmissionBudget).
type Pacer interface {
	// Flush submits the operations issued so far without waiting.
	Flush()
	// Sync submits the operations issued so far and waits until the device
	// has finished them all.
	Sync() error
}
