//go:build js && wasm

package main

import (
	"syscall/js"

	"github.com/mamba2web/mamba2/loader"
	"github.com/mamba2web/mamba2/model"
)

// LoRA adapters kept apart from the weights (model.Model.AttachAdapter):
// loaded into a running model, selected per generate call (its adapter
// option), unloaded without reloading the model. Concurrent generate calls
// under different adapters share the batch, as any calls do.

// loadAdapter(handle, url, {name, cache, http, job}) → Promise<{name,
// adapters, attached}>. url is an absolute folder URL of a PEFT adapter,
// fetched as loadModel's adapters are (the same HTTP options and cache);
// name is what generate's adapter option selects it by. attached lists
// every adapter the model now has.
func jsLoadAdapter(_ js.Value, args []js.Value) any {
	hv, url, opts := argOr(args, 0), argOr(args, 1), argOr(args, 2)
	ctx, done, err := startJob(opts)
	if err != nil {
		return promise(func() (any, error) { return nil, err })
	}
	return promise(func() (any, error) {
		defer done()
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		if url.Type() != js.TypeString {
			return nil, codef(codeBadURL, "the adapter URL must be a string")
		}
		if _, err := loader.NormalizeURL(url.String()); err != nil {
			return nil, codef(codeBadURL, "adapter %s: %v", url.String(), err)
		}
		name := optString(opts, "name", "")
		if name == "" {
			return nil, codef(codeBadArg, "option name (what generate's adapter option selects the adapter by) is missing or empty")
		}
		o, useCache, err := httpOptions(opts)
		if err != nil {
			return nil, err
		}
		if useCache {
			if store, err := loader.NewWebCache(cacheName); err == nil && store != nil {
				o.Cache = store
			}
		}
		ads, fss, err := openAdapters(ctx, []string{url.String()}, o)
		if err != nil {
			return nil, err
		}
		return s.exclusive(ctx, done, func() (any, error) {
			if err := s.m.AttachAdapter(name, ads...); err != nil {
				fss[0].Abort()
				return nil, coded(codeBadModel, err)
			}
			if err := fss[0].Finish(); err != nil {
				s.m.DetachAdapter(name)
				return nil, loadError(ctx, err)
			}
			return map[string]any{"name": name, "adapters": adapterReport(model.AdapterInfos(ads)), "attached": attachedReport(s.m)}, nil
		})
	})
}

// unloadAdapter(handle, name) → Promise<{attached}>: frees the adapter. It
// waits for the generations running (which may use it); a state (prefill,
// restoreState, a chat) made under it keeps it until closed, and the call
// is refused meanwhile.
func jsUnloadAdapter(_ js.Value, args []js.Value) any {
	hv, nv := argOr(args, 0), argOr(args, 1)
	return promise(func() (any, error) {
		s, err := getSession(hv)
		if err != nil {
			return nil, err
		}
		if nv.Type() != js.TypeString {
			return nil, codef(codeBadArg, "the adapter name must be a string")
		}
		return s.exclusive(s.ctx, func() {}, func() (any, error) {
			if err := s.m.DetachAdapter(nv.String()); err != nil {
				return nil, coded(codeBadArg, err) // unknown, or in use by a state
			}
			return map[string]any{"attached": attachedReport(s.m)}, nil
		})
	})
}

// attachedReport lists the model's attached adapters: [{name, inUse,
// adapters}].
func attachedReport(m *model.Model) []any {
	out := []any{}
	for _, a := range m.AttachedAdapters() {
		out = append(out, map[string]any{"name": a.Name, "inUse": a.InUse, "adapters": adapterReport(a.Adapters)})
	}
	return out
}
