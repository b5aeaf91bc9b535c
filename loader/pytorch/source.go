package pytorch

import (
	"fmt"
	"io"
)

// source is the pickle byte stream: a window onto r that is refilled in
// growing chunks, so that a small pickle costs one or two reads (one or two
// Range requests over HTTP) and a large one a few, without reading much past
// its end.
type source struct {
	r     io.ReaderAt
	base  int64 // where the stream starts in r
	limit int64 // bytes of the stream, from base
	what  string
	buf   []byte // bytes [bufAt, bufAt+len(buf)) of the stream
	bufAt int64
	pos   int64 // the next byte, from base
	chunk int64
	// capped: limit is maxPickleBytes, not the end of the file
	capped bool
}

const (
	firstChunk = 4 << 10
	lastChunk  = 1 << 20
)

// memSource is a source over a pickle already in memory.
func memSource(b []byte, what string) *source {
	return &source{buf: b, limit: int64(len(b)), what: what}
}

func (s *source) truncated(n int64) error {
	if s.capped {
		return fmt.Errorf("%s does not end within the first %d bytes of the file, the limit for a checkpoint's pickles", s.what, s.limit)
	}
	return fmt.Errorf("%s ends unexpectedly: %d more bytes needed at byte %d of %d", s.what, n, s.pos, s.limit)
}

// need makes sure bytes [pos, pos+n) are in buf.
func (s *source) need(n int64) error {
	if n < 0 || n > s.limit-s.pos {
		return s.truncated(n)
	}
	if s.pos+n <= s.bufAt+int64(len(s.buf)) {
		return nil
	}
	if s.r == nil {
		return s.truncated(n)
	}
	if s.chunk < firstChunk {
		s.chunk = firstChunk
	}
	want := min(max(n, s.chunk), s.limit-s.pos)
	s.chunk = min(2*s.chunk, lastChunk)
	nb := make([]byte, want)
	keep := copy(nb, s.buf[s.pos-s.bufAt:])
	if err := readFull(s.r, nb[keep:], s.base+s.pos+int64(keep)); err != nil {
		return fmt.Errorf("reading %s: %w", s.what, err)
	}
	s.buf, s.bufAt = nb, s.pos
	return nil
}

func (s *source) byte() (byte, error) {
	if err := s.need(1); err != nil {
		return 0, err
	}
	c := s.buf[s.pos-s.bufAt]
	s.pos++
	return c, nil
}

// bytes returns the next n bytes; the slice is valid until the next call.
func (s *source) bytes(n int64) ([]byte, error) {
	if err := s.need(n); err != nil {
		return nil, err
	}
	i := s.pos - s.bufAt
	s.pos += n
	return s.buf[i : i+n : i+n], nil
}

// line returns the bytes up to the next '\n' (not included), at most maxLine.
func (s *source) line() ([]byte, error) {
	for n := int64(1); n <= maxLine+1; n++ {
		if err := s.need(n); err != nil {
			return nil, err
		}
		i := s.pos - s.bufAt
		if s.buf[i+n-1] == '\n' {
			s.pos += n
			return s.buf[i : i+n-1 : i+n-1], nil
		}
	}
	return nil, fmt.Errorf("%s: a text line at byte %d is longer than %d bytes", s.what, s.pos, maxLine)
}
