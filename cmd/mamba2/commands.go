package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/tokenizer"
)

func cmdLogits(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("logits")
	var mf modelFlags
	mf.register(fs)
	var idsFlags stringList
	fs.Var(&idsFlags, "ids", "comma-separated token ids (repeat it for a batch: the rows run together, left-padded)")
	last := fs.Bool("last", false, "print only the last position's logits")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(idsFlags) == 0 {
		idsFlags = stringList{""} // parseIDs says that --ids is missing
	}
	var batch [][]int
	for _, f := range idsFlags {
		ids, err := parseIDs(f)
		if err != nil {
			return err
		}
		batch = append(batch, ids)
	}
	m, _, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Backend.Close()
	for _, ids := range batch {
		if err := checkIDs(ids, m.Config.VocabSize); err != nil {
			return err
		}
	}
	if len(batch) > 1 {
		return logitsBatch(m, batch, *last, stdout)
	}
	ids := batch[0]
	in := make([]int32, len(ids))
	for i, v := range ids {
		in[i] = int32(v)
	}
	st := m.NewState(1)
	defer st.Close()
	var flat []float32
	if *last {
		out, err := st.Forward(in, nil)
		if err != nil {
			return err
		}
		if flat, err = m.Backend.Read(out); err != nil {
			return err
		}
	} else if flat, err = st.Logits(in, nil); err != nil {
		return err
	}
	rows, err := logitRows(flat, m.Config.VocabSize, len(ids)-len(flat)/m.Config.VocabSize)
	if err != nil {
		return err
	}
	return writeJSON(stdout, map[string]any{"logits": rows})
}

