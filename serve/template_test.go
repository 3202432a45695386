package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every template in testdata/templates (the chat templates of Mixtral
// Instruct, with and without a system message, Mistral v0.3, Qwen1.5-MoE,
// Qwen3-MoE and OLMoE/Tulu) and the default template render each
// conversation of cases.json exactly as Python's Jinja2 does under Hugging
// Face's settings (golden.json, written by golden.py), raised exceptions
// included.
func TestChatTemplatesMatchJinja2(t *testing.T) {
	dir := filepath.Join("testdata", "templates")
	var cases []struct {
		Name     string    `json:"name"`
		Messages []Message `json:"messages"`
	}
	readJSON(t, filepath.Join(dir, "cases.json"), &cases)
	var golden map[string]struct {
		Text  *string `json:"text"`
		Error string  `json:"error"`
	}
	readJSON(t, filepath.Join(dir, "golden.json"), &golden)
	files, _ := filepath.Glob(filepath.Join(dir, "*.jinja"))
	files = append(files, "default.jinja")
	if len(files) < 7 {
		t.Fatalf("found %d templates", len(files))
	}
	checked := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".jinja")
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := ParseChatTemplate(string(src), "<s>", "</s>")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range cases {
			for _, agp := range []bool{true, false} {
				key := fmt.Sprintf("%s/%s/agp=%s", name, c.Name, map[bool]string{true: "True", false: "False"}[agp])
				want, ok := golden[key]
				if !ok {
					t.Fatalf("%s: not in golden.json (run golden.py)", key)
				}
				got, err := tpl.render(c.Messages, agp)
				switch {
				case want.Text == nil && err == nil:
					t.Errorf("%s: rendered %q, want the error %q", key, got, want.Error)
				case want.Text == nil && !(errors.Is(err, ErrTemplate) && strings.HasSuffix(err.Error(), ": "+want.Error)):
					t.Errorf("%s: error %q, want %q", key, err, want.Error)
				case want.Text != nil && err != nil:
					t.Errorf("%s: %v", key, err)
				case want.Text != nil && got != *want.Text:
					t.Errorf("%s:\n got %q\nwant %q", key, got, *want.Text)
				}
				checked++
			}
		}
	}
	if checked != len(golden) {
		t.Errorf("checked %d renderings, golden.json has %d", checked, len(golden))
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestLoadChatTemplate(t *testing.T) {
	mixtral, err := os.ReadFile("testdata/templates/mixtral.jinja")
	if err != nil {
		t.Fatal(err)
	}
	src, _ := json.Marshal(string(mixtral))
	for _, tc := range []struct {
		name, config string
		want, err    string // rendering of one user message "Hi", or the load error
	}{
		{"no file", "", "User: Hi\n\nAssistant:", ""},
		{"no template", `{"bos_token": "<s>"}`, "User: Hi\n\nAssistant:", ""},
		{"string", `{"chat_template": ` + string(src) + `, "bos_token": "<s>", "eos_token": "</s>"}`, "<s>[INST] Hi [/INST]", ""},
		{"added token objects", `{"chat_template": "{{ bos_token }}|{{ eos_token }}", "bos_token": {"content": "<B>", "lstrip": false}, "eos_token": {"content": "<E>"}}`, "<B>|<E>", ""},
		{"named list", `{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages[0].content }}"}]}`, "DHi", ""},
		{"list without default", `{"chat_template": [{"name": "tool_use", "template": "T"}]}`, "", `no template named "default"`},
		{"bad json", `{"chat_template": `, "", "tokenizer_config.json"},
		{"wrong type", `{"chat_template": 7}`, "", "want a string"},
		{"syntax error", `{"chat_template": "{% for m in messages %}"}`, "", "chat template: parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.config != "" {
				if err := os.WriteFile(filepath.Join(dir, TokenizerConfigFile), []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tpl, err := LoadChatTemplate(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := tpl.Render([]Message{{Role: "user", Content: "Hi"}})
			if err != nil || got != tc.want {
				t.Fatalf("rendered %q, %v; want %q", got, err, tc.want)
			}
			if tpl.Default != (tc.want == "User: Hi\n\nAssistant:") {
				t.Errorf("Default = %v", tpl.Default)
			}
		})
	}
}

// A template that fails at run time (an undefined function, a method
// strings lack, a call with missing arguments) gives an ErrTemplate error, not a panic or a partial prompt.
func TestChatTemplateRuntimeErrors(t *testing.T) {
	for _, src := range []string{
		"{{ no_such_function() }}",
		"{{ raise_exception() }}",
		"{% for m in messages %}{{ m.content.nosuchmethod() }}{% endfor %}",
	} {
		tpl, err := ParseChatTemplate(src, "", "")
		if err != nil {
			continue // refused at parse time: also fine
		}
		if out, err := tpl.Render([]Message{{Role: "user", Content: "x"}}); !errors.Is(err, ErrTemplate) {
			t.Errorf("%q: rendered %q, %v; want an ErrTemplate error", src, out, err)
		}
	}
}

// Concurrent renders of one template give the same text (run under -race).
func TestChatTemplateConcurrent(t *testing.T) {
	tpl := NewDefaultTemplate()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				msg := fmt.Sprintf("m%d-%d", i, j)
				got, err := tpl.Render([]Message{{Role: "user", Content: msg}})
				if want := "User: " + msg + "\n\nAssistant:"; err != nil || got != want {
					t.Errorf("got %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestStrftime(t *testing.T) {
	at := time.Date(2026, 3, 7, 9, 5, 2, 0, time.UTC)
	if got, want := strftime(at, "%d %b %Y, %A %H:%M:%S %% %q"), "07 Mar 2026, Saturday 09:05:02 % %q"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
