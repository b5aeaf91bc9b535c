//go:build noembed

package models

import (
	"io/fs"
	"testing/fstest"
)

// Tiny is empty in builds tagged noembed (a smaller binary for machines
// that load models from folders or URLs): opening it fails with "no
// config.json".
func Tiny() fs.FS { return fstest.MapFS{} }
