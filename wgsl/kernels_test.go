package wgsl

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model"
)

// TestKernels checks every kernel descriptor (kernels.go) against its WGSL,
// in every variant that changes Params or the bindings: the parameter
// struct field by field (name, type and offset), the bindings one by one
// (name and access) and the workgroup size. It needs no device.
func TestKernels(t *testing.T) {
	for _, k := range kernels {
		for _, d := range kernelVariants(k) {
			name := fmt.Sprintf("%s[%s]", k.file, d.key())
			src, err := preprocess(k.file, d)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			for _, p := range checkKernel(k, d, src) {
				t.Errorf("%s: %s", name, p)
			}
		}
	}
}

// TestKernelsCover: every file with an entry point has a descriptor, and
// the descriptors of a file name every define the file switches on.
func TestKernelsCover(t *testing.T) {
	switches := map[string][]string{} // file → the defines its descriptors know
	for _, k := range kernels {
		sw := append(slices.Clone(k.variants), k.pass...)
		if k.under != "" {
			sw = append(sw, k.under)
		}
		switches[k.file] = append(switches[k.file], sw...)
	}
	entries, err := shaderFS.ReadDir("shaders")
	if err != nil {
		t.Fatal(err)
	}
	ifdef := regexp.MustCompile(`(?m)^\s*#ifn?def\s+(\w+)`)
	for _, e := range entries {
		raw, err := shaderFS.ReadFile("shaders/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		known, ok := switches[e.Name()]
		if !strings.Contains(string(raw), "@compute") {
			if ok {
				t.Errorf("%s has a descriptor but no entry point", e.Name())
			}
			continue
		}
		if !ok {
			t.Errorf("%s has no descriptor in kernels.go", e.Name())
			continue
		}
		var used []string
		for _, m := range ifdef.FindAllStringSubmatch(string(raw), -1) {
			used = append(used, m[1])
			if !slices.Contains(known, m[1]) {
				t.Errorf("%s switches on %s, which its descriptors do not list", e.Name(), m[1])
			}
		}
		for _, s := range known {
			if !slices.Contains(used, s) {
				t.Errorf("%s: the descriptors list %s, which the file does not switch on", e.Name(), s)
			}
		}
	}
}

// TestKernelsCatchMismatch: the checks find a field added, removed,
// reordered or retyped on the Go side, a binding out of place, a wrong
// access mode and a wrong workgroup size.
func TestKernelsCatchMismatch(t *testing.T) {
	src := `
const WG: u32 = 64u;
struct Params {
    T: u32,   // tokens
    has_bias: u32, eps: f32, pad: u32,
    u: array<vec4<f32>, 2>,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(WG)
fn main() {}
`
	type good struct {
		T, HasBias uint32
		Eps        float32
		Pad        uint32
		U          [2][4]float32
	}
	k := kernelInfo{file: "test.wgsl", workgroup: 64, binds: []binding{read("x"), write("out")}}
	k.complete(reflect.TypeFor[good]())
	if p := checkKernel(&k, nil, src); len(p) != 0 {
		t.Fatalf("the matching descriptor fails: %v", p)
	}
	bad := map[string]kernelInfo{}
	with := func(name string, f func(*kernelInfo)) {
		c := k
		f(&c)
		c.complete(c.params)
		bad[name] = c
	}
	with("Go field added", func(k *kernelInfo) {
		k.params = reflect.TypeFor[struct {
			T, HasBias, Extra uint32
			Eps               float32
			Pad               uint32
			U                 [2][4]float32
		}]()
	})
	with("Go fields reordered", func(k *kernelInfo) {
		k.params = reflect.TypeFor[struct {
			HasBias, T uint32
			Eps        float32
			Pad        uint32
			U          [2][4]float32
		}]()
	})
	with("bindings swapped", func(k *kernelInfo) { k.binds = []binding{write("out"), read("x")} })
	with("access", func(k *kernelInfo) { k.binds = []binding{read("x"), read("out")} })
	with("binding missing", func(k *kernelInfo) { k.binds = []binding{read("x")} })
	with("workgroup", func(k *kernelInfo) { k.workgroup = 256 })
	for name, k := range bad {
		if p := checkKernel(&k, nil, src); len(p) == 0 {
			t.Errorf("%s: not caught", name)
		} else {
			t.Logf("%s: %s", name, strings.Join(p, "; "))
		}
	}
	// The WGSL side changed instead.
	for name, edit := range map[string][2]string{
		"WGSL field added":     {"u: array<vec4<f32>, 2>,", "u: array<vec4<f32>, 2>, extra: u32,"},
		"WGSL field removed":   {"has_bias: u32, ", ""},
		"WGSL fields swapped":  {"has_bias: u32, eps: f32,", "eps: f32, has_bias: u32,"},
		"WGSL field retyped":   {"eps: f32", "eps: u32"},
		"WGSL padding dropped": {" pad: u32,", ""},
		"WGSL short array":     {"array<vec4<f32>, 2>", "array<vec4<f32>, 1>"},
		"WGSL binding moved":   {"@binding(2)", "@binding(3)"},
		"WGSL access changed":  {"<storage, read>", "<storage, read_write>"},
	} {
		changed := strings.Replace(src, edit[0], edit[1], 1)
		if changed == src {
			t.Fatalf("%s: no %q in the source", name, edit[0])
		}
		if p := checkKernel(&k, nil, changed); len(p) == 0 {
			t.Errorf("%s: not caught", name)
		} else {
			t.Logf("%s: %s", name, strings.Join(p, "; "))
		}
	}
}

// TestDispatchChecksBindings: a dispatch whose bindings do not fit its
// descriptor is refused with an error, and nothing is recorded.
func TestDispatchChecksBindings(t *testing.T) {
	b := open(t, Options{})
	x := b.Alloc(model.F32, 64).(*tensor)
	y := b.Alloc(model.F32, 64).(*tensor)
	p := lastParams{B: 1, L: 1, X: 64}
	for _, c := range []struct {
		binds []bind
		want  string
	}{
		{[]bind{ro(x.parts[0])}, "1 bindings, the kernel has 2"},
		{[]bind{ro(x.parts[0]), ro(y.parts[0])}, "binding 2 (out) is bound with the wrong access"},
		{[]bind{b.opt(nil), rw(y.parts[0])}, "binding 1 (x) is required"},
	} {
		before := b.Stats().Dispatches
		lastKernel.dispatch(b, nil, c.binds, p, 1)
		err := b.takeErr()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
		if n := b.Stats().Dispatches - before; n != 0 {
			t.Errorf("%q: %d dispatches recorded", c.want, n)
		}
	}
}

// kernelVariants are the define sets of k worth checking: its pass, with
// nothing else or one of its variants (SUBGROUPS also with each other
// variant, since the backend adds it to every dispatch of such a kernel),
// times every weight format when it reads a weight.
func kernelVariants(k *kernelInfo) []defines {
	formats := [][]string{nil}
	if k.weight {
		formats = nil
		for _, f := range []model.Format{model.FormatF32, model.FormatF16, model.FormatBF16, model.FormatInt8, model.FormatInt4} {
			formats = append(formats, (&tensor{format: f, group: 32}).formatDefines())
		}
	}
	sets := [][]string{nil}
	for _, v := range k.variants {
		sets = append(sets, []string{v})
		if v != subgroupsDefine && slices.Contains(k.variants, subgroupsDefine) {
			sets = append(sets, []string{v, subgroupsDefine})
		}
	}
	var out []defines
	for _, v := range sets {
		for _, f := range formats {
			d := append(slices.Clone([]string(k.pass)), f...)
			out = append(out, defs(append(d, v...)...))
		}
	}
	return out
}

// checkKernel compares descriptor k with the expanded source src of its
// variant d and lists what differs.
func checkKernel(k *kernelInfo, d defines, src string) []string {
	var probs []string
	probs = append(probs, checkParams(k.params, src)...)
	probs = append(probs, checkBindings(k, d, src)...)
	probs = append(probs, checkWorkgroup(k.workgroup, src)...)
	return probs
}

// normName compares names ignoring case and underscores.
func normName(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }

var commentRE = regexp.MustCompile(`//[^\n]*`)

// wgslField is one field of a WGSL struct.
type wgslField struct{ name, typ string }

// parseParams returns the fields of `struct Params { ... }` in src.
func parseParams(src string) ([]wgslField, error) {
	src = commentRE.ReplaceAllString(src, "")
	m := regexp.MustCompile(`struct\s+Params\s*\{([^}]*)\}`).FindAllStringSubmatch(src, -1)
	if len(m) != 1 {
		return nil, fmt.Errorf("%d declarations of struct Params", len(m))
	}
	var out []wgslField
	for _, f := range splitTop(m[0][1]) {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		name, typ, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("Params field %q has no type", f)
		}
		out = append(out, wgslField{strings.TrimSpace(name), strings.Join(strings.Fields(typ), "")})
	}
	return out, nil
}

