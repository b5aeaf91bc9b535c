package model

import "strings"

// textTracker is what Generate does with each new token besides choosing
// it, for a Scheduler's caller: the ids, OnToken, the incremental decoding
// with stop strings, OnText, the length, and the final text. It follows
// Generate's loop step for step (see the comments there), so a request run
// through a Scheduler streams and returns what Generate would.
type textTracker struct {
	o      Options
	maxNew int
	// emitted is the bytes of the text passed to OnText; prefix and read
	// delimit the decoding window (Generate's comment explains them).
	emitted, prefix, read, maxStop int
}

func newTextTracker(o Options, maxNew int) *textTracker {
	t := &textTracker{o: o, maxNew: maxNew}
	for _, s := range o.StopStrings {
		t.maxStop = max(t.maxStop, len(s))
	}
	return t
}

// add appends a chosen (non-stop) id to res and reports whether the
// generation ends with it: at a stop string or at the length. An error is
// a callback's; Generate returns it with res as it is then.
func (t *textTracker) add(res *Result, id int) (done bool, err error) {
	o := t.o
	res.IDs = append(res.IDs, id)
	if o.OnToken != nil {
		if err := o.OnToken(id); err != nil {
			return true, err
		}
	}
	if o.Decode != nil {
		known := o.Decode(res.IDs[t.prefix:t.read])
		window := o.Decode(res.IDs[t.prefix:])
		if len(window) > len(known) && strings.HasPrefix(window, known) && !strings.HasSuffix(window, "\uFFFD") {
			from := max(0, len(res.Text)-t.maxStop+1) // a stop string may straddle the old end
			res.Text += window[len(known):]
			t.prefix, t.read = t.read, len(res.IDs)
			if cut, ok := findStop(res.Text[from:], o.StopStrings); ok {
				res.Text, res.Reason = res.Text[:from+cut], "stop"
				return true, nil
			}
		}
		if o.OnText != nil {
			if safe := stableLen(res.Text, o.StopStrings); safe > t.emitted {
				if err := o.OnText(res.Text[t.emitted:safe]); err != nil {
					return true, err
				}
				t.emitted = safe
			}
		}
	}
	if len(res.IDs) >= t.maxNew {
		res.Reason = "length"
		return true, nil
	}
	return false, nil
}

// finish makes the text the decoding of all the ids at once, cut at a stop
// string, streams what OnText has not had, and cuts the ids to the text's.
func (t *textTracker) finish(res *Result) error {
	o := t.o
	if o.Decode == nil {
		return nil
	}
	streamed := res.Text
	res.Text = o.Decode(res.IDs)
	if cut, ok := findStop(res.Text, o.StopStrings); ok {
		res.Text, res.Reason = res.Text[:cut], "stop"
	}
	if o.OnText != nil && len(res.Text) > t.emitted && res.Text[:t.emitted] == streamed[:t.emitted] {
		if err := o.OnText(res.Text[t.emitted:]); err != nil {
			return err
		}
	}
	if res.Reason == "stop" {
		res.IDs = res.IDs[:tokensFor(res.IDs, res.Text, o.Decode)]
	}
	return nil
}
