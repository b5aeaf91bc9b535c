package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/mamba2web/mamba2/model"
)

// perplexityWindow is how many positions one Logits call scores: the
// state carries the sequence across windows, so the result is the same as
// one call over the whole file while host memory stays at window × vocab
// floats.
const perplexityWindow = 512

// cmdPerplexity scores a text file as one sequence: the mean negative log
// likelihood of every token given all before it, in nats, and its exp.
func cmdPerplexity(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("perplexity")
	var mf modelFlags
	mf.register(fs)
	file := fs.String("file", "", "the text to score (UTF-8); - reads stdin")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("perplexity: --file F is required")
	}
	var text []byte
	var err error
	if *file == "-" {
		text, err = io.ReadAll(stdin)
	} else {
		text, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("perplexity: %v", err)
	}
	m, tok, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Backend.Close()
	if tok == nil {
		return errors.New("perplexity: the model has no tokenizer.json to encode the text with")
	}
	ids, err := tok.EncodeChecked(string(text))
	if err != nil {
		return fmt.Errorf("perplexity: %v", err)
	}
	if len(ids) < 2 {
		return fmt.Errorf("perplexity: %s encodes to %d tokens; scoring needs at least 2", *file, len(ids))
	}
	if err := checkIDs(ids, m.Config.VocabSize); err != nil {
		return err
	}
	nll, err := perplexity(ctx, m, ids)
	if err != nil {
		return err
	}
	n := len(ids) - 1
	mean := nll / float64(n)
	return writeJSON(stdout, map[string]any{"tokens": n, "nll": mean, "ppl": math.Exp(mean)})
}

// perplexity returns the summed negative log likelihood of ids[1:], each
// given the ids before it, computed in float64 from the float32 logits.
func perplexity(ctx context.Context, m *model.Model, ids []int) (float64, error) {
	st := m.NewState(1)
	defer st.Close()
	V := m.Config.VocabSize
	var sum float64
	for start := 0; start < len(ids)-1; start += perplexityWindow {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		end := min(start+perplexityWindow, len(ids)-1) // the positions scored: each predicts the next id
		in := make([]int32, end-start)
		for i := range in {
			in[i] = int32(ids[start+i])
		}
		logits, err := st.Logits(in, nil)
		if err != nil {
			return 0, err
		}
		for i := range in {
			row := logits[i*V : (i+1)*V]
			nll, err := tokenNLL(row, ids[start+i+1])
			if err != nil {
				return 0, fmt.Errorf("perplexity: position %d: %v", start+i, err)
			}
			sum += nll
		}
	}
	return sum, nil
}

// tokenNLL is −log softmax(row)[id], by the log-sum-exp of the row.
func tokenNLL(row []float32, id int) (float64, error) {
	hi := math.Inf(-1)
	for _, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return 0, fmt.Errorf("the model computed %v (the weights or the config overflow float32)", v)
		}
		hi = max(hi, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - hi)
	}
	return hi + math.Log(s) - float64(row[id]), nil
}
