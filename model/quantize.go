package model

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/mamba2web/mamba2/loader"
)

// QuantizeSpec turns a float matrix spec (its Data in dtype dt) into one
// of the format q gives its role (Quant.For) whose Data
// stream quantizes the float stream as it passes: rows are gathered into
// blocks of about a mebibyte, each block quantized across the cores, and
// its packed bytes handed on, so the float tensor is never whole in
// memory. The scales and zeros (a few percent of the bytes) are kept as
// the data passes and streamed after it, which is why a backend reads Data
// first.
func QuantizeSpec(spec WeightSpec, dt loader.DType, q Quant) WeightSpec {
	N, K := spec.Shape[0], spec.Shape[1]
	f, gs := q.For(spec.Role)
	per := 1 // scales per row
	if f == FormatInt4 {
		per = Groups(K, gs)
	}
	scales := make([]uint16, 0, N*per)
	var zeros []uint16
	if f == FormatInt4 {
		zeros = make([]uint16, 0, N*per)
	}
	src := spec.Data
	streamed := false
	out := spec
	out.Format, out.GroupSize = f, 0
	if f == FormatInt4 {
		out.GroupSize = gs
	}
	out.Data = func(fn func(off int64, b []byte) error) error {
		if streamed {
			return fmt.Errorf("quantizing %s: the data stream can be read only once", spec.Name)
		}
		streamed = true
		es := dt.Size()
		rowIn := K * es
		block := max(1, (1<<20)/max(rowIn, 1)) // rows per block
		in := make([]byte, 0, block*rowIn)
		packed := make([]byte, block*f.RowBytes(K))
		bs := make([]uint16, block*per)
		bz := make([]uint16, block*per)
		var outOff int64
		flush := func() error {
			rows := len(in) / rowIn
			if rows == 0 {
				return nil
			}
			quantizeRows(in[:rows*rowIn], dt, K, f, gs, packed, bs, bz)
			n := rows * f.RowBytes(K)
			if err := fn(outOff, packed[:n]); err != nil {
				return err
			}
			outOff += int64(n)
			scales = append(scales, bs[:rows*per]...)
			if f == FormatInt4 {
				zeros = append(zeros, bz[:rows*per]...)
			}
			in = in[:0]
			return nil
		}
		err := src(func(_ int64, b []byte) error {
			for len(b) > 0 {
				k := min(len(b), cap(in)-len(in))
				in = append(in, b[:k]...)
				b = b[k:]
				if len(in) == cap(in) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(in)%rowIn != 0 {
			return fmt.Errorf("quantizing %s: the stream ended inside a row", spec.Name)
		}
		if err := flush(); err != nil {
			return err
		}
		if len(scales) != N*per {
			return fmt.Errorf("quantizing %s: the stream held %d rows, want %d", spec.Name, len(scales)/per, N)
		}
		return nil
	}
	half := func(what string, v *[]uint16) Stream {
		return func(fn func(off int64, b []byte) error) error {
			if !streamed || len(*v) != N*per {
				return fmt.Errorf("quantizing %s: the %s are known only after the data stream", spec.Name, what)
			}
			const step = 1 << 19 // values per chunk
			buf := make([]byte, 0, 2*min(step, len(*v)))
			for i := 0; i < len(*v); i += step {
				buf = buf[:0]
				for _, h := range (*v)[i:min(i+step, len(*v))] {
					buf = binary.LittleEndian.AppendUint16(buf, h)
				}
				if err := fn(int64(2*i), buf); err != nil {
					return err
				}
			}
			return nil
		}
	}
	out.Scales = half("scales", &scales)
	if f == FormatInt4 {
		out.Zeros = half("zeros", &zeros)
	}
	return out
}

// quantizeRows quantizes whole rows of float elements (dtype dt, k per
// row) in parallel: packed data into packed, scales (and zeros) into bs
// (and bz), per row in order.
func quantizeRows(in []byte, dt loader.DType, k int, f Format, gs int, packed []byte, bs, bz []uint16) {
	es := dt.Size()
	rows := len(in) / (k * es)
	per := 1
	if f == FormatInt4 {
		per = Groups(k, gs)
	}
	workers := min(runtime.GOMAXPROCS(0), rows)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*rows/workers, (w+1)*rows/workers
		wg.Go(func() {
			row := make([]float32, k)
			for r := lo; r < hi; r++ {
				loader.Decode(row, dt, in[r*k*es:(r+1)*k*es])
				dst := packed[r*f.RowBytes(k) : (r+1)*f.RowBytes(k)]
				if f == FormatInt8 {
					bs[r] = QuantizeInt8(row, dst)
				} else {
					QuantizeInt4(row, gs, dst, bs[r*per:(r+1)*per], bz[r*per:(r+1)*per], Int4Search)
				}
			}
		})
	}
	wg.Wait()
}
