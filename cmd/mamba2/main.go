// Command mamba2 runs Mamba-2 language models: logits, generation, tokenizing.
//
// Usage:
//
//	mamba2 logits    [--model DIR] --ids 1,2,3 [--backend auto|cpu|webgpu] [--gated-norm grouped|full] [--last]
//	mamba2 generate  [--model DIR] (--ids 1,2,3 | --prompt TEXT) [--max-new-tokens N]
//	                 [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STR]...
//	                 [--backend …] [--gated-norm …] [--json]
//	mamba2 run       [--model DIR] [generate's options]   (prompt on stdin, continuation streamed)
//	mamba2 tokenize  --tokenizer FILE                        (text on stdin)
//	mamba2 detokenize --tokenizer FILE --ids 1,2
//	mamba2 bench     [--model DIR | --shape 130m|…] [--backend …]
//
// Without --model the embedded mamba2-go-tiny model is used. Every error ends
// the program with a non-zero status and one line on stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

var commands = map[string]func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error{
	"logits":     cmdLogits,
	"generate":   cmdGenerate,
	"run":        cmdRun,
	"tokenize":   cmdTokenize,
	"detokenize": cmdDetokenize,
	"bench":      cmdBench,
	"serve":      cmdServe,
	"cache":      cmdCache,
	"convert":    cmdConvert,
	"perplexity": cmdPerplexity,
	"hidden":     cmdHidden,
}

func main() {
	// SIGTERM as well as Ctrl-C cancels the context, so downloads stop
	// cleanly (a partial file is kept only in its resumable form).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintln(os.Stderr, "mamba2: "+msg)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, usage)
			return nil
		}
		if _, ok := commands[args[1]]; !ok {
			return fmt.Errorf("help: unknown command %q (want one of: %s)", args[1], commandNames())
		}
		return run(ctx, helpFor(args[1], args[2:]), stdin, stdout, stderr)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q (want one of: %s; mamba2 help lists them)", args[0], commandNames())
	}
	err := cmd(ctx, args[1:], stdin, stdout, stderr)
	if h, ok := isHelp(err); ok {
		writeHelp(stdout, h.fs)
		return nil
	}
	return err
}

func commandNames() string {
	return "logits, generate, run, tokenize, detokenize, bench, serve, cache, convert, perplexity, hidden"
}

const usage = `mamba2: Mamba-2 language models on WebGPU or the CPU

  mamba2 generate [--model DIR] (--ids 1,2,3 | --prompt TEXT) [--max-new-tokens N]
                  [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STR]
                  [--backend auto|cpu|webgpu] [--gated-norm grouped|full] [--json]
                  [--quantize int8|int4 [--group-size 128]]
  mamba2 run      [--model DIR] [generate options]     prompt on stdin, text streamed
  mamba2 logits   [--model DIR] --ids 1,2,3 [--last] [--backend …] [--gated-norm …]
  mamba2 tokenize --tokenizer FILE                      text on stdin, prints {"ids": [...]}
  mamba2 detokenize --tokenizer FILE --ids 1,2          prints {"text": "..."}
  mamba2 bench    [--model DIR | --shape 130m|370m|780m|1.3b|2.7b|codestral]
  mamba2 serve    [--models DIR] [--addr 127.0.0.1:8080] [--static DIR]   models at /models/<name>/, demo at /
  mamba2 cache    list|clear [--cache-dir DIR]          models downloaded over HTTP
  mamba2 convert  --model SRC --out DIR [--dtype f16|bf16|int8|int4]   safetensors (and a manifest) from any checkpoint
  mamba2 perplexity [--model DIR] --file F [--quantize int8|int4]      {"tokens", "nll", "ppl"} of a text
  mamba2 hidden   [--model DIR] (--ids 1,2 | --prompt TEXT) [--layers all|last|N] [--mean]   hidden states

Without --model, the embedded mamba2-go-tiny model (Go source code) is used.
mamba2 help CMD (or mamba2 CMD --help) shows every flag of a command, its
default and an example; mamba2 --version prints the version.
`
