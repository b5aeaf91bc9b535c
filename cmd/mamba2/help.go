package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Version is the release of the CLI, the same as package.json's (a test
// keeps them equal).
const Version = "0.1.0"

// helpText is what `mamba2 CMD --help` and `mamba2 help CMD` print besides
// the flags: a synopsis, a sentence on what the command does, examples.
type helpText struct {
	synopsis string
	about    string
	examples []string
}

var help = map[string]helpText{
	"generate": {
		"mamba2 generate [flags] (--prompt TEXT | --ids 1,2,3)... | --prompts-file F",
		`Continues a prompt and streams the new text to stdout (with --json, prints the new ids and text at the end). Several prompts (repeated --prompt or --ids, or a file of one per line) run together and print their texts in order, one per line, or {"results": [{"ids", "text", "reason"}, ...]} with --json.`,
		[]string{
			`mamba2 generate --prompt $'package main\n\nimport (\n'`,
			`mamba2 generate --prompt 'func main() {' --prompt 'type T struct {' --json`,
			`mamba2 generate --prompt 'func main() {' --temperature 0.8 --top-p 0.95 --seed 7 --json`,
		},
	},
	"run": {
		"mamba2 run [flags] < prompt.txt",
		"Reads the prompt from stdin and streams its continuation to stdout.",
		[]string{`echo 'package main' | mamba2 run --max-new-tokens 32`},
	},
	"logits": {
		"mamba2 logits [flags] --ids 1,2,3 [--ids 4,5]...",
		`Prints the logits of every position of the ids, {"logits": [[...], ...]}, or of the last one with --last. Several --ids run as one left-padded batch: {"results": [{"logits": ...}, ...]}, each row at its own positions.`,
		[]string{`mamba2 logits --ids 1,2,3 --last`, `mamba2 logits --ids 1,2,3 --ids 4,5 --last`},
	},
	"perplexity": {
		"mamba2 perplexity [flags] --file F",
		`Scores a text file as one sequence: {"tokens": N, "nll": mean, "ppl": exp(mean)}, N being the tokens predicted (all but the first of the file's encoding), nll the mean of -log p(next | all before) in nats.`,
		[]string{
			`mamba2 perplexity --file main.go`,
			`mamba2 perplexity --model ./mamba2-130m --file notes.txt --quantize int4 --backend webgpu`,
		},
	},
	"hidden": {
		"mamba2 hidden [flags] (--ids 1,2,3 | --prompt TEXT)",
		`Prints hidden states as transformers' output_hidden_states: {"layers": [k, ...], "hidden_states": [...]}, index k < num_hidden_layers the residual stream after layer k, index num_hidden_layers the final norm's output; each a [positions][hidden_size] array, or with --mean the average over the positions (an embedding of the text).`,
		[]string{
			`mamba2 hidden --prompt 'func main() {}' --mean`,
			`mamba2 hidden --ids 1,2,3 --layers all`,
		},
	},
	"tokenize": {
		"mamba2 tokenize [flags] < text",
		`Encodes UTF-8 text from stdin into token ids: {"ids": [...]}.`,
		[]string{`printf 'func main() {}' | mamba2 tokenize`},
	},
	"detokenize": {
		"mamba2 detokenize [flags] --ids 1,2,3",
		`Decodes token ids into text: {"text": "..."}.`,
		[]string{`mamba2 detokenize --ids 1,2,3`},
	},
	"bench": {
		"mamba2 bench [flags]",
		"Measures prefill and decode speed (medians over --reps runs) on a model or on random weights of a released shape.",
		[]string{
			`mamba2 bench --prompt-lengths 128,512 --decode-tokens 64`,
			`mamba2 bench --backend webgpu --shape 130m --dtype f32 --profile`,
		},
	},
	"serve": {
		"mamba2 serve [flags]",
		"Serves model folders over HTTP at /models/<name>/ (Range, ETag, CORS), with --static the web demo at /, and with --model that model with OpenAI's API at /v1 (completions and chat, streamed or not; --slots requests batched at once, docs/server.md).",
		[]string{
			`scripts/build-web.sh && mamba2 serve --static build/web`,
			`mamba2 serve --model org/mamba2-chat --slots 16 --queue 64`,
		},
	},
	"convert": {
		"mamba2 convert --model SRC --out DIR [flags]",
		"Writes a checkpoint (safetensors or pytorch_model.bin) as safetensors in Hugging Face layout, sharded, with manifest.json of sha256s; weights stream through, never whole in memory. " +
			"--dtype int8 or int4 quantizes in_proj, out_proj, the embedding and lm_head with the quantizer a quantized load uses, and records it in config.json's quantization_config (docs/quantization.md).",
		[]string{
			`mamba2 convert --model ./mamba2-130m --out ./mamba2-130m-st`,
			`mamba2 convert --model ./model --out ./model-f16 --dtype f16 --shard-size 1000000000`,
			`mamba2 convert --model ./mamba2-1.3b --out ./mamba2-1.3b-int4 --dtype int4 --group-size 64`,
		},
	},
	"cache list": {
		"mamba2 cache list [flags]",
		"Lists the files of models downloaded over HTTP.",
		[]string{`mamba2 cache list`},
	},
	"cache clear": {
		"mamba2 cache clear [flags]",
		"Removes every downloaded model file (and partial downloads) from the cache.",
		[]string{`mamba2 cache clear`},
	},
}

// errHelp is what parse returns for -h and --help: run prints the
// command's help on stdout and exits 0.
type errHelp struct{ fs *flag.FlagSet }

func (e errHelp) Error() string { return e.fs.Name() + ": help requested" }

// writeHelp prints the help of the command whose flags are fs.
func writeHelp(w io.Writer, fs *flag.FlagSet) {
	h := help[fs.Name()]
	fmt.Fprintf(w, "usage: %s\n\n%s\n", h.synopsis, h.about)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nflags:")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	if len(h.examples) > 0 {
		fmt.Fprintln(w, "\nexamples:")
		for _, e := range h.examples {
			fmt.Fprintln(w, "  "+e)
		}
	}
}

// helpFor prints `mamba2 help CMD`: the command's own --help.
func helpFor(name string, rest []string) []string {
	args := []string{name}
	if name == "cache" {
		sub := "list"
		if len(rest) > 0 {
			sub = rest[0]
		}
		args = append(args, sub)
	}
	return append(args, "--help")
}

// versionString is the version with the commit it was built from, when Go
// recorded one.
func versionString() string {
	s := "mamba2 " + Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				rev = kv.Value
			case "vcs.modified":
				if kv.Value == "true" {
					dirty = "+changes"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			s += " (" + rev + dirty + ")"
		}
		s += " " + bi.GoVersion
	}
	return s
}

func isHelp(err error) (errHelp, bool) {
	var h errHelp
	return h, errors.As(err, &h)
}
