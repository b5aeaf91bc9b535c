package wgsl

import (
	"fmt"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
)

// pipeKey identifies a kernel variant: its file and its defines. The access
// pattern of its bindings follows from the two (the kernel's descriptor,
// kernels.go), but is part of the key so a mismatch is a cache miss, not a
// wrong layout.
type pipeKey struct {
	shader, defines, access string
}

type pipeline struct {
	pipe   *wgpu.ComputePipeline
	layout *layout
	name   string // the kernel's name in profiles (kernelName)
}

// layout is a bind group layout (a uniform with a dynamic offset, then the
// storage bindings) and its pipeline layout, shared by kernels with the
// same access pattern.
type layout struct {
	bgl        *wgpu.BindGroupLayout
	pipeLayout *wgpu.PipelineLayout
}

// groupKey identifies a bind group by its layout and buffers. The parameter
// slot is a dynamic offset, so it is not part of the key.
type groupKey struct {
	layout *layout
	n      int
	ids    [maxStorageBindings]uint64
}

// bind is one storage binding of a dispatch.
type bind struct {
	buf   *wgpu.Buffer
	id    uint64 // 0 for the dummy buffer
	size  uint64
	write bool
}

func ro(p part) bind { return bind{buf: p.buf, id: p.id, size: p.size} }
func rw(p part) bind { return bind{buf: p.buf, id: p.id, size: p.size, write: true} }

// opt binds t read-only, or the dummy buffer when t is nil.
func (b *Backend) opt(t *tensor) bind {
	if t == nil {
		return bind{buf: b.dummy, size: 16}
	}
	return ro(t.parts[0])
}

func (b *Backend) layoutFor(access string) (*layout, error) {
	if l, ok := b.layouts[access]; ok {
		return l, nil
	}
	entries := []wgpu.BindGroupLayoutEntry{{
		Binding: 0, Visibility: wgpu.ShaderStageCompute,
		Buffer: wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, HasDynamicOffset: true, MinBindingSize: 0},
	}}
	for i, c := range access {
		typ := wgpu.BufferBindingTypeReadOnlyStorage
		if c == 'w' {
			typ = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding: uint32(i + 1), Visibility: wgpu.ShaderStageCompute,
			Buffer: wgpu.BufferBindingLayout{Type: typ},
		})
	}
	bgl, err := b.dev.CreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: access, Entries: entries})
	if err != nil {
		return nil, err
	}
	pl, err := b.dev.CreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: access, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		return nil, err
	}
	l := &layout{bgl: bgl, pipeLayout: pl}
	b.layouts[access] = l
	return l, nil
}

func (b *Backend) pipelineFor(shader string, d defines, access string) (*pipeline, error) {
	key := pipeKey{shader, d.key(), access}
	if p, ok := b.pipes[key]; ok {
		return p, nil
	}
	src, err := preprocess(shader, d)
	if err != nil {
		return nil, err
	}
	l, err := b.layoutFor(access)
	if err != nil {
		return nil, err
	}
	label := strings.TrimSuffix(shader, ".wgsl")
	if len(d) > 0 {
		label += "[" + d.key() + "]"
	}
	b.plat.push()
	mod, err := b.dev.CreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: src}})
	if err != nil {
		b.plat.pop()
		return nil, fmt.Errorf("compiling %s: %v", label, err)
	}
	defer mod.Release()
	pipe, err := b.dev.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{
		Layout:  l.pipeLayout,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: "main"},
	})
	if perr := b.plat.pop()(); err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return nil, fmt.Errorf("creating pipeline %s: %v", label, err)
	}
	p := &pipeline{pipe: pipe, layout: l, name: kernelName(shader, d)}
	b.pipes[key] = p
	b.stats.Pipelines++
	return p, nil
}

func (b *Backend) groupFor(l *layout, binds []bind) (*wgpu.BindGroup, error) {
	key := groupKey{layout: l, n: len(binds)}
	for i, x := range binds {
		key.ids[i] = x.id
	}
	if g, ok := b.groups[key]; ok {
		return g, nil
	}
	entries := []wgpu.BindGroupEntry{{Binding: 0, Buffer: b.arena, Offset: 0, Size: b.slot}}
	for i, x := range binds {
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i + 1), Buffer: x.buf, Offset: 0, Size: x.size})
	}
	g, err := b.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: l.bgl, Entries: entries})
	if err != nil {
		return nil, err
	}
	b.groups[key] = g
	for _, id := range key.ids[:key.n] {
		if id == 0 {
			continue // the dummy buffer, never freed
		}
		if b.byID[id] == nil {
			b.byID[id] = map[groupKey]struct{}{}
		}
		b.byID[id][key] = struct{}{}
	}
	b.stats.BindGroups++
	b.stats.LiveBindGroups++
	return g, nil
}
