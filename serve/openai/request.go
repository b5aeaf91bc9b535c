package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
)

// apiError is an error answered as OpenAI does: a status and
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
	// RetryAfter, in seconds, is sent as Retry-After when positive.
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string { return e.Message }

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// invalid is a 400 about one parameter of the request.
func invalid(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Type: "invalid_request_error", Param: strp(param)}
}

// sampling are the generation parameters both endpoints share.
type sampling struct {
	maxTokens        int
	maxTokensSet     bool
	temperature      float64
	topP             float64
	n                int
	stream           bool
	includeUsage     bool
	stop             []string
	seed             *int64
	presencePenalty  float64
	frequencyPenalty float64
}

// completionRequest is a parsed /v1/completions body.
type completionRequest struct {
	model   string
	prompts []promptInput
	sampling
}

// promptInput is one prompt: text, or token ids.
type promptInput struct {
	text  string
	ids   []int
	isIDs bool
}

// chatRequest is a parsed /v1/chat/completions body.
type chatRequest struct {
	model    string
	messages []Message
	sampling
}

// fieldFunc decodes one field's value (never null: a null is the field's
// absence, as OpenAI's API takes it).
type fieldFunc func(raw json.RawMessage) *apiError

// decodeFields reads a JSON object and hands each known field to its
// decoder; an unknown field, a body that is not a JSON object, or a field
// of the wrong type is a 400 naming it. Fields are decoded in name order,
// so the error for a body with several bad fields does not depend on map
// order.
func decodeFields(body []byte, fields map[string]fieldFunc) *apiError {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&obj); err != nil {
		return invalid("", "We could not parse the JSON body of your request: %v. The body must be a JSON object.", err)
	}
	if dec.More() {
		return invalid("", "We could not parse the JSON body of your request: it holds more than one JSON value.")
	}
	if obj == nil {
		return invalid("", "The body of your request must be a JSON object, not null.")
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f, ok := fields[k]
		if !ok {
			return invalid(k, "Unrecognized request argument supplied: %s", k)
		}
		if v := obj[k]; string(v) != "null" {
			if err := f(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonKind names the JSON type of raw for messages.
func jsonKind(raw json.RawMessage) string {
	switch s := strings.TrimSpace(string(raw)); {
	case s == "":
		return "nothing"
	case s[0] == '"':
		return "a string"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s == "true" || s == "false":
		return "a boolean"
	default:
		return "a number"
	}
}

func typeErr(param, want string, raw json.RawMessage) *apiError {
	return invalid(param, "Invalid type for '%s': expected %s, but got %s.", param, want, jsonKind(raw))
}

func decodeString(param string, dst *string) fieldFunc {
	return func(raw json.RawMessage) *apiError {
		if json.Unmarshal(raw, dst) != nil {
			return typeErr(param, "a string", raw)
		}
		return nil
	}
}

func decodeBool(param string, dst *bool) fieldFunc {
	return func(raw json.RawMessage) *apiError {
		if json.Unmarshal(raw, dst) != nil {
			return typeErr(param, "a boolean", raw)
		}
		return nil
	}
}

// decodeNumber reads a number within [lo, hi].
func decodeNumber(param string, dst *float64, lo, hi float64) fieldFunc {
	return func(raw json.RawMessage) *apiError {
		var v float64
		if json.Unmarshal(raw, &v) != nil {
			return typeErr(param, "a number", raw)
		}
		if math.IsNaN(v) || v < lo || v > hi {
			return invalid(param, "%v is out of range for '%s': it must be between %v and %v.", v, param, lo, hi)
		}
		*dst = v
		return nil
	}
}

// decodeInt reads an integer (a JSON number with no fraction) within
// [lo, hi].
func decodeInt(param string, dst *int, lo, hi int, set *bool) fieldFunc {
	return func(raw json.RawMessage) *apiError {
		var v float64
		if json.Unmarshal(raw, &v) != nil || v != math.Trunc(v) {
			return typeErr(param, "an integer", raw)
		}
		if v < float64(lo) || v > float64(hi) {
			return invalid(param, "%v is out of range for '%s': it must be between %d and %d.", v, param, lo, hi)
		}
		*dst = int(v)
		if set != nil {
			*set = true
		}
		return nil
	}
}

// unsupported refuses a field of OpenAI's API this server does not
// implement, unless its value is the one that means "off".
func unsupported(param string, off ...string) fieldFunc {
	return func(raw json.RawMessage) *apiError {
		s := strings.TrimSpace(string(raw))
		for _, o := range off {
			if s == o {
				return nil
			}
		}
		return invalid(param, "'%s' is not supported by this server.", param)
	}
}

// Limits of a request, besides Options.MaxTokens.
const (
	maxStops      = 4 // OpenAI's limit
	maxStopLen    = 256
	maxBodyBytes  = 8 << 20
	maxMessages   = 4096
	maxPromptList = 64
	maxChoices    = 64 // prompts × n
)

// samplingFields are the fields both endpoints take, decoded into s.
// maxTokensParam is "max_tokens" or, for chat, also
// "max_completion_tokens" (its newer name).
func samplingFields(s *sampling, maxTokens, maxN int) map[string]fieldFunc {
	s.temperature, s.topP, s.n = 1, 1, 1 // OpenAI's defaults
	f := map[string]fieldFunc{
		"max_tokens":        decodeInt("max_tokens", &s.maxTokens, 1, maxTokens, &s.maxTokensSet),
		"temperature":       decodeNumber("temperature", &s.temperature, 0, 2),
		"top_p":             decodeNumber("top_p", &s.topP, math.SmallestNonzeroFloat64, 1),
		"n":                 decodeInt("n", &s.n, 1, maxN, nil),
		"stream":            decodeBool("stream", &s.stream),
		"presence_penalty":  decodeNumber("presence_penalty", &s.presencePenalty, -2, 2),
		"frequency_penalty": decodeNumber("frequency_penalty", &s.frequencyPenalty, -2, 2),
		"user":              decodeString("user", new(string)), // for abuse tracking at OpenAI; nothing here
		"logit_bias":        unsupported("logit_bias", "{}"),
		"stream_options": func(raw json.RawMessage) *apiError {
			var o map[string]json.RawMessage
			if json.Unmarshal(raw, &o) != nil {
				return typeErr("stream_options", "an object", raw)
			}
			for k, v := range o {
				if k != "include_usage" {
					return invalid("stream_options."+k, "Unrecognized stream option: %s", k)
				}
				if json.Unmarshal(v, &s.includeUsage) != nil {
					return typeErr("stream_options.include_usage", "a boolean", v)
				}
			}
			return nil
		},
		"seed": func(raw json.RawMessage) *apiError {
			var v float64
			if json.Unmarshal(raw, &v) != nil || v != math.Trunc(v) {
				return typeErr("seed", "an integer", raw)
			}
			if math.Abs(v) > 1<<53 {
				return invalid("seed", "%v is out of range for 'seed': it must be an integer of at most 2^53 in size.", v)
			}
			seed := int64(v)
			s.seed = &seed
			return nil
		},
		"stop": func(raw json.RawMessage) *apiError {
			var one string
			if json.Unmarshal(raw, &one) == nil {
				s.stop = []string{one}
			} else if json.Unmarshal(raw, &s.stop) != nil {
				return typeErr("stop", "a string or an array of strings", raw)
			}
			if len(s.stop) > maxStops {
				return invalid("stop", "'stop' holds %d sequences; at most %d are allowed.", len(s.stop), maxStops)
			}
			for _, st := range s.stop {
				if st == "" {
					return invalid("stop", "'stop' holds an empty string, which would stop before the first token.")
				}
				if len(st) > maxStopLen {
					return invalid("stop", "a 'stop' sequence is %d bytes long; at most %d are allowed.", len(st), maxStopLen)
				}
			}
			return nil
		},
	}
	return f
}

// checkStream refuses stream_options without stream, as OpenAI does.
func (s *sampling) checkStream(hadOptions bool) *apiError {
	if hadOptions && !s.stream {
		return invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return nil
}

// parseCompletion reads a /v1/completions body.
func parseCompletion(body []byte, maxTokens, maxN int) (*completionRequest, *apiError) {
	r := &completionRequest{}
	f := samplingFields(&r.sampling, maxTokens, maxN)
	r.maxTokens = 16 // OpenAI's default for completions
	hadOptions := false
	so := f["stream_options"]
	f["stream_options"] = func(raw json.RawMessage) *apiError { hadOptions = true; return so(raw) }
	var havePrompt bool
	f["model"] = decodeString("model", &r.model)
	f["prompt"] = func(raw json.RawMessage) *apiError {
		havePrompt = true
		var err *apiError
		r.prompts, err = parsePrompt(raw)
		return err
	}
	f["echo"] = unsupported("echo", "false")
	f["logprobs"] = unsupported("logprobs", "0")
	f["suffix"] = unsupported("suffix", `""`)
	var bestOf int
	f["best_of"] = decodeInt("best_of", &bestOf, 1, maxN, nil)
	if err := decodeFields(body, f); err != nil {
		return nil, err
	}
	if r.model == "" {
		return nil, invalid("model", "you must provide a model parameter")
	}
	if !havePrompt {
		return nil, invalid("prompt", "you must provide a prompt parameter")
	}
	if bestOf != 0 && bestOf != r.n {
		return nil, invalid("best_of", "'best_of' other than 'n' is not supported by this server (best_of %d, n %d).", bestOf, r.n)
	}
	if err := r.checkStream(hadOptions); err != nil {
		return nil, err
	}
	return r, nil
}

// parsePrompt reads a completion prompt in OpenAI's four forms: a string,
// an array of strings, an array of token ids, an array of arrays of ids.
func parsePrompt(raw json.RawMessage) ([]promptInput, *apiError) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, invalid("prompt", "'prompt' is empty; give the text to continue.")
		}
		return []promptInput{{text: s}}, nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, typeErr("prompt", "a string, an array of strings or an array of token ids", raw)
	}
	if len(list) == 0 {
		return nil, invalid("prompt", "'prompt' is an empty array; give the text to continue.")
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		return []promptInput{{ids: ids, isIDs: true}}, nil
	}
	if len(list) > maxPromptList {
		return nil, invalid("prompt", "'prompt' holds %d prompts; at most %d are allowed in one request.", len(list), maxPromptList)
	}
	var out []promptInput
	for i, item := range list {
		var s string
		var ids []int
		switch {
		case json.Unmarshal(item, &s) == nil:
			if s == "" {
				return nil, invalid("prompt", "prompt %d is empty.", i)
			}
			out = append(out, promptInput{text: s})
		case json.Unmarshal(item, &ids) == nil:
			if len(ids) == 0 {
				return nil, invalid("prompt", "prompt %d is an empty array of token ids.", i)
			}
			out = append(out, promptInput{ids: ids, isIDs: true})
		default:
			return nil, invalid("prompt", "Invalid type for 'prompt[%d]': expected a string or an array of token ids, but got %s.", i, jsonKind(item))
		}
	}
	return out, nil
}

// parseChat reads a /v1/chat/completions body.
func parseChat(body []byte, maxTokens, maxN, defaultMax int) (*chatRequest, *apiError) {
	r := &chatRequest{}
	f := samplingFields(&r.sampling, maxTokens, maxN)
	r.maxTokens = defaultMax
	hadOptions := false
	so := f["stream_options"]
	f["stream_options"] = func(raw json.RawMessage) *apiError { hadOptions = true; return so(raw) }
	var maxCompletion int
	var maxCompletionSet, haveMessages bool
	f["max_completion_tokens"] = decodeInt("max_completion_tokens", &maxCompletion, 1, maxTokens, &maxCompletionSet)
	f["model"] = decodeString("model", &r.model)
	f["messages"] = func(raw json.RawMessage) *apiError {
		haveMessages = true
		var err *apiError
		r.messages, err = parseMessages(raw)
		return err
	}
	f["logprobs"] = unsupported("logprobs", "false")
	f["top_logprobs"] = unsupported("top_logprobs", "0")
	f["tools"] = unsupported("tools", "[]")
	f["tool_choice"] = unsupported("tool_choice", `"none"`)
	f["parallel_tool_calls"] = unsupported("parallel_tool_calls", "false")
	f["response_format"] = func(raw json.RawMessage) *apiError {
		var rf struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &rf) != nil {
			return typeErr("response_format", "an object", raw)
		}
		if rf.Type != "text" {
			return invalid("response_format", "response_format type %q is not supported by this server (only \"text\").", rf.Type)
		}
		return nil
	}
	if err := decodeFields(body, f); err != nil {
		return nil, err
	}
	if r.model == "" {
		return nil, invalid("model", "you must provide a model parameter")
	}
	if !haveMessages {
		return nil, invalid("messages", "you must provide a messages parameter")
	}
	if maxCompletionSet {
		if r.maxTokensSet && maxCompletion != r.maxTokens {
			return nil, invalid("max_completion_tokens", "'max_tokens' (%d) and 'max_completion_tokens' (%d) disagree; give one.", r.maxTokens, maxCompletion)
		}
		r.maxTokens = maxCompletion
	}
	if err := r.checkStream(hadOptions); err != nil {
		return nil, err
	}
	return r, nil
}

