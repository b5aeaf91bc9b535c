package main

import (
	"context"
	"fmt"
	"io"

	"github.com/mamba2web/mamba2/loader"
)

// cmdCache lists or empties the cache of models downloaded over HTTP.
func cmdCache(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		args = []string{"list", "--help"}
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "clear") {
		return fmt.Errorf("cache: want `mamba2 cache list` or `mamba2 cache clear` [--cache-dir DIR]")
	}
	sub := args[0]
	fs := newFlags("cache " + sub)
	dir := fs.String("cache-dir", "", "cache folder (default: $MAMBA2_CACHE, else $XDG_CACHE_HOME/mamba2 or ~/.cache/mamba2)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	c, err := loader.NewCache(*dir)
	if err != nil {
		return err
	}
	entries, err := c.List()
	if err != nil {
		return err
	}
	var total int64
	for _, e := range entries {
		total += e.Size
	}
	if sub == "clear" {
		if err := c.Clear(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d files (%s) from %s\n", len(entries), humanBytes(total), c.Dir())
		return nil
	}
	for _, e := range entries {
		fmt.Fprintf(stdout, "%10s  %s  %s\n", humanBytes(e.Size), e.Fetched.Local().Format("2006-01-02 15:04"), e.URL)
	}
	fmt.Fprintf(stdout, "%d files, %s in %s\n", len(entries), humanBytes(total), c.Dir())
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
