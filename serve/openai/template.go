package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/ardanlabs/jinja"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/tokenizer"
)

// ChatTemplate turns a conversation into the prompt text a chat model was
// trained on, as transformers' apply_chat_template does: a Jinja template
// (with HF's trim_blocks and lstrip_blocks, which the jinja package
// applies) rendered with messages, bos_token, eos_token and
// add_generation_prompt. The rendered text already holds any BOS the
// template writes, so it is tokenized without adding special tokens.
type ChatTemplate struct {
	tmpl *jinja.Template
	// BOS and EOS are the tokenizer's bos_token and eos_token strings
	// ("" when tokenizer_config.json names none).
	BOS, EOS string
	// Source says where the template came from, for messages.
	Source string
}

// Message is one turn of a conversation: its role (system, developer,
// user, assistant) and its text.
type Message struct {
	Role    string
	Content string
	Name    string // optional participant name, passed to the template as message.name
}

// ErrNoChatTemplate is returned by LoadChatTemplate when the model has
// no chat template: a base model, such as the embedded mamba2-go-tiny.
var ErrNoChatTemplate = errors.New("the model has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja)")

// tokenizerConfig is what this package reads of tokenizer_config.json.
type tokenizerConfig struct {
	ChatTemplate json.RawMessage `json:"chat_template"`
	BOS          json.RawMessage `json:"bos_token"`
	EOS          json.RawMessage `json:"eos_token"`
}

// LoadChatTemplate reads the chat template of a model folder, where
// transformers looks for it: chat_template.jinja (the file newer versions
// save), else the chat_template of tokenizer_config.json, which is a
// string or a list of {"name", "template"} from which "default" is used.
// override, when not "", is the template's text instead (--chat-template)
// and overrideName names it. bos_token and eos_token come from
// tokenizer_config.json either way, as strings or as added-token objects
// ({"content": "<s>", ...}). Without any template it returns
// ErrNoChatTemplate.
func LoadChatTemplate(fsys fs.FS, override, overrideName string) (*ChatTemplate, error) {
	var cfg tokenizerConfig
	// Size-limited reads: a model folder is untrusted input.
	data, err := loader.ReadSideFile(fsys, "tokenizer_config.json")
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &cfg); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %v", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("tokenizer_config.json: %v", err)
	}
	bos, err := tokenString(cfg.BOS)
	if err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: bos_token: %v", err)
	}
	eos, err := tokenString(cfg.EOS)
	if err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: eos_token: %v", err)
	}
	if override != "" {
		return ParseChatTemplate(override, bos, eos, overrideName)
	}
	if src, err := loader.ReadSideFile(fsys, "chat_template.jinja"); err == nil {
		return ParseChatTemplate(string(src), bos, eos, "chat_template.jinja")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chat_template.jinja: %v", err)
	}
	src, err := templateSource(cfg.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: chat_template: %v", err)
	}
	if src == "" {
		return nil, ErrNoChatTemplate
	}
	return ParseChatTemplate(src, bos, eos, "tokenizer_config.json")
}

// templateSource reads chat_template: absent or null (""), a string, or a
// list of named templates, of which "default" is the chat template (the
// others, such as "tool_use", serve requests this server does not take).
func templateSource(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", errors.New("want a string or a list of {\"name\", \"template\"}")
	}
	var names []string
	for _, t := range list {
		if t.Name == "default" {
			return t.Template, nil
		}
		names = append(names, fmt.Sprintf("%q", t.Name))
	}
	return "", fmt.Errorf("a list of templates without one named \"default\" (it has %s)", strings.Join(names, ", "))
}

// tokenString reads bos_token or eos_token: absent, null, a string or an
// added-token object with its text in "content".
func tokenString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var tok struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil || tok.Content == nil {
		return "", errors.New(`want a string or an object with "content"`)
	}
	return *tok.Content, nil
}

// ParseChatTemplate compiles a template's text; name says where it came
// from in errors.
func ParseChatTemplate(src, bos, eos, name string) (*ChatTemplate, error) {
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("chat template %s is empty", name)
	}
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %v", name, err)
	}
	return &ChatTemplate{tmpl: t, BOS: bos, EOS: eos, Source: name}, nil
}

// Render returns the prompt text of messages; with addGenerationPrompt the
// template ends it with the opening of an assistant turn, which the model
// then continues. A template may refuse a conversation
// (raise_exception("Conversation roles must alternate…")); that error is
// returned as the template gave it.
func (t *ChatTemplate) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	msgs := make([]any, len(messages))
	for i, m := range messages {
		v := map[string]any{"role": m.Role, "content": m.Content}
		if m.Name != "" {
			v["name"] = m.Name
		}
		msgs[i] = v
	}
	out, err := t.tmpl.Render(map[string]any{
		"messages":              msgs,
		"bos_token":             t.BOS,
		"eos_token":             t.EOS,
		"add_generation_prompt": addGenerationPrompt,
	})
	if err != nil {
		return "", fmt.Errorf("chat template %s: %v", t.Source, err)
	}
	return out, nil
}

// StopIDs are the ids that end a chat generation: the model's EOS (from
// config.json or generation_config.json) and, when it is another token of
// the vocabulary, the template's eos_token: a chat model's turns end with
// its own marker (<|im_end|>, <|eot_id|>), which config.json need not name.
func (t *ChatTemplate) StopIDs(eos int, tok *tokenizer.Tokenizer) []int {
	ids := []int{eos}
	if t != nil && t.EOS != "" && tok != nil {
		if id, ok := tok.TokenID(t.EOS); ok && id != eos {
			ids = append(ids, id)
		}
	}
	return ids
}
