package pytorch

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The values the restricted unpickler builds. A value is one of:
// pyNone, bool, int64, *bigInt, float64, string, pyBytes, *pyList, *pyTuple,
// *pyDict, *pySet, *pyGlobal, *storageRef, *tensorVal.
type value = any

type pyNone struct{}

// bigInt is an integer too large for an int64 (its little-endian two's
// complement bytes). It can be compared, never used as a number.
type bigInt struct{ b []byte }

type pyBytes string

type pyList struct{ items []value }

type pyTuple struct{ items []value }

type pySet struct{ items []value }

// pyDict keeps its entries in insertion order; a key set twice keeps its
// first position and its last value, as in Python.
type pyDict struct {
	keys, vals []value
}

// pyGlobal is a whitelisted global: a constructor applied symbolically, or
// a storage type.
type pyGlobal struct {
	module, name string
	kind         globalKind
	dtype        dtype // for kind gStorage
}

type globalKind int

const (
	gOrderedDict globalKind = iota + 1
	gRebuildTensorV2
	gRebuildTensor
	gRebuildParameter
	gRebuildParameterWithState
	gStorage
)

type dtype struct {
	name string
	size int
}

// storageTypes maps torch's storage classes to element types.
var storageTypes = map[string]dtype{
	"FloatStorage":    {"F32", 4},
	"HalfStorage":     {"F16", 2},
	"BFloat16Storage": {"BF16", 2},
	"DoubleStorage":   {"F64", 8},
	"LongStorage":     {"I64", 8},
	"IntStorage":      {"I32", 4},
	"ShortStorage":    {"I16", 2},
	"CharStorage":     {"I8", 1},
	"ByteStorage":     {"U8", 1},
	"BoolStorage":     {"BOOL", 1},
	"UntypedStorage":  {"U8", 1},
}

// lookupGlobal returns the whitelisted global module.name, or nil.
func lookupGlobal(module, name string) *pyGlobal {
	g := &pyGlobal{module: module, name: name}
	switch module + "." + name {
	case "collections.OrderedDict":
		g.kind = gOrderedDict
	case "torch._utils._rebuild_tensor_v2":
		g.kind = gRebuildTensorV2
	case "torch._utils._rebuild_tensor":
		g.kind = gRebuildTensor
	case "torch._utils._rebuild_parameter":
		g.kind = gRebuildParameter
	case "torch._utils._rebuild_parameter_with_state":
		g.kind = gRebuildParameterWithState
	case "torch.storage.UntypedStorage":
		g.kind, g.dtype = gStorage, storageTypes["UntypedStorage"]
	default:
		d, ok := storageTypes[name]
		if module != "torch" || !ok {
			return nil
		}
		g.kind, g.dtype = gStorage, d
	}
	return g
}

// storageInfo is one storage of the file, shared by all tensors on it.
type storageInfo struct {
	key   string
	dtype dtype // of its first reference: a legacy file counts its elements in it
}

// storageRef is a persistent id resolved: a storage (or, in old legacy
// files, a view of one: viewLen >= 0 bytes from viewOff) seen as dtype.
type storageRef struct {
	info             *storageInfo
	dtype            dtype
	viewOff, viewLen int64
}

// tensorVal is a tensor rebuilt symbolically: shape and placement, checked
// against the storage once its bytes are located.
type tensorVal struct {
	st        *storageRef
	offset    int64 // in elements, from the storage (view) start
	shape     []int
	stride    []int64
	numel     int64
	noncontig bool
}