// splitTop splits s at the commas outside <>.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '<':
			depth++
		case '>':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// wgslLayout is the size and alignment of a WGSL type in the uniform
// address space, for the scalars, vectors and arrays Params may hold.
func wgslLayout(typ string) (size, align uintptr, err error) {
	switch typ {
	case "u32", "f32", "i32":
		return 4, 4, nil
	}
	if e, n, ok := generic(typ, "vec"); ok {
		es, _, err := wgslLayout(e)
		if err != nil || es != 4 {
			return 0, 0, fmt.Errorf("bad vector %s", typ)
		}
		return es * n, map[uintptr]uintptr{2: 8, 3: 16, 4: 16}[n], nil
	}
	if e, n, ok := generic(typ, "array"); ok {
		es, ea, err := wgslLayout(e)
		if err != nil {
			return 0, 0, err
		}
		stride := (es + ea - 1) / ea * ea
		if stride%16 != 0 {
			return 0, 0, fmt.Errorf("%s: a uniform array's stride must be a multiple of 16", typ)
		}
		return stride * n, max(ea, 16), nil
	}
	return 0, 0, fmt.Errorf("type %s is not supported in Params", typ)
}

// generic parses vecN<E> and array<E, N> (kind "vec" or "array").
func generic(typ, kind string) (elem string, n uintptr, ok bool) {
	rest, found := strings.CutPrefix(typ, kind)
	if !found || !strings.HasSuffix(rest, ">") {
		return "", 0, false
	}
	if kind == "vec" {
		if len(rest) < 3 || rest[1] != '<' {
			return "", 0, false
		}
		return rest[2 : len(rest)-1], uintptr(rest[0] - '0'), true
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(rest, "<"), ">")
	parts := splitTop(inner)
	if len(parts) != 2 {
		return "", 0, false
	}
	c, err := strconv.ParseUint(strings.TrimSuffix(parts[1], "u"), 10, 32)
	if err != nil {
		return "", 0, false
	}
	return parts[0], uintptr(c), true
}

