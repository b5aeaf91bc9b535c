package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A saved state is a versioned header and then, layer by layer, each
// sequence's conv state and SSM state as little-endian float32, exactly as
// the backend holds them:
//
//	magic    "MAMBA2ST"          8 bytes
//	version  uint32              1 (a hybrid model's: 2, statehybrid.go)
//	config   [32]byte            Config.Hash of the model that made it
//	batch    uint32
//	layers   uint32
//	pos      uint64              positions consumed (State.Pos)
//	conv     layers × [B, K−1, ConvDim] float32
//	ssm      layers × [B, H, P, N] float32   (the two interleaved per layer:
//	                                           conv of layer 0, ssm of layer 0, …)
//
// A state any row of which runs under an attached adapter (State.
// UseAdapter) ends with what each row ran under, since its memory is the
// adapted model's:
//
//	"LORA"   4 bytes
//	per row  [32]byte the adapter's key (zeros: none), uint16 n, n bytes of its name
//
// and restores only into a state whose rows run under the same adapters
// (names aside); a state without it is the base model's, and restores only
// into rows that run under none.
//
// Restoring it into a state of the same model continues the sequences
// exactly where they were: feeding Y after a restored state of X computes
// what feeding X then Y would (the same arithmetic, whatever the pieces).
const (
	stateMagic   = "MAMBA2ST"
	stateVersion = 1
	stateHeader  = 8 + 4 + 32 + 4 + 4 + 8
)