// logitRows splits flat logits into rows of V, refusing a row that holds a
// NaN or an infinity; pos0 is the prompt position of the first row.
func logitRows(flat []float32, V, pos0 int) ([][]float32, error) {
	rows := make([][]float32, 0, len(flat)/V)
	for i := 0; i < len(flat); i += V {
		row := flat[i : i+V]
		if j := slices.IndexFunc(row, func(v float32) bool { return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) }); j >= 0 {
			return nil, fmt.Errorf("logits: the model computed %v for token %d at position %d (the weights or the config overflow float32)", row[j], j, pos0+i/V)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// logitsBatch runs the rows of batch as one batch: left-padded to the
// longest with the pad token and masked (SPEC §2.2: each row then computes
// what it computes alone), and prints {"results": [{"logits": ...}, ...]},
// each row's logits at its own positions (or its last one), in input order.
func logitsBatch(m *model.Model, batch [][]int, last bool, stdout io.Writer) error {
	B, V := len(batch), m.Config.VocabSize
	L := 0
	for _, ids := range batch {
		L = max(L, len(ids))
	}
	pad := m.Config.PAD
	if pad < 0 || pad >= V {
		pad = 0
	}
	in, mask := make([]int32, B*L), make([]float32, B*L)
	for b, ids := range batch {
		off := L - len(ids)
		for j := range off {
			in[b*L+j] = int32(pad)
		}
		for j, v := range ids {
			in[b*L+off+j], mask[b*L+off+j] = int32(v), 1
		}
	}
	st := m.NewState(B)
	defer st.Close()
	var flat []float32
	var err error
	if last {
		out, err := st.Forward(in, mask)
		if err != nil {
			return err
		}
		if flat, err = m.Backend.Read(out); err != nil {
			return err
		}
	} else if flat, err = st.Logits(in, mask); err != nil {
		return err
	}
	results := make([]map[string]any, B)
	for b, ids := range batch {
		var row []float32
		pos0 := len(ids) - 1
		if last {
			row = flat[b*V : (b+1)*V]
		} else {
			pos0 = 0
			row = flat[(b*L+L-len(ids))*V : (b+1)*L*V]
		}
		rows, err := logitRows(row, V, pos0)
		if err != nil {
			return fmt.Errorf("row %d: %v", b+1, err)
		}
		results[b] = map[string]any{"logits": rows}
	}
	return writeJSON(stdout, map[string]any{"results": results})
}

// genFlags are generate's and run's sampling options.
type genFlags struct {
	modelFlags
	maxNew      int
	temperature float64
	topK        int
	topP        float64
	minP        float64
	repetition  float64
	presence    float64
	frequency   float64
	seed        uint64
	seedSet     bool // --seed was given; otherwise a seed is drawn
	stops       stringList
	stats       bool
	saveState   string
	loadState   string
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (g *genFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&g.maxNew, "max-new-tokens", 64, "most tokens to generate")
	fs.Float64Var(&g.temperature, "temperature", 0, "sampling temperature; 0 is greedy")
	fs.IntVar(&g.topK, "top-k", 0, "keep the K most likely tokens (0: all)")
	fs.Float64Var(&g.topP, "top-p", 1, "keep the most likely tokens up to this probability mass")
	fs.Float64Var(&g.minP, "min-p", 0, "keep the tokens at least this likely relative to the most likely one (0: all)")
	fs.Float64Var(&g.repetition, "repetition-penalty", 1, "divide (multiply when negative) the logits of tokens in the prompt or generated, as transformers does (1: none)")
	fs.Float64Var(&g.presence, "presence-penalty", 0, "lower the logit of every generated token by this, once (OpenAI; -2 to 2)")
	fs.Float64Var(&g.frequency, "frequency-penalty", 0, "lower the logit of a generated token by this for each time it was generated (OpenAI; -2 to 2)")
	fs.Uint64Var(&g.seed, "seed", 0, "random seed for sampling (default: drawn at random, printed by --json)")
	fs.Var(&g.stops, "stop", "stop when the text contains this `string` (repeatable)")
	fs.BoolVar(&g.stats, "stats", false, "print prefill and decode speed and the time to the first token on stderr")
	fs.StringVar(&g.saveState, "save-state", "", "write the state after the prompt (with --max-new-tokens 0: prefill only) or after generating to this `file`")
	fs.StringVar(&g.loadState, "load-state", "", "continue a state saved by --save-state `file` of the same model: the prompt is what follows it")
}

// options reads the flags of fs (parsed) into generation options; without
// --seed it draws one, so that sampled runs differ unless asked not to.
func (g *genFlags) options(fs *flag.FlagSet) (model.Options, error) {
	fs.Visit(func(f *flag.Flag) { g.seedSet = g.seedSet || f.Name == "seed" })
	if !g.seedSet {
		g.seed = rand.Uint64() >> 11 // 53 bits: exact as a JSON number in JavaScript too
	}
	if g.maxNew < 0 || (g.maxNew == 0 && g.saveState == "") {
		return model.Options{}, fmt.Errorf("--max-new-tokens must be positive (0 only with --save-state, to prefill), got %d", g.maxNew)
	}
	o := model.Options{
		Sampling: model.Sampling{Temperature: g.temperature, TopK: g.topK, TopP: g.topP, MinP: g.minP,
			RepetitionPenalty: g.repetition, PresencePenalty: g.presence, FrequencyPenalty: g.frequency, Seed: g.seed},
		MaxNewTokens: g.maxNew,
		StopStrings:  g.stops,
	}
	return o, o.Validate()
}

func cmdGenerate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("generate")
	var g genFlags
	g.modelFlags.register(fs)
	g.register(fs)
	var idsFlags, promptFlags stringList
	fs.Var(&idsFlags, "ids", "prompt as comma-separated token ids (repeatable: the prompts run together)")
	fs.Var(&promptFlags, "prompt", "prompt `text` (repeatable: the prompts run together)")
	promptsFile := fs.String("prompts-file", "", "run the prompts of this `file` together, one per line")
	slots := fs.Int("slots", 0, "with several prompts, how many run at once (default: all, at most 32)")
	asJSON := fs.Bool("json", false, `print {"ids": [...], "text": "..."} at the end instead of streaming ({"results": [...]} for several prompts)`)
	if err := parse(fs, args); err != nil {
		return err
	}
	sources := 0
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "ids" || f.Name == "prompt" || f.Name == "prompts-file" {
			sources++
		}
	})
	if sources != 1 || len(idsFlags) > 0 && len(promptFlags) > 0 {
		return errors.New("generate: give exactly one of --ids and --prompt (each repeatable), or --prompts-file")
	}
	if *slots < 0 {
		return fmt.Errorf("--slots must be positive, got %d", *slots)
	}
	opts, err := g.options(fs)
	if err != nil {
		return err
	}
	var texts []string
	if *promptsFile != "" {
		if texts, err = readPrompts(*promptsFile); err != nil {
			return err
		}
	} else {
		texts = promptFlags
	}
	m, tok, err := g.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Backend.Close()
	var prompts [][]int
	if len(texts) > 0 {
		if tok == nil {
			return errors.New("--prompt needs a tokenizer.json in the model folder (or use --ids)")
		}
		for _, text := range texts {
			ids, err := tok.EncodeChecked(text)
			if err != nil {
				return err
			}
			prompts = append(prompts, ids)
		}
	} else {
		for _, f := range idsFlags {
			ids, err := parseIDs(f)
			if err != nil {
				return err
			}
			prompts = append(prompts, ids)
		}
	}
	if len(prompts) > 1 {
		if g.saveState != "" || g.loadState != "" {
			return errors.New("--save-state and --load-state take one prompt")
		}
		n := *slots
		if n == 0 {
			n = min(len(prompts), maxSlots)
		}
		return generateBatch(ctx, m, tok, prompts, n, opts, *asJSON, g.stats, stdout, stderr)
	}
	if g.saveState == "" && g.loadState == "" {
		return generate(ctx, m, tok, prompts[0], opts, *asJSON, g.stats, stdout, stderr)
	}
	return generateSaved(ctx, m, tok, prompts[0], opts, g, *asJSON, stdout, stderr)
}

