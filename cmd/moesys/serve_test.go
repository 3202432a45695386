package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveProc is a `moesys serve` process (this test binary re-run as the
// command) and its stderr.
type serveProc struct {
	cmd    *exec.Cmd
	url    string
	stderr *bytes.Buffer
	lines  chan struct{} // closed when stderr ends
}

// startServe starts `moesys serve args...` on a free loopback port and
// returns once it listens.
func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "MOESYS_TEST_MAIN=1", "MOESYS_THREADS=1")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan struct{})}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	listening := make(chan string, 1)
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			if addr, ok := strings.CutPrefix(line, "listening on "); ok {
				listening <- addr
			}
		}
	}()
	select {
	case p.url = <-listening:
	case <-p.lines:
		cmd.Wait()
		t.Fatalf("serve exited before listening:\n%s", p.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not listen within 60 s:\n%s", p.stderr)
	}
	return p
}

// stop sends SIGTERM and waits for the exit, which must be 0.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.lines
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, p.stderr)
	}
}

// The official OpenAI client for Node.js (npm package openai, pinned in
// serve/testdata/client) drives a running `moesys serve`: completions and
// chat, whole and streamed, and two error cases. `make test` installs Node
// and the package (scripts/deps.sh) and sets MOESYS_REQUIRE_NODE=1, so CI
// cannot skip it.
func TestServeNodeClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	client := filepath.Join("..", "..", "serve", "testdata", "client")
	_, errNode := exec.LookPath("node")
	_, errMod := os.Stat(filepath.Join(client, "node_modules", "openai", "package.json"))
	if errNode != nil || errMod != nil {
		msg := fmt.Sprintf("needs node and the openai package (npm ci --prefix %s): %v %v", client, errNode, errMod)
		if os.Getenv("MOESYS_REQUIRE_NODE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	p := startServe(t, "--model", "../../testdata/hf/mixtral_f32", "--name", "mixtral", "--max-seqs", "2", "--ctx", "512")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "client.mjs")
	node.Dir = client
	node.Env = append(os.Environ(), "MOESYS_URL="+p.url, "MOESYS_MODEL=mixtral")
	out, err := node.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "7 passed, 0 failed") {
		t.Fatalf("node client: %v\n%s\nserver:\n%s", err, out, p.stderr)
	}
	t.Logf("node client:\n%s", out)
	p.stop(t)
}

// streamUntilFirstChunk starts a streamed completion and returns its body
// once the first event arrived.
func streamUntilFirstChunk(t *testing.T, url, body string) io.ReadCloser {
	t.Helper()
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	return resp.Body
}

// SIGTERM stops taking requests but lets a running stream finish with
// [DONE], then the process exits 0; past --shutdown-timeout a stream still
// running is ended with an error event, and the exit is still 0 and
// prompt.
func TestServeSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	// A tiny random model without EOS ids: generations run to max_tokens.
	plain, _ := offloadTestModel(t)
	t.Run("finishes in-flight", func(t *testing.T) {
		p := startServe(t, "--model", plain, "--name", "m", "--ctx", "4096")
		body := streamUntilFirstChunk(t, p.url, `{"model": "m", "prompt": "package main", "max_tokens": 3000, "stream": true}`)
		defer body.Close()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(body)
		if err != nil || !bytes.HasSuffix(rest, []byte("data: [DONE]\n\n")) || !bytes.Contains(rest, []byte(`"finish_reason":"length"`)) {
			t.Fatalf("stream after SIGTERM: %v\n%s", err, rest)
		}
		<-p.lines
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("exit: %v\n%s", err, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "stopping: 1 running") || !strings.Contains(p.stderr.String(), "stopped after") {
			t.Fatalf("stderr:\n%s", p.stderr)
		}
		if _, err := http.Get(p.url + "/healthz"); err == nil {
			t.Fatal("the server still answers after exiting")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		p := startServe(t, "--model", plain, "--name", "m", "--max-seqs", "1", "--ctx", "200000", "--shutdown-timeout", "300ms")
		body := streamUntilFirstChunk(t, p.url, `{"model": "m", "prompt": "package main", "max_tokens": 200000, "stream": true}`)
		defer body.Close()
		start := time.Now()
		p.stop(t)
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("exit took %v", el)
		}
		rest, _ := io.ReadAll(body)
		if !bytes.Contains(rest, []byte("shutting_down")) || bytes.Contains(rest, []byte("[DONE]")) {
			t.Fatalf("stream cut at shutdown:\n%s", rest)
		}
		if !strings.Contains(p.stderr.String(), "still running after 300ms") {
			t.Fatalf("stderr:\n%s", p.stderr)
		}
	})
}

func TestServeFlags(t *testing.T) {
	plain, layout := offloadTestModel(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout+stderr
	}{
		{"help", []string{"serve", "--help"}, 0, "Examples:"},
		{"no model", []string{"serve"}, 2, "--model is required"},
		{"bad flag", []string{"serve", "--model", plain, "--max-seqs", "x"}, 2, "invalid value"},
		{"zero seqs", []string{"serve", "--model", plain, "--max-seqs", "0"}, 1, "at least 1"},
		{"offload on a plain checkpoint", []string{"serve", "--model", plain, "--offload", "ondemand"}, 1, "not in the offload layout"},
		{"expert-mem without offload", []string{"serve", "--model", plain, "--expert-mem", "1MiB"}, 1, "needs --offload"},
		{"dry run", []string{"serve", "--model", layout, "--offload", "ondemand", "--max-seqs", "4", "--dry-run"}, 0, "ondemand"},
		{"budget below the batch's minimum", []string{"serve", "--model", layout, "--offload", "prefetch-all", "--expert-mem", "40KiB", "--max-seqs", "4"}, 1, "needs at least 16 slots"},
		{"context beyond the model", []string{"serve", "--model", "../../testdata/hf/mixtral_f32", "--ctx", "100000", "--addr", "127.0.0.1:0"}, 1, "exceeds the model's"},
		{"bad address", []string{"serve", "--model", plain, "--addr", "256.0.0.1:99999"}, 1, "listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if code != tc.code || !strings.Contains(all, tc.out) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, tc.code, tc.out, all)
			}
		})
	}
}