// goMatches says whether Go type g is WGSL type w: u32, f32 and i32 are
// uint32, float32 and int32; vecN<E> and array<E, N> are [N]E.
func goMatches(g reflect.Type, w string) bool {
	switch w {
	case "u32":
		return g.Kind() == reflect.Uint32
	case "f32":
		return g.Kind() == reflect.Float32
	case "i32":
		return g.Kind() == reflect.Int32
	}
	for _, kind := range []string{"vec", "array"} {
		if e, n, ok := generic(w, kind); ok {
			return g.Kind() == reflect.Array && uintptr(g.Len()) == n && goMatches(g.Elem(), e)
		}
	}
	return false
}

// goField is one field of a Go parameter struct, embedded structs
// flattened.
type goField struct {
	name   string
	typ    reflect.Type
	offset uintptr
}

func goFields(t reflect.Type, base uintptr) []goField {
	var out []goField
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, goFields(f.Type, base+f.Offset)...)
			continue
		}
		out = append(out, goField{f.Name, f.Type, base + f.Offset})
	}
	return out
}

// checkParams compares Go struct p with src's struct Params field by field.
func checkParams(p reflect.Type, src string) []string {
	fields, err := parseParams(src)
	if err != nil {
		return []string{err.Error()}
	}
	gf := goFields(p, 0)
	var probs []string
	var off uintptr
	for i := range max(len(fields), len(gf)) {
		if i >= len(fields) {
			probs = append(probs, fmt.Sprintf("Go field %d, %s %s, is not in the WGSL Params", i, gf[i].name, gf[i].typ))
			continue
		}
		w := fields[i]
		size, align, err := wgslLayout(w.typ)
		if err != nil {
			probs = append(probs, fmt.Sprintf("WGSL field %s: %v", w.name, err))
			break
		}
		off = (off + align - 1) / align * align
		if i >= len(gf) {
			probs = append(probs, fmt.Sprintf("WGSL field %d, %s: %s, is not in the Go struct %s", i, w.name, w.typ, p))
			continue
		}
		g := gf[i]
		switch {
		case normName(g.name) != normName(w.name):
			probs = append(probs, fmt.Sprintf("field %d is %s in Go, %s in WGSL", i, g.name, w.name))
		case !goMatches(g.typ, w.typ):
			probs = append(probs, fmt.Sprintf("field %s is %s in Go, %s in WGSL", g.name, g.typ, w.typ))
		case g.offset != off:
			probs = append(probs, fmt.Sprintf("field %s is at byte %d in Go, %d in WGSL", g.name, g.offset, off))
		}
		off += size
	}
	return probs
}