// maxSlots bounds the sequences generate runs at once by default: each
// holds its conv and SSM state on the device (tens of MB per sequence for
// the larger models), and past a few dozen rows a step is no longer cheaper
// per row.
const maxSlots = 32

// readPrompts reads a prompts file: one prompt per line (a final newline
// ends the last line; CRLF is a line end too). An empty line is an error,
// not skipped, so results stay in step with the file's lines.
func readPrompts(name string) ([]string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--prompts-file: %v", err)
	}
	text := strings.TrimSuffix(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	if text == "" {
		return nil, fmt.Errorf("--prompts-file %s holds no prompt", name)
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if l == "" {
			return nil, fmt.Errorf("--prompts-file %s: line %d is empty", name, i+1)
		}
	}
	return lines, nil
}

// generateBatch runs prompts together through a model.Scheduler of slots
// sequences (each gets what it would get alone) and prints the results in
// input order: {"results": [{"ids", "text", "reason", "seed"}, ...]} with
// --json, else each text (or ids) on its own line. Every prompt has the
// same options and seed, so a row equals generate with that prompt alone.
func generateBatch(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, prompts [][]int, slots int, o model.Options, asJSON, stats bool, stdout, stderr io.Writer) error {
	for i, ids := range prompts {
		if len(ids) == 0 {
			return fmt.Errorf("prompt %d is empty", i+1)
		}
		if err := checkIDs(ids, m.Config.VocabSize); err != nil {
			return fmt.Errorf("prompt %d: %v", i+1, err)
		}
	}
	if tok != nil {
		o.Decode = tok.Decode
	} else if len(o.StopStrings) > 0 {
		return errors.New("--stop needs a tokenizer.json in the model folder")
	}
	sched, err := model.NewScheduler(m, slots)
	if err != nil {
		return err
	}
	defer sched.Close()
	results := make([]model.Result, len(prompts))
	errs := make([]error, len(prompts))
	var wg sync.WaitGroup
	for i, ids := range prompts {
		wg.Go(func() { results[i], errs[i] = sched.Generate(ctx, ids, o) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("prompt %d: %w", i+1, err)
		}
	}
	if stats {
		for i, res := range results {
			t := res.Timing
			fmt.Fprintf(stderr, "mamba2: prompt %d: prefill %d tokens, first token after %.1f ms; decode %d tokens at %.1f tok/s (%s, %d at once)\n",
				i+1, t.PromptTokens, float64(t.FirstToken.Microseconds())/1000, t.Steps, t.DecodeRate(), m.Backend.Name(), slots)
		}
	}
	if asJSON {
		out := make([]map[string]any, len(results))
		for i, res := range results {
			ids := res.IDs
			if ids == nil {
				ids = []int{}
			}
			out[i] = map[string]any{"ids": ids, "text": res.Text, "reason": res.Reason}
			if o.Temperature > 0 {
				out[i]["seed"] = o.Seed
			}
		}
		return writeJSON(stdout, map[string]any{"results": out})
	}
	for _, res := range results {
		line := res.Text
		if tok == nil {
			parts := make([]string, len(res.IDs))
			for j, id := range res.IDs {
				parts[j] = strconv.Itoa(id)
			}
			line = strings.Join(parts, " ")
		}
		if _, err := fmt.Fprintln(stdout, line); err != nil {
			return err
		}
	}
	return nil
}

// generateSaved is generate with --load-state (the state continues a
// saved one) and --save-state (written after the prompt, or after the
// generation; atomically, so an interrupted run never leaves half a file).
func generateSaved(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, ids []int, o model.Options, g genFlags, asJSON bool, stdout, stderr io.Writer) error {
	if err := checkIDs(ids, m.Config.VocabSize); err != nil {
		return err
	}
	st := m.NewState(1)
	defer st.Close()
	if g.loadState != "" {
		data, err := os.ReadFile(g.loadState)
		if err != nil {
			return fmt.Errorf("--load-state: %v", err)
		}
		if err := st.Restore(data); err != nil {
			return fmt.Errorf("--load-state %s: %v", g.loadState, err)
		}
	}
	save := func() error {
		data, err := st.Save()
		if err != nil {
			return err
		}
		_, err = writeAtomically(g.saveState, func(w io.Writer) error { _, err := w.Write(data); return err })
		if err != nil {
			return fmt.Errorf("--save-state: %v", err)
		}
		return nil
	}
	if o.MaxNewTokens == 0 { // prefill only
		in := make([]int32, len(ids))
		for i, v := range ids {
			in[i] = int32(v)
		}
		if len(in) == 0 {
			return errors.New("the prompt is empty")
		}
		if _, err := st.Forward(in, nil); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
		return writeJSON(stdout, map[string]any{"saved": g.saveState, "positions": st.Pos})
	}
	o.State = st
	if err := generate(ctx, m, tok, ids, o, asJSON, g.stats, stdout, stderr); err != nil {
		return err
	}
	if g.saveState != "" {
		return save()
	}
	return nil
}

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("run")
	var g genFlags
	g.modelFlags.register(fs)
	g.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := g.options(fs)
	if err != nil {
		return err
	}
	text, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("reading the prompt from stdin: %v", err)
	}
	m, tok, err := g.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Backend.Close()
	if tok == nil {
		return errors.New("run needs a tokenizer.json in the model folder")
	}
	ids, err := tok.EncodeChecked(string(text))
	if err != nil {
		return err
	}
	if g.saveState != "" || g.loadState != "" {
		err = generateSaved(ctx, m, tok, ids, opts, g, false, stdout, stderr)
	} else {
		err = generate(ctx, m, tok, ids, opts, false, g.stats, stdout, stderr)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout)
	return err
}

