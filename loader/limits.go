package loader

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Size limits for the files of a model folder that are not weights. Each
// is read whole into memory (and, with a Cache, onto disk), so a server
// that claims a 50 GB config.json must be refused before a byte of it is
// fetched, not after the disk is full. The limits are far above every
// real file (so none is refused) and far below what would hurt.
const (
	// MaxConfigSize bounds config.json, generation_config.json,
	// adapter_config.json (a PEFT adapter's),
	// tokenizer_config.json, special_tokens_map.json and manifest.json
	// (ManifestFile). Real ones are a few kilobytes; a manifest lists a
	// few dozen files at about 100 bytes each.
	MaxConfigSize = 1 << 20
	// MaxIndexSize bounds model.safetensors.index.json (IndexFile), about
	// 100 bytes per tensor: the largest public checkpoints, with several
	// thousand tensors, have indexes of 1 to 2 MB.
	MaxIndexSize = 16 << 20
	// MaxTokenizerSize bounds tokenizer.json. The largest vocabularies
	// (around 250 000 tokens with their merges) make files of 20 to 35 MB.
	MaxTokenizerSize = 64 << 20
	// MaxSideFileSize bounds any other file that is not weights: a name
	// ending in .json, .txt, .md, .model (sentencepiece) or .jinja
	// (a chat template): vocab.json, merges.txt, README.md and the like.
	MaxSideFileSize = 64 << 20
)

// ErrTooLarge is matched (errors.Is) by the error for a file larger than
// its limit (MaxConfigSize and the others).
var ErrTooLarge = errors.New("file too large")

// sideFileLimit is the most bytes name may have, or 0 for no limit (the
// weights, .safetensors and the like, whose size the header and the
// tensors account for).
func sideFileLimit(name string) int64 {
	switch base := path.Base(name); base {
	case "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "adapter_config.json", ManifestFile:
		return MaxConfigSize
	case IndexFile:
		return MaxIndexSize
	case "tokenizer.json":
		return MaxTokenizerSize
	default:
		if strings.HasSuffix(base, ".index.json") {
			return MaxIndexSize
		}
		switch path.Ext(base) {
		case ".json", ".txt", ".md", ".model", ".jinja":
			return MaxSideFileSize
		}
	}
	return 0
}

// ReadSideFile reads a small file of a model folder whole, refusing one
// larger than its limit (sideFileLimit: MaxConfigSize for config.json and
// the like) with an error that names it and matches ErrTooLarge, after
// reading at most one byte past the limit. A local folder has no Content-
// Length to check first, so this is what keeps a 50 GB config.json out of
// memory there.
func ReadSideFile(fsys fs.FS, name string) ([]byte, error) {
	limit := sideFileLimit(name)
	if limit == 0 {
		limit = MaxSideFileSize
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w: more than the %d bytes allowed for it", name, ErrTooLarge, limit)
	}
	return data, nil
}
