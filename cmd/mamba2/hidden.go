package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/mamba2web/mamba2/model"
)

// cmdHidden prints hidden states as transformers' Mamba2Model does with
// output_hidden_states: index k < layers is the residual stream after
// layer k, index layers the final norm's output.
func cmdHidden(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("hidden")
	var mf modelFlags
	mf.register(fs)
	idsFlag := fs.String("ids", "", "the input as comma-separated token ids")
	prompt := fs.String("prompt", "", "the input as text")
	layers := fs.String("layers", "last", "which hidden states: all, last (the final norm's output), or an index 0..num_hidden_layers")
	mean := fs.Bool("mean", false, "average each hidden state over the positions: one embedding vector each")
	if err := parse(fs, args); err != nil {
		return err
	}
	hasIDs, hasPrompt := false, false
	fs.Visit(func(f *flag.Flag) {
		hasIDs = hasIDs || f.Name == "ids"
		hasPrompt = hasPrompt || f.Name == "prompt"
	})
	if hasIDs == hasPrompt {
		return errors.New("hidden: give exactly one of --ids and --prompt")
	}
	m, tok, err := mf.load(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Backend.Close()
	var ids []int
	if hasPrompt {
		if tok == nil {
			return errors.New("--prompt needs a tokenizer.json in the model folder (or use --ids)")
		}
		if ids, err = tok.EncodeChecked(*prompt); err != nil {
			return err
		}
	} else if ids, err = parseIDs(*idsFlag); err != nil {
		return err
	}
	if len(ids) == 0 {
		return errors.New("hidden: the input is empty")
	}
	if err := checkIDs(ids, m.Config.VocabSize); err != nil {
		return err
	}
	L := m.Config.Layers
	var pick []int
	switch *layers {
	case "all":
		for k := 0; k <= L; k++ {
			pick = append(pick, k)
		}
	case "last":
		pick = []int{L}
	default:
		k, err := strconv.Atoi(*layers)
		if err != nil || k < 0 || k > L {
			return fmt.Errorf("--layers %q: want all, last or an index from 0 to %d", *layers, L)
		}
		pick = []int{k}
	}
	in := make([]int32, len(ids))
	for i, v := range ids {
		in[i] = int32(v)
	}
	st := m.NewState(1)
	defer st.Close()
	hs, err := st.HiddenStates(in, nil)
	if err != nil {
		return err
	}
	D := m.Config.Hidden
	out := make([]any, 0, len(pick))
	for _, k := range pick {
		if *mean {
			out = append(out, model.MeanPool(hs[k], nil, 1, D)[0])
			continue
		}
		rows := make([][]float32, len(ids))
		for p := range rows {
			rows[p] = hs[k][p*D : (p+1)*D]
		}
		out = append(out, rows)
	}
	return writeJSON(stdout, map[string]any{"layers": pick, "hidden_states": out})
}