// parseMessages reads messages: a non-empty array of {role, content,
// name}, content a string or an array of text parts.
func parseMessages(raw json.RawMessage) ([]Message, *apiError) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, typeErr("messages", "an array of messages", raw)
	}
	if len(list) == 0 {
		return nil, invalid("messages", "'messages' is empty; give at least one message.")
	}
	if len(list) > maxMessages {
		return nil, invalid("messages", "'messages' holds %d messages; at most %d are allowed.", len(list), maxMessages)
	}
	out := make([]Message, len(list))
	for i, item := range list {
		p := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
		var m map[string]json.RawMessage
		if json.Unmarshal(item, &m) != nil {
			return nil, invalid(fmt.Sprintf("messages[%d]", i), "Invalid type for 'messages[%d]': expected an object, but got %s.", i, jsonKind(item))
		}
		var haveContent bool
		for _, k := range sortedKeys(m) {
			v := m[k]
			switch k {
			case "role":
				if json.Unmarshal(v, &out[i].Role) != nil {
					return nil, typeErr(p("role"), "a string", v)
				}
			case "name":
				if json.Unmarshal(v, &out[i].Name) != nil {
					return nil, typeErr(p("name"), "a string", v)
				}
			case "content":
				haveContent = true
				c, err := parseContent(p("content"), v)
				if err != nil {
					return nil, err
				}
				out[i].Content = c
			default:
				return nil, invalid(p(k), "Unrecognized message field supplied: %s (this server takes role, content and name).", p(k))
			}
		}
		switch out[i].Role {
		case "system", "developer", "user", "assistant":
		case "":
			return nil, invalid(p("role"), "Missing required parameter: '%s'.", p("role"))
		default:
			return nil, invalid(p("role"), "Invalid value: '%s'. Supported values are: 'system', 'developer', 'user' and 'assistant'.", out[i].Role)
		}
		if !haveContent {
			return nil, invalid(p("content"), "Missing required parameter: '%s'.", p("content"))
		}
	}
	return out, nil
}

// parseContent reads a message's content: a string, or an array of
// {"type": "text", "text": ...} parts, which are joined (other part types,
// images and audio, are not for a text model).
func parseContent(param string, raw json.RawMessage) (string, *apiError) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []map[string]json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return "", typeErr(param, "a string or an array of text parts", raw)
	}
	var b strings.Builder
	for j, part := range parts {
		var typ, text string
		if json.Unmarshal(part["type"], &typ) != nil || typ != "text" {
			return "", invalid(fmt.Sprintf("%s[%d].type", param, j), "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported, got type %s.", string(part["type"]))
		}
		if json.Unmarshal(part["text"], &text) != nil {
			return "", typeErr(fmt.Sprintf("%s[%d].text", param, j), "a string", part["text"])
		}
		b.WriteString(text)
	}
	return b.String(), nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