// generate runs the model and streams text (or ids, without a tokenizer), or
// prints one JSON object at the end.
//
// With --json the object also holds the seed when sampling, so a run can be
// repeated; stats prints the run's speed on stderr.
func generate(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, ids []int, o model.Options, asJSON, stats bool, stdout, stderr io.Writer) error {
	if len(ids) == 0 {
		return errors.New("the prompt is empty")
	}
	if err := checkIDs(ids, m.Config.VocabSize); err != nil {
		return err
	}
	if tok != nil {
		o.Decode = tok.Decode
	} else if len(o.StopStrings) > 0 {
		return errors.New("--stop needs a tokenizer.json in the model folder")
	}
	if !asJSON {
		if tok != nil {
			o.OnText = func(s string) error { _, err := io.WriteString(stdout, s); return err }
		} else {
			first := true
			o.OnToken = func(id int) error {
				sep := " "
				if first {
					sep, first = "", false
				}
				_, err := fmt.Fprintf(stdout, "%s%d", sep, id)
				return err
			}
		}
	}
	res, err := m.Generate(ctx, ids, o)
	if err != nil {
		return err
	}
	if stats {
		t := res.Timing
		fmt.Fprintf(stderr, "mamba2: prefill %d tokens at %.0f tok/s, first token after %.1f ms; decode %d tokens at %.1f tok/s (%s)\n",
			t.PromptTokens, t.PrefillRate(), float64(t.FirstToken.Microseconds())/1000, t.Steps, t.DecodeRate(), m.Backend.Name())
	}
	if asJSON {
		out := res.IDs
		if out == nil {
			out = []int{}
		}
		v := map[string]any{"ids": out, "text": res.Text}
		if o.Temperature > 0 {
			v["seed"] = o.Seed
		}
		return writeJSON(stdout, v)
	}
	if tok == nil {
		_, err = fmt.Fprintln(stdout)
	}
	return err
}

