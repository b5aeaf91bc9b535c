package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestHelp: every command answers --help, -h and `mamba2 help CMD` on
// stdout with exit 0: its synopsis, every flag with its default, examples.
func TestHelp(t *testing.T) {
	cmds := []struct {
		args  []string
		name  string   // the help entry
		flags []string // some flags it must list
	}{
		{[]string{"generate"}, "generate", []string{"--prompt", "--temperature", "--max-new-tokens int", "(default 64)", "--backend string", "(default auto)"}},
		{[]string{"run"}, "run", []string{"--max-new-tokens", "--stop string"}},
		{[]string{"logits"}, "logits", []string{"--ids", "--last"}},
		{[]string{"tokenize"}, "tokenize", nil},
		{[]string{"detokenize"}, "detokenize", []string{"--ids"}},
		{[]string{"bench"}, "bench", []string{"--shape", "--reps", "--profile"}},
		{[]string{"serve"}, "serve", []string{"--addr string", "(default 127.0.0.1:8080)", "--static"}},
		{[]string{"convert"}, "convert", []string{"--out string", "--dtype", "int4", "--group-size int", "(default 128)", "--shard-size int"}},
		{[]string{"cache", "list"}, "cache list", []string{"--cache-dir"}},
		{[]string{"cache", "clear"}, "cache clear", []string{"--cache-dir"}},
	}
	for _, c := range cmds {
		h, ok := help[c.name]
		if !ok {
			t.Fatalf("no help entry for %q", c.name)
		}
		var outs []string
		for _, form := range [][]string{append(c.args, "--help"), append(c.args, "-h"), append([]string{"help"}, c.args...)} {
			out, err := runCLI(t, "", form...)
			if err != nil {
				t.Fatalf("%v: %v", form, err)
			}
			outs = append(outs, out)
		}
		if outs[0] != outs[1] || outs[0] != outs[2] {
			t.Errorf("%s: --help, -h and help print different texts", c.name)
		}
		out := outs[0]
		for _, want := range append([]string{"usage: " + h.synopsis, h.about, "examples:"}, c.flags...) {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", c.name, want, out)
			}
		}
		if len(h.examples) == 0 {
			t.Errorf("%s: no example", c.name)
		}
	}
	// Every flag of generate is listed (a flag added later cannot be missed).
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	var g genFlags
	g.modelFlags.register(fs)
	g.register(fs)
	out, _ := runCLI(t, "", "generate", "--help")
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out, "--"+f.Name) {
			t.Errorf("generate --help does not list --%s", f.Name)
		}
	})
	if _, err := runCLI(t, "", "help", "nosuch"); err == nil || !strings.Contains(err.Error(), `unknown command "nosuch"`) {
		t.Errorf("help nosuch: %v", err)
	}
	if _, err := runCLI(t, "", "generate", "--no-such-flag"); err == nil || !strings.Contains(err.Error(), "--help") {
		t.Errorf("a wrong flag should point at --help: %v", err)
	}
}

// TestVersion: --version prints the version, which is package.json's.
func TestVersion(t *testing.T) {
	out, err := runCLI(t, "", "--version")
	if err != nil || !strings.HasPrefix(out, "mamba2 "+Version) {
		t.Fatalf("--version printed %q (%v)", out, err)
	}
	data, err := os.ReadFile(filepath.Join(modeltest.Root(), "..", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(data, &pkg); err != nil || pkg.Version != Version {
		t.Errorf("package.json has version %q, the CLI %q (%v)", pkg.Version, Version, err)
	}
}
