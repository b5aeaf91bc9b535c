//go:build js && wasm

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"syscall/js"

	"github.com/mamba2web/mamba2/model"
)

// A chat is a conversation that keeps its model.State between turns, so
// each turn prefills only its own tokens, never the conversation again.
//
// The conversation is plain text in a simple turn format (chatTemplate):
//
//	{systemPrefix}{system}{systemSuffix}      once, when a system text is given
//	{userPrefix}{user text}{userSuffix}{assistantPrefix}{reply}{assistantSuffix}
//	…                                         one such block per turn
//
// The reply ends at the model's end-of-text id or at a stop string (by
// default the next user prefix, "\nUser:"). What the state holds is
// always a tokenisation of exactly that text: each turn's text is
// tokenised on its own and appended. After a stop string, the state has
// also consumed the tokens that began it (ahead); the next turn's text
// starts with them in the default format, so only the rest is fed. When it
// does not (a template whose text does not begin with its stop string),
// the chat prefills the whole conversation again, once; promptTokens then
// says so.
type chat struct {
	s      *session
	st     *model.State
	closed bool
	chatSaved
}

// chatSaved is what chat.save keeps besides the state's bytes.
type chatSaved struct {
	Template chatTemplate `json:"template"`
	System   string       `json:"system"`
	// History is the conversation's text up to the end of the last reply
	// (without its assistantSuffix, which the next turn begins with).
	History string `json:"history"`
	// Ahead is text the state holds past History (the start of a stop
	// string); Dirty says the state holds something else, so the next
	// turn prefills History again from an empty state.
	Ahead string `json:"ahead"`
	Dirty bool   `json:"dirty"`
	// IDs are the tokens the state holds, in order (chat.tokens()).
	IDs   []int `json:"ids"`
	Turns int   `json:"turns"`
}

// chatTemplate is the turn format; see chat. Stop strings end a reply
// (besides the model's end-of-text id).
type chatTemplate struct {
	SystemPrefix    string   `json:"systemPrefix"`
	SystemSuffix    string   `json:"systemSuffix"`
	UserPrefix      string   `json:"userPrefix"`
	UserSuffix      string   `json:"userSuffix"`
	AssistantPrefix string   `json:"assistantPrefix"`
	AssistantSuffix string   `json:"assistantSuffix"`
	Stop            []string `json:"stop"`
}

var chats = map[int]*chat{} // by handle; guarded by mu

// templateFrom reads chat's template option: every field is optional and
// defaults to the plain "User: …\nAssistant:" format; stop defaults to the
// assistant suffix and the user prefix without trailing spaces ("\nUser:"),
// where the model begins the user's next turn itself.
func templateFrom(v js.Value) (chatTemplate, error) {
	t := chatTemplate{SystemSuffix: "\n", UserPrefix: "User: ", UserSuffix: "\n", AssistantPrefix: "Assistant:", AssistantSuffix: "\n"}
	stopSet := false
	if v.Truthy() {
		if v.Type() != js.TypeObject {
			return t, codef(codeBadArg, "option template must be an object, got %s", jsDescribe(v))
		}
		for _, f := range []struct {
			key string
			dst *string
		}{{"systemPrefix", &t.SystemPrefix}, {"systemSuffix", &t.SystemSuffix}, {"userPrefix", &t.UserPrefix},
			{"userSuffix", &t.UserSuffix}, {"assistantPrefix", &t.AssistantPrefix}, {"assistantSuffix", &t.AssistantSuffix}} {
			if x, set := optValue(v, f.key); set {
				if x.Type() != js.TypeString {
					return t, codef(codeBadArg, "option template.%s must be a string, got %s", f.key, jsDescribe(x))
				}
				*f.dst = x.String()
			}
		}
		if x, set := optValue(v, "stop"); set {
			stop, err := stringsFromJS(x, "template.stop")
			if err != nil {
				return t, err
			}
			t.Stop, stopSet = stop, true
		}
	}
	if !stopSet {
		if s := t.AssistantSuffix + strings.TrimRight(t.UserPrefix, " "); s != "" {
			t.Stop = []string{s}
		}
	}
	for _, s := range t.Stop {
		if s == "" {
			return t, codef(codeBadArg, "option template.stop holds an empty string, which would end every reply at once")
		}
	}
	return t, nil
}

func getChat(v js.Value) (*chat, error) {
	if v.Type() != js.TypeNumber {
		return nil, codef(codeBadArg, "the chat handle must be a number")
	}
	mu.Lock()
	defer mu.Unlock()
	c, ok := chats[v.Int()]
	if !ok || c.closed {
		return nil, codef(codeDisposed, "the chat has been closed (Chat.close, or its model was disposed)")
	}
	return c, nil
}

