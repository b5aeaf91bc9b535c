package openai

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mamba2web/mamba2/model"
	"github.com/mamba2web/mamba2/model/modeltest"
)

// TestLoRAModels: a request's "model" selects an attached adapter (vLLM's
// --lora-modules), the base model's name none; /v1/models lists both; an
// unknown name is a 404 naming what is served.
func TestLoRAModels(t *testing.T) { forEngines(t, testLoRAModels) }

func testLoRAModels(t *testing.T, kind string) {
	m, tok := tinyModel(t)
	ad, err := model.OpenAdapter("go-lora", modeltest.RandomLoRA(m.Config, 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter("go-lora", ad); err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(prompt)
	want := map[string]string{}
	for n, a := range map[string]string{modelName: "", "go-lora": "go-lora"} {
		res, err := m.Generate(context.Background(), ids, model.Options{MaxNewTokens: 8, Adapter: a, Decode: tok.Decode})
		if err != nil {
			t.Fatal(err)
		}
		want[n] = res.Text
	}
	if want[modelName] == want["go-lora"] {
		t.Fatal("the adapter does not change the text; the test would prove nothing")
	}
	// Cleanups run last registered first: this one, registered before the
	// server's, runs after its engine has closed, when no state of the
	// engine's (a scheduler's slots and its prefill state) holds the
	// adapter any more.
	t.Cleanup(func() {
		if err := m.DetachAdapter("go-lora"); err != nil {
			t.Error(err)
		}
	})
	srv, _ := newServer(t, kind, func(o *Options) { o.Adapters = []string{"go-lora"} })
	for n, text := range want {
		resp, data := post(t, srv.URL+pathCompletions, `{"model": "`+n+`", "prompt": `+jsonString(prompt)+`, "max_tokens": 8, "temperature": 0}`)
		var c completion
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &c) != nil || len(c.Choices) != 1 {
			t.Fatalf("%s: %d %s", n, resp.StatusCode, data)
		}
		if c.Model != n || c.Choices[0].Text != text {
			t.Errorf("%s: model %q, text %q; want %q", n, c.Model, c.Choices[0].Text, text)
		}
	}
	resp, data := post(t, srv.URL+pathCompletions, `{"model": "nope", "prompt": "x"}`)
	var e errorBody
	if resp.StatusCode != http.StatusNotFound || json.Unmarshal(data, &e) != nil || e.Error.Code == nil || *e.Error.Code != "model_not_found" ||
		!strings.Contains(e.Error.Message, "go-lora") {
		t.Errorf("unknown model: %d %s", resp.StatusCode, data)
	}
	r, err := http.Get(srv.URL + pathModels)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(r.Body)
	r.Body.Close()
	var list struct {
		Data []modelInfo `json:"data"`
	}
	if json.Unmarshal(data, &list) != nil || len(list.Data) != 2 || list.Data[0].ID != modelName || list.Data[1].ID != "go-lora" ||
		list.Data[1].Parent == nil || *list.Data[1].Parent != modelName {
		t.Errorf("/v1/models: %s", data)
	}
	if r, err := http.Get(srv.URL + pathModels + "/go-lora"); err != nil || r.StatusCode != http.StatusOK {
		t.Errorf("/v1/models/go-lora: %v %v", r.StatusCode, err)
	}
}
