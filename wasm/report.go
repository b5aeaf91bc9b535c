//go:build js && wasm

package main

import (
	"fmt"
	"runtime"
	"syscall/js"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/wgsl"
)

// recorder passes weights on to a backend and notes, per role, the format
// each one was handed over in (after any quantization of the load), and
// their elements.
type recorder struct {
	model.Backend
	formats map[model.Role]model.Format
	mixed   map[model.Role]bool // a role seen in more than one format
	group   int                 // int4's group size, when some weight is int4
	elems   int64
}

func (r *recorder) Weight(w model.WeightSpec) (model.Tensor, error) {
	t, err := r.Backend.Weight(w)
	if err != nil {
		return t, err
	}
	if f, seen := r.formats[w.Role]; seen && f != w.Format {
		if r.mixed == nil {
			r.mixed = map[model.Role]bool{}
		}
		r.mixed[w.Role] = true
	}
	r.formats[w.Role] = w.Format
	if w.Format == model.FormatInt4 {
		r.group = w.GroupSize
	}
	n := int64(1)
	for _, d := range w.Shape {
		n *= int64(d)
	}
	r.elems += n
	return t, nil
}

// format is a role's format name: "mixed" when its weights differ.
func (r *recorder) format(role model.Role) string {
	if r.mixed[role] {
		return "mixed"
	}
	return r.formats[role].String()
}

// liveBytes is the bytes of a WebGPU backend's live buffers (-1 on the
// CPU backend, which has none).
func liveBytes(b model.Backend) int64 {
	if gb, ok := b.(*wgsl.Backend); ok {
		return int64(gb.Stats().LiveBytes)
	}
	return -1
}

// weightReport describes a finished load for loadModel's result:
//
//	weights         the format of the large matrices (in_proj, out_proj,
//	                the embedding, lm_head): 'f32', 'f16', 'bf16', 'int8',
//	                'int4', or 'mixed' when they differ
//	weightFormats   the format per role (embedding, lm_head when untied,
//	                in_proj, out_proj, conv1d, vector)
//	quantize        the quantize option of the load ('int8', 'int4' or null)
//	groupSize       int4's group length, null without int4 weights
//	weightBytes     the weights' bytes on the device: GPU buffers on WebGPU,
//	                float32 in wasm memory on the CPU (which dequantizes)
//	gpuMemoryBytes  all live GPU buffers after the load (WebGPU's LiveBytes);
//	                null on the CPU
//	wasmMemoryBytes the WebAssembly memory after the load (it never
//	                shrinks, so this is its peak so far); null where the
//	                host does not expose it
func weightReport(r *recorder, q model.Quant, b model.Backend, before int64) map[string]any {
	formats := map[string]any{}
	for role := range r.formats {
		formats[string(role)] = r.format(role)
	}
	weights := ""
	for _, role := range []model.Role{model.RoleEmbedding, model.RoleLMHead, model.RoleInProj, model.RoleOutProj} {
		if _, ok := r.formats[role]; !ok {
			continue
		}
		switch f := r.format(role); {
		case weights == "":
			weights = f
		case weights != f:
			weights = "mixed"
		}
	}
	out := map[string]any{
		"weights":         weights,
		"weightFormats":   formats,
		"quantize":        nil,
		"groupSize":       nil,
		"weightBytes":     float64(r.elems * 4),
		"gpuMemoryBytes":  nil,
		"wasmMemoryBytes": nil,
	}
	if q.On() {
		out["quantize"] = q.Format.String()
	}
	if r.group > 0 {
		out["groupSize"] = r.group
	}
	if live := liveBytes(b); live >= 0 {
		out["gpuMemoryBytes"] = float64(live)
		out["weightBytes"] = float64(live - before)
	}
	if n := wasmMemory(); n > 0 {
		out["wasmMemoryBytes"] = float64(n)
	}
	return out
}

// checkStoredQuant refuses a quantize option that disagrees with a
// checkpoint stored quantized (config.json's quantization_config):
// quantizing quantized values would compound their error. The same format
// (and group size) is allowed: the weights load as they are stored.
func checkStoredQuant(stored, q model.Quant) error {
	if !stored.On() || !q.On() {
		return nil
	}
	what := func(q model.Quant, r model.Role) string {
		f, gs := q.For(r)
		if f == model.FormatInt4 {
			return fmt.Sprintf("int4 with groups of %d", gs)
		}
		return f.String()
	}
	for _, r := range []model.Role{model.RoleInProj, model.RoleEmbedding} {
		if r == model.RoleEmbedding && q.Embedding == 0 {
			continue // the tables as they are stored, unless asked
		}
		if what(stored, r) != what(q, r) {
			return codef(codeBadArg, "option quantize: the checkpoint is stored as %s already (config.json's quantization_config); "+
				"quantizing it again would compound the error: leave quantize out, or load the float checkpoint", what(stored, r))
		}
	}
	return nil
}

// wasmMemory is the byte length of this program's WebAssembly memory
// (exports.mem of the instance a browser loader or the worker puts at
// globalThis.wasm), 0 where it cannot be found.
func wasmMemory() int64 {
	w := js.Global().Get("wasm")
	if w.Type() != js.TypeObject {
		return 0
	}
	mem := w.Get("instance")
	for _, k := range []string{"exports", "mem", "buffer"} {
		if mem.Type() != js.TypeObject {
			return 0
		}
		mem = mem.Get(k)
	}
	if mem.Type() != js.TypeObject {
		return 0
	}
	return int64(mem.Get("byteLength").Float())
}

// memoryInfo is info()'s memory: the WebAssembly memory's size and Go's
// view of it (runtime.MemStats: Sys, all the runtime holds; HeapInuse, the
// heap spans in use), in bytes.
func memoryInfo() map[string]any {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return map[string]any{
		"wasmBytes":   float64(wasmMemory()),
		"goSysBytes":  float64(ms.Sys),
		"goHeapBytes": float64(ms.HeapInuse),
	}
}
