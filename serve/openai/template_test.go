package openai

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/mamba2web/mamba2/tokenizer"
)

// chatML is the ChatML template (Qwen2, many fine-tunes), as it appears in
// tokenizer_config.json.
const chatML = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

// llama3 is Meta-Llama-3-8B-Instruct's template: the BOS before the first
// message, each message's content trimmed (the filter binds tighter than
// +), headers, <|eot_id|> after each turn.
const llama3 = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`

// alternating refuses a conversation whose roles do not alternate, as
// Llama-2's and Mistral's templates do, and writes the system prompt with
// block tags on their own lines (trim_blocks and lstrip_blocks matter).
const alternating = `{{ bos_token }}
{%- for message in messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
[INST] {{ message['content'] }} [/INST]
    {%- else %}
 {{ message['content'] }}{{ eos_token }}
    {%- endif %}
{%- endfor %}`

func TestChatTemplateRender(t *testing.T) {
	conv := []Message{{Role: "system", Content: "You are helpful."}, {Role: "user", Content: " Hi \n"}}
	for _, tc := range []struct {
		name     string
		tmpl     string
		bos, eos string
		messages []Message
		gen      bool
		want     string
		wantErr  string
	}{
		{name: "ChatML with generation prompt", tmpl: chatML, messages: conv, gen: true,
			want: "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n Hi \n<|im_end|>\n<|im_start|>assistant\n"},
		{name: "ChatML without", tmpl: chatML, messages: conv[:1],
			want: "<|im_start|>system\nYou are helpful.<|im_end|>\n"},
		{name: "Llama 3 with generation prompt", tmpl: llama3, bos: "<|begin_of_text|>", eos: "<|eot_id|>", messages: conv, gen: true,
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{name: "Llama 3 multi-turn without", tmpl: llama3, bos: "<|begin_of_text|>", messages: []Message{
			{Role: "user", Content: "2+2?"}, {Role: "assistant", Content: "4"}},
			want: "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"},
		{name: "alternating, block tags trimmed", tmpl: alternating, bos: "<s>", eos: "</s>", messages: []Message{
			{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}, {Role: "user", Content: "c"}},
			// {%- strips the newline before each tag, trim_blocks the one after:
			// the known Mistral layout.
			want: "<s>[INST] a [/INST] b</s>[INST] c [/INST]"},
		{name: "raise_exception", tmpl: alternating, messages: []Message{{Role: "assistant", Content: "b"}},
			wantErr: "Conversation roles must alternate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, err := ParseChatTemplate(tc.tmpl, tc.bos, tc.eos, "test")
			if err != nil {
				t.Fatal(err)
			}
			got, err := ct.Render(tc.messages, tc.gen)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("rendered\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestLoadChatTemplate(t *testing.T) {
	named := `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}], "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"}`
	for _, tc := range []struct {
		name     string
		files    map[string]string
		override string
		want     string // rendered with no messages
		wantErr  string
	}{
		{name: "string", files: map[string]string{"tokenizer_config.json": `{"chat_template": "S{{ eos_token }}", "eos_token": "</s>"}`}, want: "S</s>"},
		{name: "list: default, added-token bos", files: map[string]string{"tokenizer_config.json": named}, want: "D<s>"},
		{name: "chat_template.jinja first", files: map[string]string{"tokenizer_config.json": named, "chat_template.jinja": "J{{ bos_token }}"}, want: "J<s>"},
		{name: "override", files: map[string]string{"tokenizer_config.json": named}, override: "O{{ eos_token }}", want: "O</s>"},
		{name: "override without tokenizer_config.json", override: "O", want: "O"},
		{name: "none", files: map[string]string{"tokenizer_config.json": `{"eos_token": "</s>"}`}, wantErr: ErrNoChatTemplate.Error()},
		{name: "no files", wantErr: ErrNoChatTemplate.Error()},
		{name: "list without default", files: map[string]string{"tokenizer_config.json": `{"chat_template": [{"name": "rag", "template": "R"}]}`}, wantErr: `without one named "default" (it has "rag")`},
		{name: "number", files: map[string]string{"tokenizer_config.json": `{"chat_template": 3}`}, wantErr: "chat_template: want a string or a list"},
		{name: "bad bos", files: map[string]string{"tokenizer_config.json": `{"chat_template": "x", "bos_token": 1}`}, wantErr: "bos_token: want a string"},
		{name: "too large", files: map[string]string{"tokenizer_config.json": `{"x": "` + strings.Repeat("x", 1<<20) + `"}`}, wantErr: "tokenizer_config.json"},
		{name: "bad json", files: map[string]string{"tokenizer_config.json": `{`}, wantErr: "tokenizer_config.json: unexpected end"},
		{name: "syntax error", files: map[string]string{"tokenizer_config.json": `{"chat_template": "{% for %}"}`}, wantErr: "chat template tokenizer_config.json: jinja"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range tc.files {
				fsys[name] = &fstest.MapFile{Data: []byte(data)}
			}
			ct, err := LoadChatTemplate(fsys, tc.override, "override.jinja")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if tc.wantErr == ErrNoChatTemplate.Error() && !errors.Is(err, ErrNoChatTemplate) {
					t.Errorf("error %v is not ErrNoChatTemplate", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := ct.Render(nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("rendered %q, want %q", got, tc.want)
			}
		})
	}
}

// minimalTokenizer has the byte-level letters a and b and two special
// tokens.
const minimalTokenizer = `{
  "version": "1.0",
  "added_tokens": [{"id": 3, "content": "<eos>", "special": true, "normalized": false},
                   {"id": 5, "content": "<|im_end|>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<eos>": 3, "Ġ": 4, "<|im_end|>": 5}, "merges": ["a b"]}
}`

func TestStopIDs(t *testing.T) {
	tok, err := tokenizer.Load(strings.NewReader(minimalTokenizer))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		eos  string
		want []int
	}{
		{"the template's turn end", "<|im_end|>", []int{3, 5}},
		{"the same as the model's", "<eos>", []int{3}},
		{"not a token", "</s>", []int{3}},
		{"none", "", []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, err := ParseChatTemplate(chatML, "", tc.eos, "test")
			if err != nil {
				t.Fatal(err)
			}
			if got := ct.StopIDs(3, tok); !slices.Equal(got, tc.want) {
				t.Errorf("StopIDs = %v, want %v", got, tc.want)
			}
		})
	}
	var none *ChatTemplate
	if got := none.StopIDs(3, tok); !slices.Equal(got, []int{3}) {
		t.Errorf("no template: %v", got)
	}
}
