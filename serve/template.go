package serve

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
)

// ErrTemplate is wrapped by every error of rendering a chat template: the
// template raised an exception (raise_exception: the conversation breaks
// its rules, e.g. roles that do not alternate) or failed. It is the
// client's conversation that the template refused, so handlers answer 400.
var ErrTemplate = errors.New("serve: chat template")

// TokenizerConfigFile is the Hugging Face file holding chat_template and
// the special tokens' text.
const TokenizerConfigFile = "tokenizer_config.json"

// DefaultTemplate is the chat template of checkpoints without one (moesys'
// own byte-level models): each message as "Role: content" followed by a
// blank line, and "Assistant:" as the generation prompt. Its stop string
// (DefaultTemplateStops) ends the reply where the model starts the next
// user turn.
//
//go:embed default.jinja
var DefaultTemplate string

// DefaultTemplateStops are the stop strings a conversation rendered with
// DefaultTemplate gets besides the request's own.
var DefaultTemplateStops = []string{"\nUser:"}

// ChatTemplate renders a conversation into the prompt text a chat model
// was trained on, with Hugging Face's semantics: Jinja with trim_blocks and
// lstrip_blocks, the variables messages (role, content), bos_token,
// eos_token, add_generation_prompt (always true here), and the functions
// raise_exception and strftime_now. Safe for concurrent use.
type ChatTemplate struct {
	// Source is the template text; Default says it is DefaultTemplate.
	Source  string
	Default bool
	// Stops are stop strings every conversation rendered with this
	// template gets (DefaultTemplateStops for the default, else none).
	Stops    []string
	bos, eos string

	mu  sync.Mutex // gonja's templates are not documented as safe for concurrent Execute
	tpl *exec.Template
}

// raiseError is raise_exception's error: the template's own message.
type raiseError struct{ msg string }

func (e *raiseError) Error() string { return e.msg }

func init() {
	// gonja logs through logrus's standard logger at debug and error
	// levels; errors reach callers as returned values.
	gonja.SetLoggerOutput(io.Discard)
}

// ParseChatTemplate compiles a Jinja chat template; bos and eos are the
// text of the tokenizer's special tokens the template may print.
func ParseChatTemplate(src, bos, eos string) (*ChatTemplate, error) {
	cfg := config.New()
	cfg.TrimBlocks, cfg.LeftStripBlocks = true, true
	ctx := exec.EmptyContext().Update(builtins.GlobalFunctions).Update(builtins.GlobalVariables)
	ctx.Set("raise_exception", func(msg string) (string, error) { return "", &raiseError{msg} })
	ctx.Set("strftime_now", func(format string) string { return strftime(time.Now(), format) })
	env := &exec.Environment{Context: ctx, Filters: builtins.Filters, Tests: builtins.Tests,
		ControlStructures: builtins.ControlStructures, Methods: builtins.Methods}
	loader, err := loaders.NewFileSystemLoader("")
	if err != nil {
		return nil, err
	}
	const root = "chat_template"
	shifted, err := loaders.NewShiftedLoader(root, strings.NewReader(src), loader)
	if err != nil {
		return nil, err
	}
	t := &ChatTemplate{Source: src, bos: bos, eos: eos}
	if err := catch(func() error {
		var err error
		t.tpl, err = exec.NewTemplate(root, cfg, shifted, env)
		return err
	}); err != nil {
		return nil, fmt.Errorf("%w: parse: %v", ErrTemplate, err)
	}
	return t, nil
}

// NewDefaultTemplate returns DefaultTemplate compiled.
func NewDefaultTemplate() *ChatTemplate {
	t, err := ParseChatTemplate(DefaultTemplate, "", "")
	if err != nil {
		panic(fmt.Sprintf("serve: the default chat template does not compile: %v", err))
	}
	t.Default, t.Stops = true, DefaultTemplateStops
	return t
}

// Render returns the prompt text for msgs, ending with the generation
// prompt. Errors wrap ErrTemplate; a raise_exception's message is the
// error's text after the prefix.
func (t *ChatTemplate) Render(msgs []Message) (string, error) {
	return t.render(msgs, true)
}

// render is Render with add_generation_prompt as given (tests compare both
// settings with Jinja2's output).
func (t *ChatTemplate) render(msgs []Message, addGenerationPrompt bool) (string, error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	data := exec.NewContext(map[string]any{"messages": list, "bos_token": t.bos, "eos_token": t.eos,
		"add_generation_prompt": addGenerationPrompt})
	var out string
	err := catch(func() error {
		t.mu.Lock()
		defer t.mu.Unlock()
		var err error
		out, err = t.tpl.ExecuteToString(data)
		return err
	})
	if err != nil {
		var re *raiseError
		if errors.As(err, &re) {
			return "", fmt.Errorf("%w: %s", ErrTemplate, re.msg)
		}
		return "", fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	return out, nil
}

// catch runs f and turns a panic inside the template engine into an
// error: a checkpoint's template must not be able to take the server down.
func catch(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("template engine panic: %v", r)
		}
	}()
	return f()
}

// LoadChatTemplate reads dir's tokenizer_config.json and compiles its
// chat_template (a string, or a list of named templates of which
// "default" is used); a checkpoint without one gets NewDefaultTemplate.
func LoadChatTemplate(dir string) (*ChatTemplate, error) {
	b, err := os.ReadFile(filepath.Join(dir, TokenizerConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return NewDefaultTemplate(), nil
	}
	if err != nil {
		return nil, err
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", TokenizerConfigFile, err)
	}
	src, err := templateSource(cfg.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("%s: chat_template: %w", TokenizerConfigFile, err)
	}
	if src == "" {
		return NewDefaultTemplate(), nil
	}
	bos, err := tokenText(cfg.BOS)
	if err != nil {
		return nil, fmt.Errorf("%s: bos_token: %w", TokenizerConfigFile, err)
	}
	eos, err := tokenText(cfg.EOS)
	if err != nil {
		return nil, fmt.Errorf("%s: eos_token: %w", TokenizerConfigFile, err)
	}
	t, err := ParseChatTemplate(src, bos, eos)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TokenizerConfigFile, err)
	}
	return t, nil
}

// templateSource reads chat_template: absent or null (""), a string, or a
// list of {"name", "template"} of which "default" is taken.
func templateSource(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", errors.New("want a string or a list of {\"name\", \"template\"}")
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", errors.New("no template named \"default\" in the list")
}

// tokenText reads a special token: null, its text, or an AddedToken
// object {"content": text, ...}.
func tokenText(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var tok struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil {
		return "", errors.New("want a string or an object with \"content\"")
	}
	return tok.Content, nil
}

// strftime formats t with the C strftime directives templates use for
// dates (Llama 3's "%d %b %Y"); others are copied as written.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			b.WriteString(t.Format("2006"))
		case 'm':
			b.WriteString(t.Format("01"))
		case 'd':
			b.WriteString(t.Format("02"))
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'S':
			b.WriteString(t.Format("05"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
