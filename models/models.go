//go:build !noembed

// Package models embeds the default model, mamba2-go-tiny: a 9 M-parameter
// Mamba-2 trained on Go source (see mamba2-go-tiny/README.md, its model
// card), so the CLI works with no download.
package models

import (
	"embed"
	"io/fs"
)

//go:embed mamba2-go-tiny
var files embed.FS

// Tiny returns the embedded mamba2-go-tiny folder: config.json, the
// safetensors weights and tokenizer.json.
func Tiny() fs.FS {
	sub, err := fs.Sub(files, "mamba2-go-tiny")
	if err != nil {
		panic(err) // the folder is part of the build
	}
	return sub
}