func cmdTokenize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize")
	var tf tokFlags
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	tok, err := tf.load(ctx, stderr)
	if err != nil {
		return err
	}
	text, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	ids, err := tok.EncodeChecked(string(text))
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []int{}
	}
	return writeJSON(stdout, map[string]any{"ids": ids})
}

func cmdDetokenize(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("detokenize")
	var tf tokFlags
	tf.register(fs)
	idsFlag := fs.String("ids", "", "comma-separated token ids")
	if err := parse(fs, args); err != nil {
		return err
	}
	tok, err := tf.load(ctx, stderr)
	if err != nil {
		return err
	}
	var ids []int
	if strings.TrimSpace(*idsFlag) != "" {
		if ids, err = parseIDs(*idsFlag); err != nil {
			return err
		}
	}
	text, err := tok.DecodeChecked(ids)
	if err != nil {
		return err
	}
	return writeJSON(stdout, map[string]any{"text": text})
}

// tokFlags choose the tokenizer of tokenize and detokenize: a file, or the
// tokenizer.json of a model folder or URL, by default the embedded model's.
type tokFlags struct {
	file  string
	model modelFlags
}

func (t *tokFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.file, "tokenizer", "", "a tokenizer.json file (instead of --model)")
	fs.StringVar(&t.model.model, "model", "", "model folder or http(s) URL whose tokenizer.json to use; default: the embedded mamba2-go-tiny")
}

func (t *tokFlags) load(ctx context.Context, stderr io.Writer) (*tokenizer.Tokenizer, error) {
	if t.file != "" {
		if t.model.model != "" {
			return nil, errors.New("give --tokenizer or --model, not both")
		}
		tok, err := tokenizer.LoadFile(t.file)
		if err != nil {
			return nil, fmt.Errorf("tokenizer %s: %v", t.file, err)
		}
		return tok, nil
	}
	fsys, name, err := t.model.source(ctx, stderr)
	if err != nil {
		return nil, err
	}
	f, err := fsys.Open("tokenizer.json")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s has no tokenizer.json", name)
		}
		return nil, err
	}
	defer f.Close()
	tok, err := tokenizer.Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: tokenizer.json: %v", name, err)
	}
	return tok, nil
}
