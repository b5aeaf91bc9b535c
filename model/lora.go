package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
)

// LoRA adapters kept apart from the weights ("attached"). Merging at load
// (adapter.go) costs nothing per token but fixes the adapters of a loaded
// model; an attached adapter instead lives on the backend as its low-rank
// factors, and each row of a State says which attached adapter, if any,
// it runs under, so one model serves several adapters at once, switching
// per request, and a quantized base (which a merge refuses) keeps its
// weights as they are while the adapter runs in f32 beside them.
//
// For a base product out = x'·Wᵀ (x' what the product sees: for in_proj
// and out_proj the output of the fused RMSNorm) the adapter adds
//
//	out += (x'·Aᵀ)·Bᵀ    A [R, K], B [N, R], B holding the scale
//
// as two backend products (the first with the base product's Norm, the
// second with Add). For the embedding, h += Table[ids]·Bᵀ with Table
// [V, R] gathered by Backend.Embed. R is a few dozen at most, so the
// extra work is a sliver of the base products'. Rows of a batch that do
// not run under an adapter have their rows of the R-wide intermediate
// zeroed (Backend rows copied from a zero tensor: RowCopier) before the
// second product, so they get exactly nothing from it; the runs of such
// rows are worked out on the host when a row's assignment changes, and a
// batch whose rows all use the adapter copies nothing.

// loraProduct is an adapter's update of one matrix used as a product.
type loraProduct struct {
	A, B Tensor // [R, K], [N, R]
	R    int
}

// loraLookup is an adapter's update of the embedding table, used as a
// lookup: h[t] += Table[ids[t]]·Bᵀ.
type loraLookup struct {
	Table, B Tensor // [V, R], [D, R]
	R        int
}

// attached is one adapter on a model's backend.
type attached struct {
	name  string
	info  []AdapterInfo
	fp    [32]byte // the factors' SHA-256: what saved states and the prefix cache key on
	embed *loraLookup
	head  *loraProduct
	// prods are the updates of the other matrices, by the base weight
	// they change (a Zamba2 shared block's weight is one tensor however
	// many layers use it, so its update applies wherever it is used).
	prods   map[Tensor]*loraProduct
	tensors []Tensor
	users   int // rows of open states assigned to it
}

// key identifies the adapter's arithmetic, not its name: a name may be
// attached again to other factors.
func (a *attached) key() string {
	if a == nil {
		return ""
	}
	return hex.EncodeToString(a.fp[:])
}

// loraSet is a model's attached adapters. One lock guards every model's
// (attaching is rare, and a Model stays copyable).
type loraSet struct {
	byName map[string]*attached
}

var loraMu sync.Mutex

// AttachedAdapter describes an attached adapter for reports.
type AttachedAdapter struct {
	// Name is what requests select it by (Options.Adapter).
	Name string `json:"name"`
	// Adapters are the PEFT adapters whose updates it sums.
	Adapters []AdapterInfo `json:"adapters"`
	// InUse is how many rows of open states run under it now.
	InUse int `json:"in_use"`
}

// AttachAdapter puts ads (one adapter, or several whose updates add up as
// merging them in order would) on the model's backend under name without
// merging them: A and B of each module they adapt become f32 tensors (B
// scaled by alpha/r), checked against the model exactly as a merge at
// load checks them. Rows of a State select it (State.UseAdapter,
// Options.Adapter, a Scheduler request's Options.Adapter); other rows are
// unchanged. The base weights may be stored or loaded quantized.
//
// It uses the backend, so with a Scheduler running use its AttachAdapter.
func (m *Model) AttachAdapter(name string, ads ...*Adapter) error {
	if name == "" {
		return errors.New("attach adapter: the name is empty (\"\" selects the base model)")
	}
	if len(ads) == 0 || slices.Contains(ads, nil) {
		return fmt.Errorf("attach adapter %s: no adapter", name)
	}
	loraMu.Lock()
	_, dup := m.lora.byName[name]
	loraMu.Unlock()
	if dup {
		return fmt.Errorf("attach adapter %s: an adapter of that name is attached already (detach it first)", name)
	}
	a, err := m.upload(name, ads)
	if err != nil {
		return fmt.Errorf("attach adapter %s: %w", name, err)
	}
	loraMu.Lock()
	defer loraMu.Unlock()
	if m.lora.byName == nil {
		m.lora.byName = map[string]*attached{}
	}
	if _, dup := m.lora.byName[name]; dup {
		a.free(m.Backend)
		return fmt.Errorf("attach adapter %s: an adapter of that name is attached already (detach it first)", name)
	}
	m.lora.byName[name] = a
	return nil
}

