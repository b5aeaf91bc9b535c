package pytorch_test

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mamba2web/mamba2/loader/pytorch"
)

// pk assembles a pickle by hand.
type pk struct{ bytes.Buffer }

func newPickle() *pk {
	p := &pk{}
	p.op(0x80, 2)
	return p
}

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }

func (p *pk) str(s string) *pk {
	p.op('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *pk) int(n int) *pk {
	switch {
	case n >= 0 && n < 256:
		return p.op('K', byte(n))
	case n >= 0 && n < 65536:
		return p.op('M', byte(n), byte(n>>8))
	}
	p.op('J')
	binary.Write(p, binary.LittleEndian, int32(n))
	return p
}

func (p *pk) global(module, name string) *pk {
	p.op('c')
	p.WriteString(module + "\n" + name + "\n")
	return p
}

func (p *pk) ints(ns []int) *pk {
	p.op('(')
	for _, n := range ns {
		p.int(n)
	}
	return p.op('t')
}

// tensor pushes _rebuild_tensor_v2(storage, off, shape, stride, False, OrderedDict()).
func (p *pk) tensor(storageType, key string, numel, off int, shape, stride []int) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.op('(')
	p.op('(').str("storage").global("torch", storageType).str(key).str("cpu").int(numel).op('t', 'Q')
	p.int(off).ints(shape).ints(stride).op(0x89)
	p.global("collections", "OrderedDict").op(')', 'R')
	return p.op('t', 'R')
}

func (p *pk) bytes() []byte { return p.Bytes() }

// entry is one tensor of a hand-made state dict, on storage key.
type entry struct {
	name, storage, key string
	numel, off         int
	shape, stride      []int
}

func stateDictPickle(es ...entry) []byte {
	p := newPickle()
	p.op('}', '(')
	for _, e := range es {
		p.str(e.name).tensor(e.storage, e.key, e.numel, e.off, e.shape, e.stride)
	}
	return p.op('u', '.').bytes()
}

type zipEntry struct {
	name   string
	data   []byte
	method uint16
}