var bindingRE = regexp.MustCompile(`@group\((\d+)\)\s*@binding\((\d+)\)\s*var<([^>]*)>\s*(\w+)\s*:\s*([^;]+);`)

// checkBindings compares the bindings k has in variant d with src's.
func checkBindings(k *kernelInfo, d defines, src string) []string {
	src = commentRE.ReplaceAllString(src, "")
	var want []binding
	for _, x := range k.binds {
		if x.under == "" || d.has(x.under) {
			want = append(want, x)
		}
	}
	if got := k.accessFor(d); len(got) != len(want) {
		return []string{fmt.Sprintf("access pattern %q for %d bindings", got, len(want))}
	}
	var probs []string
	seen := map[int]bool{}
	for _, m := range bindingRE.FindAllStringSubmatch(src, -1) {
		group, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		space := strings.Join(strings.Fields(strings.ReplaceAll(m[3], ",", " ")), " ")
		name, typ := m[4], strings.TrimSpace(m[5])
		if group != 0 || seen[n] {
			probs = append(probs, fmt.Sprintf("binding %s is @group(%d) @binding(%d) twice or outside group 0", name, group, n))
			continue
		}
		seen[n] = true
		if n == 0 {
			if space != "uniform" || typ != "Params" {
				probs = append(probs, fmt.Sprintf("@binding(0) is var<%s> %s: %s, want the uniform Params", m[3], name, typ))
			}
			continue
		}
		if n > len(want) {
			probs = append(probs, fmt.Sprintf("@binding(%d) %s is not in the descriptor (it has %d)", n, name, len(want)))
			continue
		}
		x := want[n-1]
		access := "storage read"
		if x.write {
			access = "storage read_write"
		}
		if space == "storage" {
			space = "storage read"
		}
		if normName(x.name) != normName(name) || space != access {
			probs = append(probs, fmt.Sprintf("@binding(%d) is var<%s> %s, the descriptor has var<%s> %s",
				n, m[3], name, strings.Replace(access, " ", ", ", 1), x.name))
		}
	}
	for n := 0; n <= len(want); n++ {
		if !seen[n] {
			name := "the uniform Params"
			if n > 0 {
				name = want[n-1].name
			}
			probs = append(probs, fmt.Sprintf("@binding(%d), %s, is not declared", n, name))
		}
	}
	return probs
}

// checkWorkgroup checks src's @workgroup_size against wg, resolving a
// constant name through its declaration.
func checkWorkgroup(wg uint32, src string) []string {
	src = commentRE.ReplaceAllString(src, "")
	ms := regexp.MustCompile(`@workgroup_size\(([^)]*)\)`).FindAllStringSubmatch(src, -1)
	if len(ms) != 1 {
		return []string{fmt.Sprintf("%d entry points, want 1", len(ms))}
	}
	dims := strings.Split(ms[0][1], ",")
	var got []uint64
	for _, dim := range dims {
		v := strings.TrimSpace(dim)
		if c := regexp.MustCompile(`const\s+` + regexp.QuoteMeta(v) + `\s*(?::\s*\w+\s*)?=\s*(\w+)\s*;`).FindStringSubmatch(src); c != nil {
			v = c[1]
		}
		n, err := strconv.ParseUint(strings.TrimRight(v, "ui"), 10, 32)
		if err != nil {
			return []string{fmt.Sprintf("workgroup size %q: %v", ms[0][1], err)}
		}
		got = append(got, n)
	}
	if got[0] != uint64(wg) || slices.ContainsFunc(got[1:], func(n uint64) bool { return n != 1 }) {
		return []string{fmt.Sprintf("@workgroup_size(%s) is %v, the descriptor has %d", ms[0][1], got, wg)}
	}
	return nil
}