// The pickle opcodes (Python's Lib/pickletools.py documents them).
const (
	opMARK            = '('
	opSTOP            = '.'
	opPOP             = '0'
	opPOP_MARK        = '1'
	opDUP             = '2'
	opFLOAT           = 'F'
	opINT             = 'I'
	opBININT          = 'J'
	opBININT1         = 'K'
	opLONG            = 'L'
	opBININT2         = 'M'
	opNONE            = 'N'
	opPERSID          = 'P'
	opBINPERSID       = 'Q'
	opREDUCE          = 'R'
	opSTRING          = 'S'
	opBINSTRING       = 'T'
	opSHORT_BINSTRING = 'U'
	opUNICODE         = 'V'
	opBINUNICODE      = 'X'
	opAPPEND          = 'a'
	opBUILD           = 'b'
	opGLOBAL          = 'c'
	opDICT            = 'd'
	opEMPTY_DICT      = '}'
	opAPPENDS         = 'e'
	opGET             = 'g'
	opBINGET          = 'h'
	opINST            = 'i'
	opLONG_BINGET     = 'j'
	opLIST            = 'l'
	opEMPTY_LIST      = ']'
	opOBJ             = 'o'
	opPUT             = 'p'
	opBINPUT          = 'q'
	opLONG_BINPUT     = 'r'
	opSETITEM         = 's'
	opTUPLE           = 't'
	opEMPTY_TUPLE     = ')'
	opSETITEMS        = 'u'
	opBINFLOAT        = 'G'
	// protocol 2
	opPROTO    = 0x80
	opNEWOBJ   = 0x81
	opEXT1     = 0x82
	opEXT2     = 0x83
	opEXT4     = 0x84
	opTUPLE1   = 0x85
	opTUPLE2   = 0x86
	opTUPLE3   = 0x87
	opNEWTRUE  = 0x88
	opNEWFALSE = 0x89
	opLONG1    = 0x8a
	opLONG4    = 0x8b
	// protocol 3
	opBINBYTES       = 'B'
	opSHORT_BINBYTES = 'C'
	// protocol 4
	opSHORT_BINUNICODE = 0x8c
	opBINUNICODE8      = 0x8d
	opBINBYTES8        = 0x8e
	opEMPTY_SET        = 0x8f
	opADDITEMS         = 0x90
	opFROZENSET        = 0x91
	opNEWOBJ_EX        = 0x92
	opSTACK_GLOBAL     = 0x93
	opMEMOIZE          = 0x94
	opFRAME            = 0x95
	// protocol 5
	opBYTEARRAY8      = 0x96
	opNEXT_BUFFER     = 0x97
	opREADONLY_BUFFER = 0x98
)

// refused names the opcodes that exist but that a state dict never needs,
// with the reason.
var refused = map[byte]string{
	opPERSID:          "PERSID (text persistent id; torch writes BINPERSID)",
	opSTRING:          "STRING (protocol 0 quoted string)",
	opUNICODE:         "UNICODE (protocol 0 escaped string)",
	opINST:            "INST (instantiates a class)",
	opOBJ:             "OBJ (instantiates a class)",
	opEXT1:            "EXT1 (extension registry)",
	opEXT2:            "EXT2 (extension registry)",
	opEXT4:            "EXT4 (extension registry)",
	opNEWOBJ_EX:       "NEWOBJ_EX (instantiates a class)",
	opNEXT_BUFFER:     "NEXT_BUFFER (out-of-band buffer)",
	opREADONLY_BUFFER: "READONLY_BUFFER (out-of-band buffer)",
}

// persistentLoader resolves a persistent id (torch's storage references).
type persistentLoader func(pid value) (value, error)

// unpickler runs one pickle. It never executes anything: the only callables
// are the whitelisted globals, applied symbolically.
type unpickler struct {
	src     *source
	stack   []value
	marks   []int
	memo    map[uint64]value
	persist persistentLoader
	items   *int // container elements made, shared by the pickles of a file
	tensors *int // tensors rebuilt, shared likewise
	opAt    int64
}

func newUnpickler(src *source, persist persistentLoader, items, tensors *int) *unpickler {
	return &unpickler{src: src, memo: map[uint64]value{}, persist: persist, items: items, tensors: tensors}
}

func (u *unpickler) errorf(format string, args ...any) error {
	return fmt.Errorf("%s, byte %d: %s", u.src.what, u.opAt, fmt.Sprintf(format, args...))
}

