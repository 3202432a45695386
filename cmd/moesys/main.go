// Command moesys trains and serves Mixture-of-Experts models.
//
//	moesys bench kernels [--quick] [--json]   measure kernels against this machine's peaks
//	moesys inspect DIR|FILE                   print a checkpoint's config, tensors and sizes
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) error) {
	commands[name] = command{summary, run}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "moesys: Mixture-of-Experts training and inference")
	fmt.Fprintln(w, "\nUsage: moesys COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'moesys COMMAND --help' for a command's flags and examples.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args to a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "moesys: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := cmd.run(args[1:], stdout, stderr); err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintf(stderr, "moesys %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// parseFlags parses args into fs. --help prints usage to stdout and a bad
// flag prints the error and usage to stderr; either way done is true and
// the command returns err (nil for --help, errUsage otherwise).
func parseFlags(fs *flag.FlagSet, args []string, name string, usage func(io.Writer), stdout, stderr io.Writer) (done bool, err error) {
	err = fs.Parse(args)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return true, nil
	}
	fmt.Fprintf(stderr, "moesys %s: %v\n\n", name, err)
	usage(stderr)
	return true, errUsage
}

// errUsage reports a usage error already printed by a flag set.
var errUsage = fmt.Errorf("usage")