// DetachAdapter frees the adapter attached as name. It refuses while a
// row of an open State runs under it (a running generation, a state a
// caller keeps): close the state, or give the row another adapter, first.
func (m *Model) DetachAdapter(name string) error {
	loraMu.Lock()
	a, ok := m.lora.byName[name]
	if ok && a.users > 0 {
		loraMu.Unlock()
		return fmt.Errorf("detach adapter %s: %d sequence(s) run under it", name, a.users)
	}
	delete(m.lora.byName, name)
	loraMu.Unlock()
	if !ok {
		return fmt.Errorf("detach adapter %s: %w", name, m.unknownAdapter(name))
	}
	a.free(m.Backend)
	return nil
}

// AttachedAdapters lists the attached adapters, by name.
func (m *Model) AttachedAdapters() []AttachedAdapter {
	loraMu.Lock()
	defer loraMu.Unlock()
	out := make([]AttachedAdapter, 0, len(m.lora.byName))
	for n, a := range m.lora.byName {
		out = append(out, AttachedAdapter{Name: n, Adapters: a.info, InUse: a.users})
	}
	slices.SortFunc(out, func(x, y AttachedAdapter) int {
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

// ErrUnknownAdapter is wrapped by the errors that name an adapter that is
// not attached.
var ErrUnknownAdapter = errors.New("no adapter of that name is attached")

func (m *Model) unknownAdapter(name string) error {
	var names []string
	for _, a := range m.AttachedAdapters() {
		names = append(names, a.Name)
	}
	if len(names) == 0 {
		return fmt.Errorf("%w (none is)", ErrUnknownAdapter)
	}
	return fmt.Errorf("%w (attached: %v)", ErrUnknownAdapter, names)
}

// lookupAdapter returns the adapter attached as name (nil for "").
func (m *Model) lookupAdapter(name string) (*attached, error) {
	if name == "" {
		return nil, nil
	}
	loraMu.Lock()
	a, ok := m.lora.byName[name]
	loraMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("adapter %q: %w", name, m.unknownAdapter(name))
	}
	return a, nil
}

// CheckAdapter reports whether name selects an attached adapter ("" does:
// the base model), with the error Generate would give.
func (m *Model) CheckAdapter(name string) error {
	_, err := m.lookupAdapter(name)
	return err
}

// modelShapes are the shapes of the matrices adapters may change, by
// binding name, as the model's bindings (weights.go) give them: what the
// merge planner checks an adapter against. A tied head has no binding of
// its own (planAdapters maps it onto the embedding).
func (c Config) modelShapes() (shapes map[string][]int, index map[string]int) {
	bs := c.bindings(&Weights{})
	shapes, index = map[string][]int{}, map[string]int{}
	for i, bd := range bs {
		if loraRole(bd.role) && len(bd.shape) == 2 {
			shapes[bd.names[0]] = bd.shape
			index[bd.names[0]] = i
		}
	}
	return shapes, index
}

// upload plans ad against the model, as a merge would, and puts its
// factors on the backend.
func (m *Model) upload(name string, ads []*Adapter) (*attached, error) {
	c := m.Config
	shapes, index := c.modelShapes()
	merges, err := groupAdapters(c, shapes, index, ads, nil)
	if err != nil {
		return nil, err
	}
	var tmp Weights
	bs := c.bindings(&tmp)
	base, err := pairMatrices(&tmp, m.Weights)
	if err != nil {
		return nil, err
	}
	a := &attached{name: name, info: AdapterInfos(ads), prods: map[Tensor]*loraProduct{}}
	h := sha256.New()
	ok := false
	defer func() {
		if !ok {
			a.free(m.Backend)
		}
	}()
	// upload puts a float64 matrix on the backend as f32, and hashes it.
	upload := func(what string, role Role, rows, cols int, v []float64) (Tensor, error) {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		raw := make([]byte, 4*len(f))
		for i, x := range f {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
		}
		fmt.Fprintf(h, "%s %d %d;", what, rows, cols)
		h.Write(raw)
		t, err := m.Backend.Weight(WeightSpec{Name: "lora " + name + " " + what, Role: role, Shape: []int{rows, cols},
			Format: FormatF32, Data: func(fn func(int64, []byte) error) error { return fn(0, raw) }})
		if err != nil {
			return nil, err
		}
		a.tensors = append(a.tensors, t)
		return t, nil
	}
	product := func(what string, role Role, d *lowRank) (*loraProduct, error) {
		A, err := upload(what+".A", role, d.R, d.K, d.a)
		if err != nil {
			return nil, err
		}
		B, err := upload(what+".B", role, d.N, d.R, d.b)
		if err != nil {
			return nil, err
		}
		return &loraProduct{A: A, B: B, R: d.R}, nil
	}
	idx := make([]int, 0, len(merges))
	for i := range merges {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		bd := bs[i]
		d, err := loadLowRank(bd.shape[0], bd.shape[1], merges[i])
		if err != nil {
			return nil, err
		}
		switch bd.role {
		case RoleEmbedding:
			// E[v] += b[v]·a: the lookup gathers rows of b; the product
			// with a is one with aᵀ [D, R] as its weight.
			table, err := upload("embeddings.table", bd.role, d.N, d.R, d.b)
			if err != nil {
				return nil, err
			}
			at := make([]float64, d.K*d.R)
			for j := range d.R {
				for k := range d.K {
					at[k*d.R+j] = d.a[j*d.K+k]
				}
			}
			bt, err := upload("embeddings.B", bd.role, d.K, d.R, at)
			if err != nil {
				return nil, err
			}
			a.embed = &loraLookup{Table: table, B: bt, R: d.R}
			if c.TieEmbeddings { // the table is the head too: PEFT's merge changes both
				A, err := upload("lm_head.A", RoleLMHead, d.R, d.K, d.a)
				if err != nil {
					return nil, err
				}
				a.head = &loraProduct{A: A, B: table, R: d.R}
			}
		case RoleLMHead:
			if a.head, err = product("lm_head", bd.role, d); err != nil {
				return nil, err
			}
		case RoleRouter:
			// The router's product runs inside Backend.MoE, with no room
			// for an update beside it.
			return nil, fmt.Errorf("module %s is a mixture of experts' router: an adapter on it merges at load only (LoadOptions.Adapters, mamba2 --adapter), not kept apart",
				strings.TrimSuffix(bd.names[0], ".weight"))
		case RoleInProj, RoleOutProj, RoleAttention, RoleMLP, RoleAdapter:
			w, ok := base[bd.dst]
			if !ok || *w == nil {
				return nil, fmt.Errorf("tensor %s: the model holds no such weight", bd.names[0])
			}
			p, err := product(bd.names[0], bd.role, d)
			if err != nil {
				return nil, err
			}
			a.prods[*w] = p
		default:
			return nil, fmt.Errorf("tensor %s (%s) takes no adapter", bd.names[0], bd.role)
		}
	}
	copy(a.fp[:], h.Sum(nil))
	ok = true
	return a, nil
}

// pairMatrices maps each matrix field of x (a Weights the bindings were
// made into, so the bindings point at its fields) to the same field of y,
// the model's loaded Weights, whose structure the same bindings built.
func pairMatrices(x, y *Weights) (map[*Tensor]*Tensor, error) {
	var px, py []*Tensor
	walkMatrices(x, func(t *Tensor) { px = append(px, t) })
	walkMatrices(y, func(t *Tensor) { py = append(py, t) })
	if len(px) != len(py) {
		return nil, fmt.Errorf("the model's weights have %d matrices where its config gives %d", len(py), len(px))
	}
	out := make(map[*Tensor]*Tensor, len(px))
	for i := range px {
		out[px[i]] = py[i]
	}
	return out, nil
}

// walkMatrices calls fn with every matrix field of w that an adapter may
// change, in an order fixed by w's structure.
func walkMatrices(w *Weights, fn func(*Tensor)) {
	fn(&w.Embed)
	fn(&w.LMHead)
	for i := range w.Layers {
		fn(&w.Layers[i].InProj)
		fn(&w.Layers[i].OutProj)
	}
	attn := func(a *Attention) {
		fn(&a.Q)
		fn(&a.K)
		fn(&a.V)
		fn(&a.O)
	}
	mlp := func(m *MLP) {
		fn(&m.Gate)
		fn(&m.Up)
		fn(&m.Down)
	}
	for _, sb := range w.Shared {
		attn(&sb.Attn)
		mlp(&sb.MLP)
	}
	for i := range w.Blocks {
		b := &w.Blocks[i]
		if b.Attn != nil {
			attn(b.Attn)
		}
		if b.MLP != nil {
			mlp(b.MLP)
		}
		if b.MoE != nil {
			fn(&b.MoE.Router)
		}
		fn(&b.Linear)
		for _, lr := range []*LowRank{&b.QA, &b.KA, &b.VA, &b.GateUpA} {
			fn(&lr.A)
			fn(&lr.B)
		}
	}
}

func (a *attached) free(b Backend) {
	for _, t := range a.tensors {
		b.Free(t)
	}
	a.tensors = nil
}

// UseAdapter makes row of the state run under the adapter attached as
// name from its next position on ("" for none: the base model, with what
// was merged at load). A row that has consumed positions under one
// adapter would continue under another, which no model computes, so a
// state's rows are best assigned before their first position (Generate
// and the Scheduler refuse a continued state of another adapter). The
// state holds the adapter until the row is given another or the state is
// closed; DetachAdapter refuses meanwhile.
func (s *State) UseAdapter(row int, name string) error {
	if s.closed {
		return errors.New("use adapter: the state is closed")
	}
	if row < 0 || row >= s.Batch {
		return fmt.Errorf("use adapter: row %d of a batch of %d", row, s.Batch)
	}
	a, err := s.m.lookupAdapter(name)
	if err != nil {
		return err
	}
	s.setRowAdapter(row, a)
	return nil
}

// setRowAdapter assigns a (nil for none) to row, counting its users.
func (s *State) setRowAdapter(row int, a *attached) {
	if s.lora == nil {
		if a == nil {
			return
		}
		s.lora = make([]*attached, s.Batch)
	}
	old := s.lora[row]
	if old == a {
		return
	}
	loraMu.Lock()
	if old != nil {
		old.users--
	}
	if a != nil {
		a.users++
	}
	loraMu.Unlock()
	s.lora[row] = a
	s.loraRuns = nil // worked out again at the next forward
}

// Adapter returns the name of the adapter row runs under ("" for none).
func (s *State) Adapter(row int) string {
	if row < 0 || row >= len(s.lora) || s.lora[row] == nil {
		return ""
	}
	return s.lora[row].name
}

// adapterKey identifies the arithmetic row runs under ("" for the base):
// the prefix cache keys its entries by it.
func (s *State) adapterKey(row int) string {
	if row < 0 || row >= len(s.lora) {
		return ""
	}
	return s.lora[row].key()
}

// releaseAdapters gives up the state's adapters (State.Close).
func (s *State) releaseAdapters() {
	for r := range s.lora {
		s.setRowAdapter(r, nil)
	}
}

// loraUse is one adapter a state's rows run under, and the runs of rows
// [start, start+n) that do not, whose share of it is zeroed.
type loraUse struct {
	a    *attached
	skip [][2]int
}

// uses returns the adapters the state's rows run under, worked out once
// per change of assignment.
func (s *State) uses() []loraUse {
	if s.lora == nil {
		return nil
	}
	if s.loraRuns != nil {
		return *s.loraRuns
	}
	var out []loraUse
	for r, a := range s.lora {
		if a == nil || slices.ContainsFunc(s.lora[:r], func(b *attached) bool { return b == a }) {
			continue
		}
		u := loraUse{a: a}
		for i := 0; i < s.Batch; {
			if s.lora[i] == a {
				i++
				continue
			}
			j := i
			for j < s.Batch && s.lora[j] != a {
				j++
			}
			u.skip = append(u.skip, [2]int{i, j - i})
			i = j
		}
		out = append(out, u)
	}
	s.loraRuns = &out
	return out
}

// loraBuf is an activation of the adapters', [B, L, R], made on first use
// and freed with the call size's scratch; zero is one never written.
func (f *pass) loraBuf(kind string, L, R int) Tensor {
	sc := f.sc
	if sc.more == nil {
		sc.more = map[string]Tensor{}
	}
	name := fmt.Sprintf("lora.%s.%d.%d", kind, L, R)
	t, ok := sc.more[name]
	if !ok {
		t = f.s.m.Backend.Alloc(F32, f.s.Batch, L, R)
		sc.more[name] = t
	}
	return t
}

// loraMid is the r-wide intermediate of an adapter's two products.
func (f *pass) loraMid(L, R int) Tensor { return f.loraBuf("mid", L, R) }

// loraMask zeroes the rows of mid ([B, L, R]) that do not run under u,
// by copying rows of a zero tensor over them, so the second product adds
// nothing to those rows.
func (f *pass) loraMask(u loraUse, mid Tensor, L, R int) {
	if len(u.skip) == 0 {
		return
	}
	zero := f.loraBuf("zero", L, R)
	for _, run := range u.skip {
		if err := CopyRows(f.s.m.Backend, mid, run[0], zero, run[0], run[1]); err != nil {
			panic(fmt.Sprintf("lora: %v", err)) // shapes made above; cannot happen
		}
	}
}

// loraEmbed adds the adapters' embedding updates to h (after Embed).
func (f *pass) loraEmbed() { f.loraEmbedInto(f.sc.h) }

// loraEmbedInto adds the adapters' embedding updates to h, a lookup
// E[ids] of this call's ids.
func (f *pass) loraEmbedInto(h Tensor) {
	b := f.s.m.Backend
	for _, u := range f.s.uses() {
		e := u.a.embed
		if e == nil {
			continue
		}
		mid := f.loraMid(f.L, e.R)
		b.Embed(mid, e.Table, f.ids) // Table[ids]
		f.loraMask(u, mid, f.L, e.R)
		b.MatMul(h, mid, e.B, nil, Product{Add: true}) // h += Table[ids]·Bᵀ
	}
}

// loraMat adds the adapters' updates of the base weight w to out, the
// product out (+)= x'·wᵀ that p describes having just run: L positions
// per row.
func (f *pass) loraMat(w, out, x Tensor, p Product, L int) {
	for _, u := range f.s.uses() {
		f.loraProduct(u, u.a.prods[w], out, x, p, L)
	}
}

// loraOn says whether an adapter in use changes the base weight w: the
// caller then runs what its product fuses after the output (in_proj's
// conv) on its own, once the updates are in.
func (f *pass) loraOn(w Tensor) bool {
	for _, u := range f.s.uses() {
		if u.a.prods[w] != nil {
			return true
		}
	}
	return false
}

// loraHead adds the adapters' head updates to the logits out, x and p
// being what the head's product read: L positions per row.
func (f *pass) loraHead(out, x Tensor, p Product, L int) {
	for _, u := range f.s.uses() {
		f.loraProduct(u, u.a.head, out, x, p, L)
	}
}

// loraProduct is out += B·(A·x') for the rows running under u.
func (f *pass) loraProduct(u loraUse, lp *loraProduct, out, x Tensor, p Product, L int) {
	if lp == nil {
		return
	}
	b := f.s.m.Backend
	mid := f.loraMid(L, lp.R)
	p.Add, p.Conv = false, nil
	b.MatMul(mid, x, lp.A, nil, p) // x'·Aᵀ, x' normed as the base product's
	f.loraMask(u, mid, L, lp.R)
	b.MatMul(out, mid, lp.B, nil, Product{Add: true})
}

// groupAdapters is the merge planner's core, shared by merges at load and
// attached adapters: it checks each adapter against the model (shapes by
// binding name, index their bindings) and returns, per binding index, the
// adapter modules that change it, in the order the adapters are given.
// refuse, when set, may refuse a binding an adapter would change (a merge
// refuses quantized tensors). With a tied head, lm_head's LoRA goes into
// the embedding, which is the head.
func groupAdapters(c Config, shapes map[string][]int, index map[string]int, ads []*Adapter, refuse func(ad *Adapter, i int) error) (map[int][]adapterPart, error) {
	if c.TieEmbeddings {
		e := c.embedBinding()
		shapes["lm_head.weight"] = shapes[e]
		index["lm_head.weight"] = index[e]
	}
	out := map[int][]adapterPart{}
	for _, ad := range ads {
		mods, err := ad.plan(c, shapes)
		if err != nil {
			return nil, fmt.Errorf("adapter %s: %w", ad.Name, err)
		}
		names := make([]string, 0, len(mods))
		for n := range mods {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			i := index[n]
			if refuse != nil {
				if err := refuse(ad, i); err != nil {
					return nil, err
				}
			}
			out[i] = append(out[i], adapterPart{ad, mods[n]})
		}
	}
	return out, nil
}

// embedBinding is the embedding's binding name (its PEFT module name
// with ".weight").
func (c Config) embedBinding() string {
	if c.Hybrid != nil {
		return "model.embed_tokens.weight"
	}
	return "backbone.embeddings.weight"
}

// continueUnder makes the state (a batch of one) run under the adapter
// attached as name: a state with no positions yet takes it; one with
// positions must have been made under it, since its memory is that
// model's.
func (s *State) continueUnder(name string) error {
	a, err := s.m.lookupAdapter(name)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	var cur *attached
	if s.lora != nil {
		cur = s.lora[0]
	}
	if cur == a {
		return nil
	}
	if s.Pos > 0 {
		return fmt.Errorf("generate: Options.State was made under %s, not %s: a state continues only under the adapter it was made with",
			adapterLabel(cur), adapterLabel(a))
	}
	s.setRowAdapter(0, a)
	return nil
}

// adapterLabel names an adapter, or the base model, for errors.
func adapterLabel(a *attached) string {
	if a == nil {
		return "the base model (no attached adapter)"
	}
	return fmt.Sprintf("adapter %q", a.name)
}

// hold counts one more user of a (nil for none) until the returned
// function is called: a queued request keeps its adapter attached.
func (a *attached) hold() (release func()) {
	if a == nil {
		return func() {}
	}
	loraMu.Lock()
	a.users++
	loraMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			loraMu.Lock()
			a.users--
			loraMu.Unlock()
		})
	}
}

