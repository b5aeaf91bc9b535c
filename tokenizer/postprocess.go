package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A postProcessor adds the special tokens a model expects around a single
// sequence (BOS, CLS/SEP, ...). Only single sequences are supported: the
// runtime never encodes pairs.
type postProcessor interface {
	process(ids []int) []int
}

// wrapProcessor puts fixed ids before and after the sequence; Bert, Roberta
// and single-sequence TemplateProcessing all reduce to it.
type wrapProcessor struct {
	before, after []int
}

func (w wrapProcessor) process(ids []int) []int {
	out := make([]int, 0, len(w.before)+len(ids)+len(w.after))
	out = append(out, w.before...)
	out = append(out, ids...)
	return append(out, w.after...)
}

type seqProcessor []postProcessor

func (s seqProcessor) process(ids []int) []int {
	for _, p := range s {
		ids = p.process(ids)
	}
	return ids
}

// nopProcessor is the ByteLevel post-processor, which only adjusts
// offsets and never changes ids.
type nopProcessor struct{}

func (nopProcessor) process(ids []int) []int { return ids }

// parsePostProcessor builds a post-processor from its JSON; nil means none.
func parsePostProcessor(raw json.RawMessage) (postProcessor, error) {
	if isNull(raw) {
		return nil, nil
	}
	typ, err := typeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	bad := func(err error) error { return fmt.Errorf("post_processor %s: %w", typ, err) }
	switch typ {
	case "ByteLevel":
		return nopProcessor{}, nil
	case "Sequence":
		var v struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		var seq seqProcessor
		for _, r := range v.Processors {
			p, err := parsePostProcessor(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	case "BertProcessing", "RobertaProcessing":
		// Both hold [token, id] pairs; the id is used as written.
		var v struct {
			Sep []json.RawMessage `json:"sep"`
			Cls []json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		cls, err := tokenPair(v.Cls)
		if err != nil {
			return nil, bad(fmt.Errorf("cls: %w", err))
		}
		sep, err := tokenPair(v.Sep)
		if err != nil {
			return nil, bad(fmt.Errorf("sep: %w", err))
		}
		return wrapProcessor{before: []int{cls}, after: []int{sep}}, nil
	case "TemplateProcessing":
		var v struct {
			Single        []map[string]json.RawMessage `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, bad(err)
		}
		var w wrapProcessor
		seen := false
		for _, item := range v.Single {
			if len(item) != 1 {
				return nil, bad(errors.New("template item must have one key"))
			}
			for k, body := range item {
				var ref struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(body, &ref); err != nil {
					return nil, bad(err)
				}
				switch k {
				case "Sequence":
					if ref.ID != "A" || seen {
						return nil, bad(fmt.Errorf("single template must use $A once, not %q", ref.ID))
					}
					seen = true
				case "SpecialToken":
					st, ok := v.SpecialTokens[ref.ID]
					if !ok {
						return nil, bad(fmt.Errorf("missing special token %q", ref.ID))
					}
					for _, id := range st.IDs {
						if id < 0 || id > maxTokenID {
							return nil, bad(fmt.Errorf("special token %q: id %d out of range", ref.ID, id))
						}
					}
					if seen {
						w.after = append(w.after, st.IDs...)
					} else {
						w.before = append(w.before, st.IDs...)
					}
				default:
					return nil, bad(fmt.Errorf("unknown template item %q", k))
				}
			}
		}
		if !seen {
			return nil, bad(errors.New("single template lacks $A"))
		}
		return w, nil
	}
	return nil, fmt.Errorf("unsupported post_processor %q", typ)
}

// tokenPair reads a ["token", id] pair.
func tokenPair(raw []json.RawMessage) (int, error) {
	if len(raw) != 2 {
		return 0, errors.New(`want ["token", id]`)
	}
	var id int
	if err := json.Unmarshal(raw[1], &id); err != nil {
		return 0, err
	}
	if id < 0 || id > maxTokenID {
		return 0, fmt.Errorf("id %d out of range", id)
	}
	return id, nil
}
