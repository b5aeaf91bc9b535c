package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testdata/oracle.json holds outputs of the Rust tokenizers library for the
// three real tokenizers, a small synthetic one (suffix-bpe.json) and
// variants of them (see testdata/oracle/gen.py): a few hundred texts each
// (edge cases, Go source, random Unicode, special tokens) and random id
// lists to decode.
type oracleFile struct {
	Tokenizers []oracleTokenizer `json:"tokenizers"`
}

type oracleTokenizer struct {
	Name            string                     `json:"name"`
	Base            string                     `json:"base"`
	Patch           map[string]json.RawMessage `json:"patch"`
	ModelPatch      map[string]json.RawMessage `json:"model_patch"`
	AddedAppend     []json.RawMessage          `json:"added_append"`
	AddedDropPrefix *string                    `json:"added_drop_prefix"`
	Cases           []oracleCase               `json:"cases"`
	Decodes         []oracleCase               `json:"decodes"`
}

type oracleCase struct {
	Text        *string `json:"text"`
	IDs         []int   `json:"ids"`
	Decoded     *string `json:"decoded"`
	DecodedSkip *string `json:"decoded_skip"`
}

// patched builds a variant's tokenizer.json the way gen.py does.
func (o *oracleTokenizer) patched(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", o.Base))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	must(t, json.Unmarshal(data, &top))
	for k, v := range o.Patch {
		top[k] = v
	}
	var model map[string]json.RawMessage
	must(t, json.Unmarshal(top["model"], &model))
	for k, v := range o.ModelPatch {
		if k == "merges" && string(v) == `"LEGACY"` {
			var pairs [][2]string
			must(t, json.Unmarshal(model["merges"], &pairs))
			legacy := make([]string, len(pairs))
			for i, p := range pairs {
				legacy[i] = p[0] + " " + p[1]
			}
			v, err = json.Marshal(legacy)
			must(t, err)
		}
		model[k] = v
	}
	top["model"], err = json.Marshal(model)
	must(t, err)
	var added []json.RawMessage
	must(t, json.Unmarshal(top["added_tokens"], &added))
	if o.AddedDropPrefix != nil {
		added = slices.DeleteFunc(added, func(raw json.RawMessage) bool {
			var tok struct{ Content string }
			must(t, json.Unmarshal(raw, &tok))
			return strings.HasPrefix(tok.Content, *o.AddedDropPrefix)
		})
	}
	top["added_tokens"], err = json.Marshal(append(added, o.AddedAppend...))
	must(t, err)
	out, err := json.Marshal(top)
	must(t, err)
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOracle(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "oracle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var of oracleFile
	must(t, json.Unmarshal(data, &of))
	if len(of.Tokenizers) < 3 {
		t.Fatalf("oracle.json has %d tokenizers", len(of.Tokenizers))
	}
	for _, o := range of.Tokenizers {
		t.Run(o.Name, func(t *testing.T) {
			tk, err := Load(bytes.NewReader(o.patched(t)))
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			check := func(what string, got, want any) {
				t.Helper()
				if bad < 10 {
					t.Errorf("%s\n got %q\nwant %q", what, got, want)
				}
				bad++
			}
			for _, c := range o.Cases {
				if got := tk.Encode(*c.Text); !slices.Equal(got, c.IDs) {
					check("Encode("+strconvQuote(*c.Text)+")", got, c.IDs)
				}
			}
			for _, c := range append(o.Cases, o.Decodes...) {
				want := c.Decoded
				if want == nil {
					want = c.Text
				}
				wantSkip := c.DecodedSkip
				if wantSkip == nil {
					wantSkip = want
				}
				if got := tk.Decode(c.IDs); got != *want {
					check("Decode", got, *want)
				}
				if got := tk.DecodeWith(c.IDs, true); got != *wantSkip {
					check("DecodeWith(skip)", got, *wantSkip)
				}
			}
			if bad > 0 {
				t.Errorf("%d mismatches", bad)
			}
		})
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