// loraTrailer starts the adapters' part of a saved state (statefile.go).
const loraTrailer = "LORA"

// appendAdapters appends to a saved state what each row runs under, when
// any row runs under an attached adapter.
func (s *State) appendAdapters(out []byte) []byte {
	if !slices.ContainsFunc(s.lora, func(a *attached) bool { return a != nil }) {
		return out
	}
	out = append(out, loraTrailer...)
	for _, a := range s.lora {
		var fp [32]byte
		name := ""
		if a != nil {
			fp, name = a.fp, a.name
		}
		out = append(out, fp[:]...)
		out = binary.LittleEndian.AppendUint16(out, uint16(min(len(name), math.MaxUint16)))
		out = append(out, name[:min(len(name), math.MaxUint16)]...)
	}
	return out
}

// checkAdapters checks a saved state's adapters' part (empty for a base
// model's state) against what the state's rows run under now.
func (s *State) checkAdapters(t []byte) error {
	saved := make([]struct {
		fp   [32]byte
		name string
	}, s.Batch)
	if len(t) > 0 {
		t = t[len(loraTrailer):]
		for r := range saved {
			if len(t) < 34 {
				return errors.New("restore: the saved state's adapter list is cut short")
			}
			copy(saved[r].fp[:], t)
			n := int(binary.LittleEndian.Uint16(t[32:]))
			t = t[34:]
			if len(t) < n {
				return errors.New("restore: the saved state's adapter list is cut short")
			}
			saved[r].name, t = string(t[:n]), t[n:]
		}
		if len(t) != 0 {
			return fmt.Errorf("restore: %d bytes after the saved state's adapter list", len(t))
		}
	}
	for r, sv := range saved {
		var cur [32]byte
		var a *attached
		if r < len(s.lora) && s.lora[r] != nil {
			a = s.lora[r]
			cur = a.fp
		}
		if cur == sv.fp {
			continue
		}
		was := "the base model (no attached adapter)"
		if sv.fp != ([32]byte{}) {
			was = fmt.Sprintf("adapter %q", sv.name)
			if a != nil && a.name == sv.name {
				was += " with other weights"
			}
		}
		return fmt.Errorf("restore: row %d of the saved state was made under %s, but this state's row runs under %s: select the same adapter (State.UseAdapter) before restoring",
			r, was, adapterLabel(a))
	}
	return nil
}