// chat(handle, {system, template}) → Promise<{chat}>: a new conversation
// with an empty state (see chat). It needs the model's tokenizer.
func jsChat(_ js.Value, args []js.Value) any {
	hv, opts := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		if s.tok == nil {
			return nil, codef(codeBadArg, "a chat needs the model's tokenizer.json, which this model lacks")
		}
		var tv js.Value
		system := ""
		if opts.Truthy() {
			tv = opts.Get("template")
			if v, set := optValue(opts, "system"); set {
				if v.Type() != js.TypeString {
					return nil, codef(codeBadArg, "option system must be a string, got %s", jsDescribe(v))
				}
				system = v.String()
			}
		}
		t, err := templateFrom(tv)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return s.exclusive(ctx, cancel, func() (any, error) {
			c := &chat{s: s, st: s.m.NewState(1), chatSaved: chatSaved{Template: t, System: system, IDs: []int{}}}
			mu.Lock()
			h := nextID
			nextID++
			chats[h] = c
			mu.Unlock()
			return map[string]any{"chat": h}, nil
		})
	})
}

// turnText is the text of the next turn: the system block before the first
// turn, the previous reply's assistantSuffix after it, then the user's
// block and the assistant prefix the reply follows.
func (c *chat) turnText(user string) string {
	t := c.Template
	var b strings.Builder
	if c.Turns == 0 && c.System != "" {
		b.WriteString(t.SystemPrefix + c.System + t.SystemSuffix)
	}
	if c.Turns > 0 {
		b.WriteString(t.AssistantSuffix)
	}
	b.WriteString(t.UserPrefix + user + t.UserSuffix + t.AssistantPrefix)
	return b.String()
}

// chatSend(chat, text, {generate's options, job, onText}) → Promise<{
// generate's result, turnText, historyTokens}>: one turn. promptTokens is
// what this turn prefilled; historyTokens what the state holds after it.
// An aborted turn keeps what was generated as the reply.
func jsChatSend(_ js.Value, args []js.Value) any {
	cv, text, opts := argOr(args, 0), argOr(args, 1), argOr(args, 2)
	ctx, done, err := startJob(opts)
	if err != nil {
		return promise(func() (any, error) { return nil, err })
	}
	return promise(func() (any, error) {
		defer done()
		c, err := getChat(cv)
		if err != nil {
			return nil, err
		}
		if text.Type() != js.TypeString {
			return nil, codef(codeBadArg, "a chat turn must be a string, got %s", jsDescribe(text))
		}
		if opts.Truthy() {
			if _, set := optValue(opts, "state"); set {
				return nil, codef(codeBadArg, "option state does not apply to a chat, which keeps its own state")
			}
		}
		o, err := genOptions(opts)
		if err != nil {
			return nil, err
		}
		o.StopStrings = append(o.StopStrings, c.Template.Stop...)
		s := c.s
		return s.exclusive(ctx, done, func() (any, error) {
			if c.closed {
				return nil, codef(codeDisposed, "the chat has been closed (Chat.close, or its model was disposed)")
			}
			turn := c.turnText(text.String())
			feed := turn
			switch {
			case !c.Dirty && strings.HasPrefix(feed, c.Ahead):
				feed = feed[len(c.Ahead):]
			default:
				// The state holds something the conversation does not
				// continue: start again from its text.
				c.st.Reset()
				c.IDs = c.IDs[:0]
				feed = c.History + turn
			}
			ids, err := s.tok.EncodeChecked(feed)
			if err != nil {
				return nil, coded(codeBadModel, err)
			}
			if len(ids) == 0 {
				return nil, codef(codeBadArg, "the turn is empty: its text and the template give no tokens")
			}
			c.Dirty = true // until the turn is accounted for
			run, err := s.generate(ctx, s.m.Generate, ids, o, optFunc(opts, "onText"), c.st)
			if err != nil {
				return nil, err
			}
			c.IDs = append(c.IDs, ids...)
			c.IDs = append(c.IDs, run.res.IDs...)
			c.IDs = append(c.IDs, run.extra...)
			c.History += turn + run.res.Text
			c.Turns++
			// The text the state holds past the reply, when it stopped at a
			// stop string: the state's tokens decode to the reply and then it.
			held := s.tok.Decode(append(append([]int{}, run.res.IDs...), run.extra...))
			c.Ahead, c.Dirty = "", true
			if strings.HasPrefix(held, run.res.Text) {
				c.Ahead, c.Dirty = held[len(run.res.Text):], false
			}
			out := run.js()
			out["turnText"] = turn
			out["historyTokens"] = c.st.Pos
			out["turns"] = c.Turns
			return out, nil
		})
	})
}

