package pytorch

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// named is one entry of the state dict.
type named struct {
	name string
	t    *tensorVal
}

// holder is a dict that holds tensors directly.
type holder struct {
	path    string
	d       *pyDict
	tensors int
}

// stateDict finds the dict of name → tensor in the unpickled object: the
// object itself, or the one dict nested in it that holds every tensor.
func stateDict(root value) ([]named, error) {
	if _, ok := root.(*pyDict); !ok {
		return nil, fmt.Errorf("the checkpoint holds a %s, not a dict of tensors", kindOf(root))
	}
	w := walker{seen: map[any]bool{}}
	if err := w.walk(root); err != nil {
		return nil, err
	}
	switch {
	case w.total == 0:
		return nil, fmt.Errorf("the checkpoint holds no tensors")
	case len(w.holders) == 0:
		return nil, fmt.Errorf("the checkpoint's %d tensors are in lists or tuples (%s), not in a dict of name → tensor", w.total, w.stray)
	case len(w.holders) > 1:
		var paths []string
		for i, h := range w.holders {
			if i == 4 {
				paths = append(paths, "…")
				break
			}
			paths = append(paths, fmt.Sprintf("%s (%d)", where(h.path), h.tensors))
		}
		return nil, fmt.Errorf("the checkpoint's tensors are in %d different dicts: %s; expected one state dict", len(w.holders), strings.Join(paths, ", "))
	}
	h := w.holders[0]
	if h.tensors != w.total {
		return nil, fmt.Errorf("the state dict %s holds %d of the checkpoint's %d tensors; the others are in lists or tuples (%s)", where(h.path), h.tensors, w.total, w.stray)
	}
	out := make([]named, 0, h.tensors)
	seen := make(map[string]bool, h.tensors)
	for i, k := range h.d.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("the state dict %s has a key that is a %s (%s), not a string", where(h.path), kindOf(k), describe(k))
		}
		t, ok := h.d.vals[i].(*tensorVal)
		if !ok {
			return nil, fmt.Errorf("the state dict %s maps %s to a %s, not a tensor", where(h.path), strconv.Quote(show(name)), kindOf(h.d.vals[i]))
		}
		if seen[name] {
			return nil, fmt.Errorf("the state dict %s holds %s twice", where(h.path), strconv.Quote(show(name)))
		}
		seen[name] = true
		out = append(out, named{name, t})
	}
	return out, nil
}

func where(path string) string {
	if path == "" {
		return "at the top level"
	}
	return "at " + path
}

type walker struct {
	seen    map[any]bool
	holders []holder
	total   int
	stray   string  // where a tensor outside any dict was seen
	comps   []value // the keys and indexes leading to the container being walked
}

// path renders comps, only when a message needs it.
func (w *walker) path() string {
	var b strings.Builder
	for _, c := range w.comps {
		b.WriteString("[" + describe(c) + "]")
	}
	return b.String()
}

// walk visits each container once (the memo can share or even nest one in
// itself), at most maxNesting deep.
func (w *walker) walk(v value) error {
	switch v.(type) {
	case *pyDict, *pyList, *pyTuple, *pySet:
	default:
		return nil
	}
	if w.seen[v] {
		return nil
	}
	w.seen[v] = true
	if len(w.comps) >= maxNesting {
		return fmt.Errorf("the checkpoint's containers nest deeper than %d levels (%s)", maxNesting, show(w.path()))
	}
	var items []value
	switch x := v.(type) {
	case *pyDict:
		n := 0
		for i, val := range x.vals {
			if _, ok := val.(*tensorVal); ok {
				n++
				continue
			}
			w.comps = append(w.comps, x.keys[i])
			err := w.walk(val)
			w.comps = w.comps[:len(w.comps)-1]
			if err != nil {
				return err
			}
		}
		if n > 0 {
			h := holder{d: x, tensors: n}
			if len(w.holders) < 5 {
				h.path = w.path()
			}
			w.holders = append(w.holders, h)
			w.total += n
		}
		return nil
	case *pyList:
		items = x.items
	case *pyTuple:
		items = x.items
	case *pySet:
		items = x.items
	}
	for i, it := range items {
		if _, ok := it.(*tensorVal); ok {
			w.total++
			if w.stray == "" {
				w.comps = append(w.comps, int64(i))
				w.stray = "at " + w.path()
				w.comps = w.comps[:len(w.comps)-1]
			}
			continue
		}
		w.comps = append(w.comps, int64(i))
		err := w.walk(it)
		w.comps = w.comps[:len(w.comps)-1]
		if err != nil {
			return err
		}
	}
	return nil
}