func makeZip(t *testing.T, es ...zipEntry) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, e := range es {
		f, err := w.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatal(err)
		}
		f.Write(e.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// torchZip lays a pickle and its storages out as torch.save does.
func torchZip(t *testing.T, pkl []byte, storages map[string][]byte) []byte {
	es := []zipEntry{{name: "archive/data.pkl", data: pkl}, {name: "archive/byteorder", data: []byte("little")}}
	for k, v := range storages {
		es = append(es, zipEntry{name: "archive/data/" + k, data: v})
	}
	return makeZip(t, es...)
}

var legacyMagicPickle = []byte{0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'}

// legacyFile lays out the legacy stream: storages[i] has counts[i]
// elements and is listed as keys[i].
func legacyFile(statePkl []byte, littleEndian bool, keys []string, counts []uint64, storages [][]byte) []byte {
	var b bytes.Buffer
	b.Write(legacyMagicPickle)
	b.Write(newPickle().op('M', 0xe9, 0x03, '.').bytes())
	le := byte(0x88)
	if !littleEndian {
		le = 0x89
	}
	b.Write(newPickle().op('}', '(').str("protocol_version").op('M', 0xe9, 0x03).str("little_endian").op(le, 'u', '.').bytes())
	b.Write(statePkl)
	kp := newPickle().op(']', '(')
	for _, k := range keys {
		kp.str(k)
	}
	b.Write(kp.op('e', '.').bytes())
	for i := range keys {
		binary.Write(&b, binary.LittleEndian, counts[i])
		b.Write(storages[i])
	}
	return b.Bytes()
}

func TestHostile(t *testing.T) {
	f32x4 := entry{"w", "FloatStorage", "0", 4, 0, []int{4}, []int{1}}
	good := stateDictPickle(f32x4)
	store16 := map[string][]byte{"0": make([]byte, 16)}
	inDict := func(body func(p *pk)) []byte {
		p := newPickle().op('}').str("k")
		body(p)
		return p.op('s', '.').bytes()
	}
	deepLists := inDict(func(p *pk) {
		for range 100 {
			p.op(']')
		}
		for range 99 {
			p.op('a')
		}
	})
	marks := newPickle()
	for range 300 {
		marks.op('(')
	}
	hugeShape := entry{"w", "FloatStorage", "0", 4, 0, []int{1 << 30, 1 << 30, 1 << 30}, []int{0, 0, 1}}
	nineDims := entry{"w", "FloatStorage", "0", 4, 0, []int{1, 1, 1, 1, 1, 1, 1, 1, 4}, []int{4, 4, 4, 4, 4, 4, 4, 4, 1}}
	withMetadata := func() []byte {
		// What nn.Module.state_dict() pickles: an OrderedDict built by
		// REDUCE, its items, then BUILD with its _metadata attribute.
		p := newPickle().global("collections", "OrderedDict").op(')', 'R', '(')
		p.str("w").tensor("FloatStorage", "0", 4, 0, []int{4}, []int{1}).op('u')
		p.op('}').str("_metadata").global("collections", "OrderedDict").op(')', 'R').str("").op('}').str("version").int(1).op('s', 's', 's', 'b', '.')
		return p.bytes()
	}()
	nested := func(outer string) []byte {
		p := newPickle().op('}', '(').str("epoch").int(3).str(outer).op('}', '(')
		p.str("w").tensor("FloatStorage", "0", 4, 0, []int{4}, []int{1})
		return p.op('u', 'u', '.').bytes()
	}
	twoDicts := func() []byte {
		p := newPickle().op('}', '(').str("m1").op('}').str("w").tensor("FloatStorage", "0", 4, 0, []int{4}, []int{1}).op('s')
		p.str("m2").op('}').str("v").tensor("FloatStorage", "0", 4, 0, []int{4}, []int{1}).op('s')
		return p.op('u', '.').bytes()
	}()
	legacyEntry := entry{"w", "FloatStorage", "k1", 4, 0, []int{4}, []int{1}}
	legacyPickle := func(es ...entry) []byte {
		// Legacy persistent ids have a sixth item: None.
		return bytes.Replace(stateDictPickle(es...), []byte{'K', 4, 't', 'Q'}, []byte{'K', 4, 'N', 't', 'Q'}, -1)
	}
	for _, tc := range []struct {
		name string
		file []byte
		want string // a substring of the error, or "" for success
	}{
		{"valid", torchZip(t, good, store16), ""},
		{"state_dict with _metadata", torchZip(t, withMetadata, store16), ""},
		{"nested under model", torchZip(t, nested("model"), store16), ""},
		{"nested under state_dict", torchZip(t, nested("state_dict"), store16), ""},
		{"valid legacy", legacyFile(legacyPickle(legacyEntry), true, []string{"k1"}, []uint64{4}, [][]byte{make([]byte, 16)}), ""},

		{"GLOBAL os.system + REDUCE", torchZip(t, newPickle().global("os", "system").str("echo hi").op(0x85, 'R', '.').bytes(), nil),
			"the pickle asks for the global os.system, which a state dict never needs; not loading it"},
		{"STACK_GLOBAL builtins.eval", torchZip(t, (&pk{}).op(0x80, 4).str("builtins").str("eval").op(0x93).str("1").op(0x85, 'R', '.').bytes(), nil),
			"global builtins.eval"},
		{"__builtin__.getattr", torchZip(t, newPickle().global("__builtin__", "getattr").op('.').bytes(), nil), "global __builtin__.getattr"},
		{"subprocess.Popen in a tensor", torchZip(t, inDict(func(p *pk) { p.global("subprocess", "Popen") }), nil), "global subprocess.Popen"},
		{"torch global not whitelisted", torchZip(t, newPickle().global("torch", "load").op('.').bytes(), nil), "global torch.load"},
		{"unknown opcode", torchZip(t, newPickle().op(0xff).bytes(), nil), "unknown pickle opcode 0xff"},
		{"INST", torchZip(t, newPickle().op('i').bytes(), nil), "INST"},
		{"memo out of range", torchZip(t, newPickle().op('h', 5, '.').bytes(), nil), "memo entry 5"},
		{"enormous BINUNICODE", torchZip(t, newPickle().op('X', 0xff, 0xff, 0xff, 0x7f).bytes(), nil), "exceeds the"},
		{"BINUNICODE past the end", torchZip(t, newPickle().op('X', 0xff, 0xff, 0, 0).bytes(), nil), "ends unexpectedly"},
		{"enormous BINUNICODE8", torchZip(t, newPickle().op(0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80).bytes(), nil), "exceeds the"},
		{"MARKs too deep", torchZip(t, marks.bytes(), nil), "MARKs nest deeper"},
		{"lists too deep", torchZip(t, deepLists, nil), "nest deeper than"},
		{"LONG4 huge", torchZip(t, newPickle().op(0x8b, 0xff, 0xff, 0xff, 0x7f).bytes(), nil), "integer of"},
		{"LONG1 as a size", torchZip(t, bytes.Replace(good, []byte{'(', 'K', 4, 't'}, []byte{'(', 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 't'}, 1), store16), "too large for 64 bits"},
		{"self-referencing list", torchZip(t, inDict(func(p *pk) { p.op(']', 'q', 0, 'h', 0, 'a') }), nil), "no tensors"},
		{"empty pop", torchZip(t, newPickle().op('0').bytes(), nil), "empty stack"},
		{"STOP with leftovers", torchZip(t, newPickle().op('N', 'N', '.').bytes(), nil), "leaves"},
		{"not a dict", torchZip(t, newPickle().op(']', '.').bytes(), nil), "holds a list"},
		{"two state dicts", torchZip(t, twoDicts, store16), "2 different dicts"},
		{"tensor beyond storage", torchZip(t, good, map[string][]byte{"0": make([]byte, 8)}), "needs 16 bytes but its storage \"0\" holds 8"},
		{"storage offset beyond storage", torchZip(t, stateDictPickle(entry{"w", "FloatStorage", "0", 4, 2, []int{4}, []int{1}}), store16), "needs 24 bytes"},
		{"huge shape", torchZip(t, stateDictPickle(hugeShape), store16), "overflows"},
		{"nine dimensions", torchZip(t, stateDictPickle(nineDims), store16), "9 dimensions"},
		{"negative size", torchZip(t, stateDictPickle(entry{"w", "FloatStorage", "0", 4, 0, []int{-1}, []int{1}}), store16), "negative size"},
		{"unknown storage type", torchZip(t, stateDictPickle(entry{"w", "ComplexFloatStorage", "0", 4, 0, []int{4}, []int{1}}), store16), "global torch.ComplexFloatStorage"},
		{"strided", torchZip(t, stateDictPickle(entry{"w", "FloatStorage", "0", 4, 0, []int{2}, []int{2}}), store16), "\"w\" is not contiguous"},
		{"storage key with no entry", torchZip(t, good, map[string][]byte{"1": make([]byte, 16)}), "storage \"0\" has no \"archive/data/0\" entry"},
		{"deflated storage", makeZip(t, zipEntry{name: "archive/data.pkl", data: good}, zipEntry{name: "archive/data/0", data: make([]byte, 16), method: zip.Deflate}), "compressed"},
		{"byteorder big", makeZip(t, zipEntry{name: "archive/data.pkl", data: good}, zipEntry{name: "archive/byteorder", data: []byte("big")}, zipEntry{name: "archive/data/0", data: make([]byte, 16)}), "byte order \"big\""},
		{"duplicate entry", makeZip(t, zipEntry{name: "archive/data.pkl", data: good}, zipEntry{name: "archive/data/0", data: make([]byte, 16)}, zipEntry{name: "archive/data/0", data: make([]byte, 16)}), "twice"},
		{"zip without data.pkl", makeZip(t, zipEntry{name: "a/b.txt", data: []byte("x")}), "not a torch.save archive"},
		{"duplicate name", torchZip(t, stateDictPickle(f32x4, f32x4), store16), "holds \"w\" twice"},
		{"noncontig_zip.bin", readFixture(t, "noncontig_zip.bin"), "tensor \"t\" is not contiguous"},
		{"legacy big-endian", legacyFile(legacyPickle(legacyEntry), false, []string{"k1"}, []uint64{4}, [][]byte{make([]byte, 16)}), "big-endian"},
		{"legacy count past the end", legacyFile(legacyPickle(legacyEntry), true, []string{"k1"}, []uint64{1 << 61}, [][]byte{make([]byte, 16)}), "past the end"},
		{"legacy unused key", legacyFile(legacyPickle(legacyEntry), true, []string{"zz", "k1"}, []uint64{4, 4}, [][]byte{make([]byte, 16), make([]byte, 16)}), "no storage reference in the pickle names it"},
		{"legacy missing key", legacyFile(legacyPickle(legacyEntry), true, nil, nil, nil), "not located"},
		{"legacy storage too small", legacyFile(legacyPickle(legacyEntry), true, []string{"k1"}, []uint64{2}, [][]byte{make([]byte, 8)}), "needs 16 bytes"},
		{"legacy os.system in sys info", append(append([]byte{}, legacyMagicPickle...), newPickle().global("os", "system").op('.').bytes()...), "global os.system"},
		{"empty file", nil, "too short"},
		{"random bytes", []byte("hello, this is not a checkpoint"), "not a PyTorch checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := read(tc.file)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(ts) != 1 || ts[0].Name != "w" || ts[0].Size != 16 {
					t.Fatalf("got %+v, want one tensor w of 16 bytes", ts)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted (%d tensors); want an error containing %q", len(ts), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q; want it to contain %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestSharedDAG: a pickle that shares containers exponentially (each level
// a tuple of the previous one twice) is walked in linear time.
func TestSharedDAG(t *testing.T) {
	p := newPickle().op('}').str("k").op(')')
	for range 70 {
		p.op('2', 0x86) // (x, x)
	}
	b := torchZip(t, p.op('s', '.').bytes(), nil)
	if _, err := read(b); err == nil || !strings.Contains(err.Error(), "nest deeper") {
		t.Fatalf("got %v", err)
	}
	p = newPickle().op('}').str("k").op(')')
	for range 40 {
		p.op('2', 0x86)
	}
	b = torchZip(t, p.op('s', '.').bytes(), nil)
	if _, err := read(b); err == nil || !strings.Contains(err.Error(), "no tensors") {
		t.Fatalf("got %v", err)
	}
}

// FuzzRead: whatever Read accepts must be within the file and consistent.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"small_zip.bin", "small_legacy.bin", "noncontig_zip.bin", "tiny_ss_legacy.bin", "tiny_hf_zip.bin"} {
		f.Add(readFixture(f, name))
	}
	f.Add(legacyFile(stateDictPickle(entry{"w", "FloatStorage", "k1", 4, 0, []int{4}, []int{1}}), true, []string{"k1"}, []uint64{4}, [][]byte{make([]byte, 16)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := read(b)
		if err != nil {
			return
		}
		checkInvariants(t, ts, int64(len(b)))
	})
}

// FuzzPickle fuzzes the unpickler through a valid zip (whose CRC would
// otherwise defeat most mutations of the pickle).
func FuzzPickle(f *testing.F) {
	for _, name := range []string{"small_zip.bin", "tiny_hf_zip.bin"} {
		zr, err := zip.NewReader(bytes.NewReader(readFixture(f, name)), int64(len(readFixture(f, name))))
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range zr.File {
			if strings.HasSuffix(e.Name, "/data.pkl") {
				rc, _ := e.Open()
				var b bytes.Buffer
				b.ReadFrom(rc)
				f.Add(b.Bytes())
			}
		}
	}
	stores := map[string][]byte{}
	for i := range 20 {
		stores[strconv.Itoa(i)] = make([]byte, 4<<10)
	}
	f.Fuzz(func(t *testing.T, pkl []byte) {
		zb := torchZipT(pkl, stores)
		ts, err := read(zb)
		if err != nil {
			return
		}
		checkInvariants(t, ts, int64(len(zb)))
	})
}

func torchZipT(pkl []byte, storages map[string][]byte) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, _ := w.CreateHeader(&zip.FileHeader{Name: "archive/data.pkl", Method: zip.Store})
	f.Write(pkl)
	for k, v := range storages {
		f, _ := w.CreateHeader(&zip.FileHeader{Name: "archive/data/" + k, Method: zip.Store})
		f.Write(v)
	}
	w.Close()
	return buf.Bytes()
}

func checkInvariants(t *testing.T, ts []pytorch.Tensor, size int64) {
	names := map[string]bool{}
	for _, tn := range ts {
		if names[tn.Name] {
			t.Fatalf("%q listed twice", tn.Name)
		}
		names[tn.Name] = true
		es := int64(pytorch.ElementSize(tn.DType))
		if es == 0 {
			t.Fatalf("%q: unknown dtype %q", tn.Name, tn.DType)
		}
		if len(tn.Shape) > 8 {
			t.Fatalf("%q: %d dimensions", tn.Name, len(tn.Shape))
		}
		n := int64(1)
		for _, d := range tn.Shape {
			if d < 0 {
				t.Fatalf("%q: shape %v", tn.Name, tn.Shape)
			}
			n *= int64(d)
		}
		if tn.Size != n*es {
			t.Fatalf("%q: size %d for shape %v of %s", tn.Name, tn.Size, tn.Shape, tn.DType)
		}
		if tn.Offset < 0 || tn.Size < 0 || tn.Offset > size || tn.Size > size-tn.Offset {
			t.Fatalf("%q: %d bytes at %d in a %d-byte file", tn.Name, tn.Size, tn.Offset, size)
		}
	}
}

// proto4 writes what pickle protocol 4 emits for a one-tensor state dict:
// FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL.
func proto4() []byte {
	var body pk
	sbu := func(s string) { body.op(0x8c, byte(len(s))); body.WriteString(s); body.op(0x94) }
	glob := func(m, n string) { sbu(m); sbu(n); body.op(0x93, 0x94) }
	body.op('}', 0x94, '(')
	sbu("w")
	glob("torch._utils", "_rebuild_tensor_v2")
	body.op('(', '(')
	sbu("storage")
	glob("torch", "FloatStorage")
	sbu("0")
	sbu("cpu")
	body.op('K', 4, 't', 0x94, 'Q', 'K', 0, 'K', 4, 0x85, 0x94, 'K', 1, 0x85, 0x94, 0x89)
	glob("collections", "OrderedDict")
	body.op(')', 'R', 0x94, 't', 0x94, 'R', 0x94, 'u', '.')
	p := (&pk{}).op(0x80, 4, 0x95)
	binary.Write(p, binary.LittleEndian, uint64(body.Len()))
	p.Write(body.Bytes())
	return p.bytes()
}

func TestProtocol4(t *testing.T) {
	store16 := map[string][]byte{"0": make([]byte, 16)}
	magic4 := append([]byte{0x80, 4, 0x95, 12, 0, 0, 0, 0, 0, 0, 0}, legacyMagicPickle[2:]...)
	legacy := legacyFile(bytes.Replace(proto4(), []byte{'K', 4, 't'}, []byte{'K', 4, 'N', 't'}, 1), true, []string{"0"}, []uint64{4}, [][]byte{make([]byte, 16)})
	legacy = append(magic4, legacy[len(legacyMagicPickle):]...)
	for name, b := range map[string][]byte{"zip": torchZip(t, proto4(), store16), "legacy": legacy} {
		ts, err := read(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(ts) != 1 || ts[0].Name != "w" || ts[0].DType != "F32" || ts[0].Size != 16 {
			t.Fatalf("%s: got %+v", name, ts)
		}
	}
}

type failingReader struct{}

var errNetwork = errors.New("connection reset")

func (failingReader) ReadAt(p []byte, off int64) (int, error) { return 0, errNetwork }

func TestReaderErrorWrapped(t *testing.T) {
	if _, err := pytorch.Read(failingReader{}, 1000); !errors.Is(err, errNetwork) {
		t.Fatalf("got %v, want it to wrap %v", err, errNetwork)
	}
	// Fail after the head, inside the zip directory and the pickle.
	b := readFixture(t, "small_zip.bin")
	for _, after := range []int{1, 2, 3, 5, 8} {
		r := &failAfter{r: bytes.NewReader(b), n: after}
		if _, err := pytorch.Read(r, int64(len(b))); !errors.Is(err, errNetwork) {
			t.Errorf("failing after %d reads: got %v", after, err)
		}
	}
}

type failAfter struct {
	r  *bytes.Reader
	mu sync.Mutex
	n  int
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.n--
	fail := f.n < 0
	f.mu.Unlock()
	if fail {
		return 0, errNetwork
	}
	return f.r.ReadAt(p, off)
}
