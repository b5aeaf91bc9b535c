// Command oracle is the end-to-end tests' native reference for loads the
// CLI has no flag for: the embedded mamba2-go-tiny on the CPU backend,
// loaded with model.LoadOptions.Quantize as the browser's loadModel
// quantize option loads it, and its greedy continuation of a prompt,
// printed as {"ids": [...], "text": "..."} (the shape of mamba2 generate
// --json).
//
//	go run ./e2e/oracle --quantize int4 [--group-size 128] --prompt TEXT --max-new-tokens N
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/mamba2web/mamba2/cpu"
	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/models"
	"github.com/mamba2web/mamba2/tokenizer"
)

func main() {
	quant := flag.String("quantize", "", "int8 or int4 (default: none)")
	group := flag.Int("group-size", 0, "int4's group size (default 128)")
	embedding := flag.String("quantize-embedding", "", "the embedding's format with --quantize: int8 (default) or int4")
	prompt := flag.String("prompt", "", "the prompt")
	n := flag.Int("max-new-tokens", 16, "tokens to generate")
	flag.Parse()
	if err := run(*quant, *embedding, *group, *prompt, *n); err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(1)
	}
}

func run(quant, embedding string, group int, prompt string, n int) error {
	var q model.Quant
	if quant != "" {
		f, err := model.ParseFormat(quant)
		if err != nil {
			return err
		}
		q = model.Quant{Format: f, GroupSize: group}
	}
	if embedding != "" {
		e, err := model.ParseFormat(embedding)
		if err != nil {
			return err
		}
		q.Embedding = e
	}
	fsys := models.Tiny()
	m, err := model.Load(fsys, cpu.New(), model.LoadOptions{Quantize: q})
	if err != nil {
		return err
	}
	f, err := fsys.Open("tokenizer.json")
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := tokenizer.Load(f)
	if err != nil {
		return err
	}
	ids, err := tok.EncodeChecked(prompt)
	if err != nil {
		return err
	}
	o := model.Options{MaxNewTokens: n, Decode: tok.Decode}
	if err := o.Validate(); err != nil {
		return err
	}
	res, err := m.Generate(context.Background(), ids, o)
	if err != nil {
		return err
	}
	out := res.IDs
	if out == nil {
		out = []int{}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"ids": out, "text": res.Text})
}