// span is where a storage's bytes lie in the file.
type span struct{ off, n int64 }

// place checks each tensor against its storage and returns the result.
func place(ts []named, spans map[string]span) ([]Tensor, error) {
	out := make([]Tensor, 0, len(ts))
	for _, nt := range ts {
		t := nt.t
		q := strconv.Quote(show(nt.name))
		if t.noncontig {
			return nil, fmt.Errorf("tensor %s is not contiguous (shape %v, stride %v): save it with .contiguous()", q, t.shape, t.stride)
		}
		sp, ok := spans[t.st.info.key]
		if !ok {
			return nil, fmt.Errorf("tensor %s: storage %s was not located", q, strconv.Quote(show(t.st.info.key)))
		}
		base, n := sp.off, sp.n
		if t.st.viewLen >= 0 {
			if t.st.viewOff > n || t.st.viewLen > n-t.st.viewOff {
				return nil, fmt.Errorf("tensor %s: its storage view (%d bytes at %d) runs past the %d-byte storage %s", q, t.st.viewLen, t.st.viewOff, n, strconv.Quote(show(t.st.info.key)))
			}
			base, n = base+t.st.viewOff, t.st.viewLen
		}
		elem := int64(t.st.dtype.size)
		off, size := t.offset*elem, t.numel*elem // no overflow: checked when rebuilt
		if off > n || size > n-off {
			return nil, fmt.Errorf("tensor %s (%s %v at element %d) needs %d bytes but its storage %s holds %d", q, t.st.dtype.name, t.shape, t.offset, off+size, strconv.Quote(show(t.st.info.key)), n)
		}
		out = append(out, Tensor{Name: nt.name, DType: t.st.dtype.name, Shape: slices.Clone(t.shape), Offset: base + off, Size: size})
	}
	return out, nil
}

// storages turns persistent ids into storage references, one storageInfo
// per key.
type storages struct {
	byKey map[string]*storageInfo
	order []string
}

// load is the persistent loader: pid is ('storage', storage_type, key,
// location, numel) in a zip file, with a sixth item in a legacy one:
// None, or an old view (view_key, offset, size) in elements.
func (s *storages) load(pid value) (value, error) {
	t, ok := pid.(*pyTuple)
	if !ok || len(t.items) < 5 || len(t.items) > 6 {
		return nil, fmt.Errorf("a persistent id that is not a storage reference (%s)", kindOf(pid))
	}
	a := t.items
	if tag, _ := a[0].(string); tag != "storage" {
		return nil, fmt.Errorf("a persistent id of kind %s; only storages are understood", describe(a[0]))
	}
	g, ok := a[1].(*pyGlobal)
	if !ok || g.kind != gStorage {
		return nil, fmt.Errorf("a storage whose type is a %s", kindOf(a[1]))
	}
	key, ok := a[2].(string)
	if !ok {
		return nil, fmt.Errorf("a storage whose key is a %s", kindOf(a[2]))
	}
	if _, ok := a[3].(string); !ok {
		return nil, fmt.Errorf("storage %s: its location is a %s", strconv.Quote(show(key)), kindOf(a[3]))
	}
	if n, ok := a[4].(int64); !ok || n < 0 {
		return nil, fmt.Errorf("storage %s: bad element count (%s)", strconv.Quote(show(key)), describe(a[4]))
	}
	info := s.byKey[key]
	if info == nil {
		if len(s.byKey) >= maxTensors {
			return nil, fmt.Errorf("more than %d storages", maxTensors)
		}
		info = &storageInfo{key: key, dtype: g.dtype}
		s.byKey[key] = info
		s.order = append(s.order, key)
	}
	ref := &storageRef{info: info, dtype: g.dtype, viewLen: -1}
	if len(a) == 6 {
		switch v := a[5].(type) {
		case pyNone:
		case *pyTuple:
			if len(v.items) != 3 {
				return nil, fmt.Errorf("storage %s: a view with %d fields", strconv.Quote(show(key)), len(v.items))
			}
			off, ok1 := v.items[1].(int64)
			n, ok2 := v.items[2].(int64)
			elem := int64(g.dtype.size)
			if !ok1 || !ok2 || off < 0 || n < 0 || off > (1<<62)/elem || n > (1<<62)/elem {
				return nil, fmt.Errorf("storage %s: a bad view", strconv.Quote(show(key)))
			}
			ref.viewOff, ref.viewLen = off*elem, n*elem
		default:
			return nil, fmt.Errorf("storage %s: view metadata is a %s", strconv.Quote(show(key)), kindOf(a[5]))
		}
	}
	return ref, nil
}