// Hash identifies a model's architecture for saved states: the SHA-256 of
// every field that shapes the state or the computation (dimensions, conv
// width, chunking and dt clamp, norms' epsilon, tied embeddings, special
// tokens), not the weights' format or values. A state saved by one model
// restores only into a model of the same hash.
func (c Config) Hash() [32]byte {
	var b bytes.Buffer
	for _, v := range []int{c.VocabSize, c.Hidden, c.Layers, c.State, c.Expand, c.Heads, c.HeadDim, c.Groups,
		c.ConvKernel, c.ChunkSize, b2i(c.UseBias), b2i(c.ConvBias), b2i(c.TieEmbeddings), c.BOS, c.EOS, c.PAD} {
		binary.Write(&b, binary.LittleEndian, int64(v))
	}
	for _, v := range []float64{c.Eps, c.TimeStepMin, c.TimeStepMax} {
		binary.Write(&b, binary.LittleEndian, math.Float64bits(v))
	}
	if hy := c.Hybrid; hy != nil {
		// A hybrid's blocks, attention and multipliers (absent for
		// Mamba-2, whose hash stays what it was).
		b.WriteString(hy.Family)
		for _, k := range hy.Blocks {
			b.WriteString(k.String() + ";")
		}
		for _, v := range []int{hy.AttnHeads, hy.KVHeads, hy.AttnHeadDim, hy.RotaryDim, hy.Intermediate, hy.Experts, hy.TopK,
			hy.ExpertInter, hy.MemBlocks, hy.AdapterRank, b2i(hy.AttnAdapters), b2i(hy.MambaNorm), hy.NormGroups, hy.Inner} {
			binary.Write(&b, binary.LittleEndian, int64(v))
		}
		for _, v := range append([]float64{hy.RopeTheta, hy.AttnScale, hy.EmbedMul, hy.LogitsMul, hy.ResidualMul, hy.AttnInMul,
			hy.AttnOutMul, hy.KeyMul, hy.SSMInMul, hy.SSMOutMul, hy.GateMul, hy.DownMul}, hy.SSMMul...) {
			binary.Write(&b, binary.LittleEndian, math.Float64bits(v))
		}
	}
	return sha256.Sum256(b.Bytes())
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

// Save returns the state's bytes (the format above). It waits for the
// work issued so far.
func (s *State) Save() ([]byte, error) {
	if s.closed {
		return nil, errors.New("save: the state is closed")
	}
	if s.m.Config.Hybrid != nil {
		return s.saveHybrid()
	}
	c := s.m.Config
	out := make([]byte, 0, stateHeader+s.stateBytes())
	out = append(out, stateMagic...)
	out = binary.LittleEndian.AppendUint32(out, stateVersion)
	h := c.Hash()
	out = append(out, h[:]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(s.Batch))
	out = binary.LittleEndian.AppendUint32(out, uint32(c.Layers))
	out = binary.LittleEndian.AppendUint64(out, uint64(s.Pos))
	for l := range s.conv {
		for _, t := range []Tensor{s.conv[l], s.ssm[l]} {
			v, err := s.m.Backend.Read(t)
			if err != nil {
				return nil, fmt.Errorf("save: %w", err)
			}
			for _, f := range v {
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
			}
		}
	}
	return s.appendAdapters(out), nil
}

// stateBytes is the size of the conv and SSM state of every layer.
func (s *State) stateBytes() int {
	c := s.m.Config
	return 4 * c.Layers * s.Batch * ((c.ConvKernel-1)*c.ConvDim() + c.Heads*c.HeadDim*c.State)
}

// Restore replaces the state with saved bytes from Save. It refuses bytes
// that are not a saved state, of another version, of another model (its
// Config.Hash), of another batch size, or cut short, naming what differs;
// the state is unchanged then.
func (s *State) Restore(data []byte) error {
	if s.closed {
		return errors.New("restore: the state is closed")
	}
	if s.m.Config.Hybrid != nil {
		return s.restoreHybrid(data)
	}
	c := s.m.Config
	if len(data) < stateHeader || string(data[:8]) != stateMagic {
		return errors.New("restore: not a saved Mamba-2 state (no MAMBA2ST header)")
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v == hybridStateVersion {
		return errors.New("restore: the state is a hybrid model's (version 2), not this Mamba-2 model's")
	} else if v != stateVersion {
		return fmt.Errorf("restore: saved state version %d, this runtime reads version %d", v, stateVersion)
	}
	if h := c.Hash(); !bytes.Equal(data[12:44], h[:]) {
		return fmt.Errorf("restore: the state was saved by another model (config hash %x…, this model's is %x…)", data[12:20], h[:8])
	}
	batch, layers := int(binary.LittleEndian.Uint32(data[44:])), int(binary.LittleEndian.Uint32(data[48:]))
	pos := binary.LittleEndian.Uint64(data[52:])
	if batch != s.Batch {
		return fmt.Errorf("restore: the state holds %d sequences, this state %d", batch, s.Batch)
	}
	if layers != c.Layers {
		return fmt.Errorf("restore: the state has %d layers, the model %d", layers, c.Layers)
	}
	want := stateHeader + s.stateBytes()
	if len(data) < want || len(data) > want && string(data[want:min(len(data), want+4)]) != loraTrailer {
		return fmt.Errorf("restore: the saved state is %d bytes, a state of this model and batch is %d", len(data), want)
	}
	if err := s.checkAdapters(data[want:]); err != nil {
		return err
	}
	data = data[:want]
	if pos > math.MaxInt32 {
		return fmt.Errorf("restore: position %d is out of range", pos)
	}
	body := data[stateHeader:]
	// Check everything before writing anything, so a bad state changes nothing.
	for i := 0; i < len(body); i += 4 {
		if f := math.Float32frombits(binary.LittleEndian.Uint32(body[i:])); math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("restore: the saved state holds %v at byte %d: a state must be finite", f, stateHeader+i)
		}
	}
	vals := make([]float32, 0, max(s.Batch*(c.ConvKernel-1)*c.ConvDim(), s.Batch*c.Heads*c.HeadDim*c.State))
	for l := range s.conv {
		for _, t := range []Tensor{s.conv[l], s.ssm[l]} {
			n := 1
			for _, d := range t.Shape() {
				n *= d
			}
			vals = vals[:0]
			for i := range n {
				vals = append(vals, math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:])))
			}
			body = body[4*n:]
			s.m.Backend.Write(t, vals)
		}
	}
	s.Pos = int(pos)
	return nil
}
