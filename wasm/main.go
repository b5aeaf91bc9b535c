//go:build js && wasm

// Command wasm is the browser runtime of mamba2: it loads a Mamba-2 model
// from a URL onto WebGPU (or the CPU) and generates text, driven from
// JavaScript through globalThis.mamba2Go. web/worker.js runs it in a Web
// Worker; web/mamba2.js is the page's API.
//
// Every function of mamba2Go returns a Promise and does its work in a
// goroutine (blocking inside a JavaScript callback would deadlock the Go
// scheduler). Failures reject with an Error whose name is "Mamba2Error" and
// whose code is one of the code* constants.
package main

import (
	"runtime"
	"syscall/js"
)

// version is reported by info().
const version = "0.1.0"

func main() {
	api := map[string]any{
		"loadModel": js.FuncOf(jsLoadModel),
		"generate":  js.FuncOf(jsGenerate),
		"abort":     js.FuncOf(jsAbort),
		"encode":    js.FuncOf(jsEncode),
		"decode":    js.FuncOf(jsDecode),
		"dispose":   js.FuncOf(jsDispose),
		"info":      js.FuncOf(jsInfo),
		// Hidden states, saved states and chats (state.go, chat.go).
		"hiddenStates": js.FuncOf(jsHiddenStates),
		"prefill":      js.FuncOf(jsPrefill),
		"saveState":    js.FuncOf(jsSaveState),
		"restoreState": js.FuncOf(jsRestoreState),
		"closeState":   js.FuncOf(jsCloseState),
		"chat":         js.FuncOf(jsChat),
		"chatSend":     js.FuncOf(jsChatSend),
		"chatTokens":   js.FuncOf(jsChatTokens),
		"chatReset":    js.FuncOf(jsChatReset),
		"chatSave":     js.FuncOf(jsChatSave),
		"chatRestore":  js.FuncOf(jsChatRestore),
		"chatClose":    js.FuncOf(jsChatClose),
		// LoRA adapters kept apart (lora.go).
		"loadAdapter":   js.FuncOf(jsLoadAdapter),
		"unloadAdapter": js.FuncOf(jsUnloadAdapter),
	}
	js.Global().Set("mamba2Go", js.ValueOf(api))
	if ready := js.Global().Get("mamba2GoReady"); ready.Type() == js.TypeFunction {
		ready.Invoke()
	}
	select {} // serve calls until the worker is terminated
}

// info() → Promise<{version, goVersion, webgpu, generateOptions, memory}>:
// webgpu says whether navigator.gpu exists (not whether an adapter will be
// granted); memory is {wasmBytes, goSysBytes, goHeapBytes} now (memoryInfo).
func jsInfo(js.Value, []js.Value) any {
	return promise(func() (any, error) {
		nav := js.Global().Get("navigator")
		return map[string]any{
			"version":   version,
			"goVersion": runtime.Version(),
			"webgpu":    nav.Truthy() && nav.Get("gpu").Truthy(),
			"memory":    memoryInfo(),
			"generateOptions": func() []any {
				out := make([]any, len(generateOptionNames))
				for i, n := range generateOptionNames {
					out[i] = n
				}
				return out
			}(),
		}, nil
	})
}