func (u *unpickler) push(v value) error {
	if len(u.stack) >= maxStack {
		return u.errorf("the stack grows past %d entries", maxStack)
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (value, error) {
	floor := 0
	if len(u.marks) > 0 {
		floor = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= floor {
		return nil, u.errorf("pops an empty stack")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (value, error) {
	floor := 0
	if len(u.marks) > 0 {
		floor = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= floor {
		return nil, u.errorf("reads an empty stack")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark removes and returns the values above the last MARK.
func (u *unpickler) popMark() ([]value, error) {
	if len(u.marks) == 0 {
		return nil, u.errorf("needs a MARK and there is none")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	vs := append([]value(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return vs, nil
}

// grow accounts for n more container elements.
func (u *unpickler) grow(n int) error {
	*u.items += n
	if *u.items > maxItems {
		return u.errorf("containers hold more than %d elements in all", maxItems)
	}
	return nil
}

func (u *unpickler) tuple(vs []value) (value, error) {
	if err := u.grow(len(vs)); err != nil {
		return nil, err
	}
	return &pyTuple{items: vs}, nil
}

func (u *unpickler) memoPut(i uint64, v value) error {
	if _, ok := u.memo[i]; !ok && len(u.memo) >= maxMemo {
		return u.errorf("the memo grows past %d entries", maxMemo)
	}
	u.memo[i] = v
	return nil
}

func (u *unpickler) memoGet(i uint64) (value, error) {
	v, ok := u.memo[i]
	if !ok {
		return nil, u.errorf("refers to memo entry %d, which was never stored", i)
	}
	return v, nil
}

// str reads an n-byte UTF-8 string.
func (u *unpickler) str(n uint64) (string, error) {
	if n > maxString {
		return "", u.errorf("a string of %d bytes exceeds the %d-byte limit", n, maxString)
	}
	b, err := u.src.bytes(int64(n))
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", u.errorf("a string is not valid UTF-8")
	}
	return string(b), nil
}

func (u *unpickler) rawBytes(n uint64) (pyBytes, error) {
	if n > maxString {
		return "", u.errorf("a bytes object of %d bytes exceeds the %d-byte limit", n, maxString)
	}
	b, err := u.src.bytes(int64(n))
	if err != nil {
		return "", err
	}
	return pyBytes(b), nil
}

func (u *unpickler) uint(n int64) (uint64, error) {
	b, err := u.src.bytes(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// long decodes a little-endian two's complement integer.
func long(b []byte) value {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) > 8 {
		// It fits in an int64 only if the extra bytes are sign extension.
		ext := byte(0)
		if b[len(b)-1]&0x80 != 0 {
			ext = 0xff
		}
		fits := b[7]&0x80 == ext&0x80
		for _, c := range b[8:] {
			fits = fits && c == ext
		}
		if !fits {
			return &bigInt{b: append([]byte(nil), b...)}
		}
		b = b[:8]
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if shift := 64 - 8*uint(len(b)); shift > 0 {
		return int64(v<<shift) >> shift
	}
	return int64(v)
}

// show quotes a name from the file for an error message.
func show(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == utf8.RuneError {
			return strconv.Quote(s)
		}
	}
	return s
}

func (u *unpickler) global(module, name string) (value, error) {
	g := lookupGlobal(module, name)
	if g == nil {
		return nil, fmt.Errorf("the pickle asks for the global %s.%s, which a state dict never needs; not loading it", show(module), show(name))
	}
	return g, nil
}

// run executes the pickle up to its STOP and returns the value it leaves.
func (u *unpickler) run() (value, error) {
	for {
		u.opAt = u.src.pos
		op, err := u.src.byte()
		if err != nil {
			return nil, err
		}
		switch op {
		case opSTOP:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			if len(u.stack) != 0 || len(u.marks) != 0 {
				return nil, u.errorf("STOP leaves %d values and %d marks behind", len(u.stack), len(u.marks))
			}
			return v, nil
		case opPROTO:
			p, err := u.src.byte()
			if err != nil {
				return nil, err
			}
			if p > 5 {
				return nil, u.errorf("pickle protocol %d is not supported (at most 5)", p)
			}
		case opFRAME:
			n, err := u.uint(8)
			if err != nil {
				return nil, err
			}
			if n > uint64(u.src.limit-u.src.pos) {
				return nil, u.errorf("a FRAME of %d bytes runs past the end", n)
			}
		case opMARK:
			if len(u.marks) >= maxMarks {
				return nil, u.errorf("MARKs nest deeper than %d", maxMarks)
			}
			u.marks = append(u.marks, len(u.stack))
		case opPOP:
			if len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
				// Popping a MARK itself, as CPython allows.
				u.marks = u.marks[:len(u.marks)-1]
			} else if _, err := u.pop(); err != nil {
				return nil, err
			}
		case opPOP_MARK:
			if _, err := u.popMark(); err != nil {
				return nil, err
			}
		case opDUP:
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			if err := u.push(v); err != nil {
				return nil, err
			}
		default:
			v, err := u.simple(op)
			if err != nil {
				return nil, err
			}
			if v != nil {
				if err := u.push(v); err != nil {
					return nil, err
				}
			}
		}
	}
}

// simple runs one opcode other than the stack-shape ones above and returns
// what it pushes, or nil if it pushes nothing.
func (u *unpickler) simple(op byte) (value, error) {
	switch op {
	case opNONE:
		return pyNone{}, nil
	case opNEWTRUE:
		return true, nil
	case opNEWFALSE:
		return false, nil
	case opBININT:
		v, err := u.uint(4)
		return int64(int32(uint32(v))), err
	case opBININT1:
		v, err := u.uint(1)
		return int64(v), err
	case opBININT2:
		v, err := u.uint(2)
		return int64(v), err
	case opLONG1, opLONG4:
		w := int64(1)
		if op == opLONG4 {
			w = 4
		}
		n, err := u.uint(w)
		if err != nil {
			return nil, err
		}
		if n > maxIntBytes {
			return nil, u.errorf("an integer of %d bytes is larger than any a state dict holds (limit %d)", n, maxIntBytes)
		}
		b, err := u.src.bytes(int64(n))
		if err != nil {
			return nil, err
		}
		return long(b), nil
	case opINT, opLONG:
		line, err := u.src.line()
		if err != nil {
			return nil, err
		}
		s := string(line)
		if op == opINT && (s == "00" || s == "01") {
			return s == "01", nil
		}
		if op == opLONG {
			s = strings.TrimSuffix(s, "L")
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, u.errorf("bad text integer %s", strconv.Quote(string(line)))
		}
		return v, nil
	case opFLOAT:
		line, err := u.src.line()
		if err != nil {
			return nil, err
		}
		v, err := strconv.ParseFloat(string(line), 64)
		if err != nil {
			return nil, u.errorf("bad text float %s", strconv.Quote(string(line)))
		}
		return v, nil
	case opBINFLOAT:
		b, err := u.src.bytes(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case opSHORT_BINUNICODE, opBINUNICODE, opBINUNICODE8:
		w := map[byte]int64{opSHORT_BINUNICODE: 1, opBINUNICODE: 4, opBINUNICODE8: 8}[op]
		n, err := u.uint(w)
		if err != nil {
			return nil, err
		}
		return u.str(n)
	case opSHORT_BINSTRING, opBINSTRING:
		// Python 2 byte strings; torch's names are ASCII.
		w := int64(1)
		if op == opBINSTRING {
			w = 4
		}
		n, err := u.uint(w)
		if err != nil {
			return nil, err
		}
		return u.str(n)
	case opSHORT_BINBYTES, opBINBYTES, opBINBYTES8, opBYTEARRAY8:
		w := map[byte]int64{opSHORT_BINBYTES: 1, opBINBYTES: 4, opBINBYTES8: 8, opBYTEARRAY8: 8}[op]
		n, err := u.uint(w)
		if err != nil {
			return nil, err
		}
		return u.rawBytes(n)
	case opEMPTY_TUPLE:
		return &pyTuple{}, nil
	case opTUPLE1, opTUPLE2, opTUPLE3:
		n := int(op-opTUPLE1) + 1
		vs := make([]value, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			vs[i] = v
		}
		return u.tuple(vs)
	case opTUPLE:
		vs, err := u.popMark()
		if err != nil {
			return nil, err
		}
		return u.tuple(vs)
	case opEMPTY_LIST:
		return &pyList{}, nil
	case opLIST:
		vs, err := u.popMark()
		if err != nil {
			return nil, err
		}
		if err := u.grow(len(vs)); err != nil {
			return nil, err
		}
		return &pyList{items: vs}, nil
	case opAPPEND, opAPPENDS:
		var vs []value
		if op == opAPPEND {
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			vs = []value{v}
		} else {
			var err error
			if vs, err = u.popMark(); err != nil {
				return nil, err
			}
		}
		t, err := u.top()
		if err != nil {
			return nil, err
		}
		l, ok := t.(*pyList)
		if !ok {
			return nil, u.errorf("appends to a %s, not a list", kindOf(t))
		}
		if err := u.grow(len(vs)); err != nil {
			return nil, err
		}
		l.items = append(l.items, vs...)
		return nil, nil
	case opEMPTY_DICT:
		return &pyDict{}, nil
	case opDICT:
		vs, err := u.popMark()
		if err != nil {
			return nil, err
		}
		d := &pyDict{}
		return d, u.setItems(d, vs)
	case opSETITEM, opSETITEMS:
		var vs []value
		if op == opSETITEM {
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			k, err := u.pop()
			if err != nil {
				return nil, err
			}
			vs = []value{k, v}
		} else {
			var err error
			if vs, err = u.popMark(); err != nil {
				return nil, err
			}
		}
		t, err := u.top()
		if err != nil {
			return nil, err
		}
		d, ok := t.(*pyDict)
		if !ok {
			return nil, u.errorf("sets items of a %s, not a dict", kindOf(t))
		}
		return nil, u.setItems(d, vs)
	case opEMPTY_SET:
		return &pySet{}, nil
	case opADDITEMS:
		vs, err := u.popMark()
		if err != nil {
			return nil, err
		}
		t, err := u.top()
		if err != nil {
			return nil, err
		}
		s, ok := t.(*pySet)
		if !ok {
			return nil, u.errorf("adds items to a %s, not a set", kindOf(t))
		}
		if err := u.checkKeys(vs); err != nil {
			return nil, err
		}
		if err := u.grow(len(vs)); err != nil {
			return nil, err
		}
		s.items = append(s.items, vs...)
		return nil, nil
	case opFROZENSET:
		vs, err := u.popMark()
		if err != nil {
			return nil, err
		}
		if err := u.checkKeys(vs); err != nil {
			return nil, err
		}
		if err := u.grow(len(vs)); err != nil {
			return nil, err
		}
		return &pySet{items: vs}, nil
	case opBINPUT, opLONG_BINPUT, opPUT:
		var i uint64
		var err error
		switch op {
		case opBINPUT:
			i, err = u.uint(1)
		case opLONG_BINPUT:
			i, err = u.uint(4)
		default:
			i, err = u.textIndex()
		}
		if err != nil {
			return nil, err
		}
		v, err := u.top()
		if err != nil {
			return nil, err
		}
		return nil, u.memoPut(i, v)
	case opMEMOIZE:
		v, err := u.top()
		if err != nil {
			return nil, err
		}
		return nil, u.memoPut(uint64(len(u.memo)), v)
	case opBINGET, opLONG_BINGET, opGET:
		var i uint64
		var err error
		switch op {
		case opBINGET:
			i, err = u.uint(1)
		case opLONG_BINGET:
			i, err = u.uint(4)
		default:
			i, err = u.textIndex()
		}
		if err != nil {
			return nil, err
		}
		return u.memoGet(i)
	case opGLOBAL:
		module, err := u.src.line()
		if err != nil {
			return nil, err
		}
		m := string(module)
		name, err := u.src.line()
		if err != nil {
			return nil, err
		}
		return u.global(m, string(name))
	case opSTACK_GLOBAL:
		name, err := u.pop()
		if err != nil {
			return nil, err
		}
		module, err := u.pop()
		if err != nil {
			return nil, err
		}
		ms, ok1 := module.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return nil, u.errorf("STACK_GLOBAL needs two strings, got a %s and a %s", kindOf(module), kindOf(name))
		}
		return u.global(ms, ns)
	case opBINPERSID:
		pid, err := u.pop()
		if err != nil {
			return nil, err
		}
		if u.persist == nil {
			return nil, u.errorf("a persistent id where none may be")
		}
		v, err := u.persist(pid)
		if err != nil {
			return nil, u.errorf("%v", err)
		}
		return v, nil
	case opREDUCE:
		args, err := u.pop()
		if err != nil {
			return nil, err
		}
		fn, err := u.pop()
		if err != nil {
			return nil, err
		}
		return u.reduce(fn, args)
	case opNEWOBJ:
		args, err := u.pop()
		if err != nil {
			return nil, err
		}
		cls, err := u.pop()
		if err != nil {
			return nil, err
		}
		if g, ok := cls.(*pyGlobal); !ok || g.kind != gOrderedDict {
			return nil, u.errorf("NEWOBJ of a %s: only an OrderedDict may be made that way", kindOf(cls))
		}
		return u.reduce(cls, args)
	case opBUILD:
		_, err := u.pop() // the state
		if err != nil {
			return nil, err
		}
		t, err := u.top()
		if err != nil {
			return nil, err
		}
		switch t.(type) {
		case *pyDict:
			// An OrderedDict's attributes, such as the _metadata that
			// nn.Module.state_dict() attaches: not entries, ignored.
			return nil, nil
		case *tensorVal:
			// A tensor's Python attributes: none matter here.
			return nil, nil
		}
		return nil, u.errorf("BUILD on a %s", kindOf(t))
	}
	if why, ok := refused[op]; ok {
		return nil, u.errorf("pickle opcode %s is not supported: a state dict never needs it", why)
	}
	return nil, u.errorf("unknown pickle opcode 0x%02x", op)
}

func (u *unpickler) textIndex() (uint64, error) {
	line, err := u.src.line()
	if err != nil {
		return 0, err
	}
	i, err := strconv.ParseUint(string(line), 10, 32)
	if err != nil {
		return 0, u.errorf("bad memo index %s", strconv.Quote(string(line)))
	}
	return i, nil
}

// checkKeys refuses unhashable keys, as Python would.
func (u *unpickler) checkKeys(ks []value) error {
	for _, k := range ks {
		switch k.(type) {
		case *pyList, *pyDict, *pySet:
			return u.errorf("a %s used as a dict key or set element", kindOf(k))
		}
	}
	return nil
}

// setItems adds the key, value pairs kvs to d.
func (u *unpickler) setItems(d *pyDict, kvs []value) error {
	if len(kvs)%2 != 0 {
		return u.errorf("an odd number of values (%d) for dict items", len(kvs))
	}
	keys := make([]value, 0, len(kvs)/2)
	for i := 0; i < len(kvs); i += 2 {
		keys = append(keys, kvs[i])
	}
	if err := u.checkKeys(keys); err != nil {
		return err
	}
	if err := u.grow(len(kvs)); err != nil {
		return err
	}
	for i := 0; i < len(kvs); i += 2 {
		d.keys = append(d.keys, kvs[i])
		d.vals = append(d.vals, kvs[i+1])
	}
	return nil
}

// reduce applies a whitelisted constructor to args, symbolically.
func (u *unpickler) reduce(fn, args value) (value, error) {
	g, ok := fn.(*pyGlobal)
	if !ok {
		return nil, u.errorf("calls a %s", kindOf(fn))
	}
	t, ok := args.(*pyTuple)
	if !ok {
		return nil, u.errorf("calls %s.%s with a %s instead of an argument tuple", g.module, g.name, kindOf(args))
	}
	a := t.items
	switch g.kind {
	case gOrderedDict:
		if len(a) == 0 {
			return &pyDict{}, nil
		}
		return nil, u.errorf("OrderedDict called with %d arguments; torch passes none", len(a))
	case gRebuildTensorV2, gRebuildTensor:
		v, err := rebuildTensor(a, g.kind == gRebuildTensorV2)
		if err != nil {
			return nil, u.errorf("%s.%s: %v", g.module, g.name, err)
		}
		*u.tensors++
		if *u.tensors > maxTensors {
			return nil, u.errorf("more than %d tensors", maxTensors)
		}
		return v, nil
	case gRebuildParameter, gRebuildParameterWithState:
		want := 3
		if g.kind == gRebuildParameterWithState {
			want = 4
		}
		if len(a) != want {
			return nil, u.errorf("%s.%s called with %d arguments, not %d", g.module, g.name, len(a), want)
		}
		tv, ok := a[0].(*tensorVal)
		if !ok {
			return nil, u.errorf("%s.%s of a %s, not a tensor", g.module, g.name, kindOf(a[0]))
		}
		return tv, nil
	}
	return nil, u.errorf("calls %s.%s, which is a type, not a constructor", g.module, g.name)
}

// rebuildTensor checks the arguments of torch._utils._rebuild_tensor_v2
// (storage, storage_offset, size, stride, requires_grad, backward_hooks[,
// metadata]) or of _rebuild_tensor (the first four) and makes the tensor.
func rebuildTensor(a []value, v2 bool) (*tensorVal, error) {
	if v2 && len(a) != 6 && len(a) != 7 || !v2 && len(a) != 4 {
		return nil, fmt.Errorf("called with %d arguments", len(a))
	}
	st, ok := a[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("the storage is a %s", kindOf(a[0]))
	}
	off, ok := a[1].(int64)
	if !ok || off < 0 {
		return nil, fmt.Errorf("bad storage offset (%s)", describe(a[1]))
	}
	size, err := intTuple(a[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := intTuple(a[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("%d sizes but %d strides", len(size), len(stride))
	}
	if len(size) > maxDims {
		return nil, fmt.Errorf("%d dimensions (limit %d)", len(size), maxDims)
	}
	if v2 {
		if _, ok := a[4].(bool); !ok {
			return nil, fmt.Errorf("requires_grad is a %s", kindOf(a[4]))
		}
		if _, ok := a[5].(*pyDict); !ok {
			return nil, fmt.Errorf("backward_hooks is a %s", kindOf(a[5]))
		}
	}
	t := &tensorVal{st: st, offset: off, shape: make([]int, len(size)), stride: stride, numel: 1}
	elem := int64(st.dtype.size)
	for i, d := range size {
		if d < 0 {
			return nil, fmt.Errorf("negative size %d", d)
		}
		if d > 0 && t.numel > math.MaxInt64/elem/d {
			return nil, fmt.Errorf("size %v overflows", size)
		}
		if int64(int(d)) != d {
			return nil, fmt.Errorf("size %d does not fit an int", d)
		}
		t.numel *= d
		t.shape[i] = int(d)
	}
	if off > math.MaxInt64/elem {
		return nil, fmt.Errorf("storage offset %d overflows", off)
	}
	if t.numel > 0 {
		want := int64(1)
		for i := len(size) - 1; i >= 0; i-- {
			if size[i] != 1 && stride[i] != want {
				t.noncontig = true
			}
			want *= size[i]
		}
	}
	return t, nil
}

func intTuple(v value, what string) ([]int64, error) {
	t, ok := v.(*pyTuple)
	if !ok {
		return nil, fmt.Errorf("the %s is a %s, not a tuple", what, kindOf(v))
	}
	out := make([]int64, len(t.items))
	for i, x := range t.items {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("the %s holds a %s", what, kindOf(x))
		}
		out[i] = n
	}
	return out, nil
}

// kindOf names a value's Python type for error messages.
func kindOf(v value) string {
	switch x := v.(type) {
	case pyNone:
		return "None"
	case bool:
		return "bool"
	case int64:
		return "int"
	case *bigInt:
		return "int too large for 64 bits"
	case float64:
		return "float"
	case string:
		return "str"
	case pyBytes:
		return "bytes"
	case *pyList:
		return "list"
	case *pyTuple:
		return "tuple"
	case *pyDict:
		return "dict"
	case *pySet:
		return "set"
	case *pyGlobal:
		return "global " + x.module + "." + x.name
	case *storageRef:
		return "storage"
	case *tensorVal:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

func describe(v value) string {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return strconv.Quote(show(x))
	}
	return "a " + kindOf(v)
}