// chatTokens(chat) → Promise<number[]>: the tokens the chat's state holds.
func jsChatTokens(_ js.Value, args []js.Value) any {
	cv := argOr(args, 0)
	return promise(func() (any, error) {
		c, err := getChat(cv)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return c.s.exclusive(ctx, cancel, func() (any, error) { return intsToJS(c.IDs), nil })
	})
}

// chatReset(chat) → Promise<void>: forgets the conversation (the system
// text and template stay).
func jsChatReset(_ js.Value, args []js.Value) any {
	cv := argOr(args, 0)
	return promise(func() (any, error) {
		c, err := getChat(cv)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return c.s.exclusive(ctx, cancel, func() (any, error) {
			c.st.Reset()
			c.chatSaved = chatSaved{Template: c.Template, System: c.System, IDs: []int{}}
			return nil, nil
		})
	})
}

// A saved chat: "MAMBA2CH", a uint32 version, a uint32 length and that many
// bytes of JSON (chatSaved), then the state's bytes (model.State.Save,
// which names the model by its config hash).
const (
	chatMagic   = "MAMBA2CH"
	chatVersion = 1
)

// chatSave(chat) → Promise<Uint8Array>.
func jsChatSave(_ js.Value, args []js.Value) any {
	cv := argOr(args, 0)
	return promise(func() (any, error) {
		c, err := getChat(cv)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return c.s.exclusive(ctx, cancel, func() (any, error) {
			meta, err := json.Marshal(c.chatSaved)
			if err != nil {
				return nil, coded(codeInternal, err)
			}
			state, err := c.st.Save()
			if err != nil {
				return nil, c.s.runError(err)
			}
			var b bytes.Buffer
			b.WriteString(chatMagic)
			binary.Write(&b, binary.LittleEndian, uint32(chatVersion))
			binary.Write(&b, binary.LittleEndian, uint32(len(meta)))
			b.Write(meta)
			b.Write(state)
			return bytesToJS(b.Bytes()), nil
		})
	})
}

// chatRestore(chat, bytes) → Promise<{turns, history, historyTokens}>:
// replaces the conversation with a saved one (chatSave's bytes), its
// template and system text included. Bytes that are not a saved chat, or
// whose state is of another model, are a bad-state error; the chat is
// unchanged then.
func jsChatRestore(_ js.Value, args []js.Value) any {
	cv, bv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		c, err := getChat(cv)
		if err != nil {
			return nil, err
		}
		data, err := bytesFromJS(bv, "the saved chat")
		if err != nil {
			return nil, err
		}
		if len(data) < 16 || string(data[:8]) != chatMagic {
			if len(data) >= 8 && string(data[:8]) == "MAMBA2ST" {
				return nil, codef(codeBadState, "restore: these are a saved state's bytes (State.save), not a saved chat's: use model.restoreState")
			}
			return nil, codef(codeBadState, "restore: not a saved chat (no MAMBA2CH header)")
		}
		if v := binary.LittleEndian.Uint32(data[8:]); v != chatVersion {
			return nil, codef(codeBadState, "restore: saved chat version %d, this runtime reads version %d", v, chatVersion)
		}
		n := int64(binary.LittleEndian.Uint32(data[12:]))
		if 16+n > int64(len(data)) {
			return nil, codef(codeBadState, "restore: the saved chat is cut short (%d bytes, its header announces %d of metadata)", len(data), n)
		}
		var saved chatSaved
		if err := json.Unmarshal(data[16:16+n], &saved); err != nil {
			return nil, codef(codeBadState, "restore: the saved chat's metadata is not valid: %v", err)
		}
		if err := c.s.checkIDs(saved.IDs); err != nil {
			return nil, codef(codeBadState, "restore: the saved chat's tokens do not fit this model: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return c.s.exclusive(ctx, cancel, func() (any, error) {
			if err := c.st.Restore(data[16+n:]); err != nil {
				return nil, coded(codeBadState, err)
			}
			if saved.IDs == nil {
				saved.IDs = []int{}
			}
			c.chatSaved = saved
			return map[string]any{"turns": c.Turns, "history": c.History, "historyTokens": c.st.Pos}, nil
		})
	})
}

// chatClose(chat) → Promise<void>: frees the chat's state; twice is harmless.
func jsChatClose(_ js.Value, args []js.Value) any {
	cv := argOr(args, 0)
	return promise(func() (any, error) {
		c, err := getChat(cv)
		if err != nil {
			if codeOf(err) == codeDisposed {
				return nil, nil
			}
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return c.s.exclusive(ctx, cancel, func() (any, error) {
			mu.Lock()
			c.closed = true
			delete(chats, cv.Int())
			mu.Unlock()
			return nil, c.st.Close()
		})
	})
}
