package options

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Docs prints what a command's own definitions say, for make install and
// packagers, so that the manual and the completions never drift from
// --help: the manual page (--man-page) or a completion script
// (--completion bash|zsh). It tells whether args asked for one of them.
func Docs(app *cli.App, args []string, stdout io.Writer) (bool, error) {
	if len(args) < 2 {
		return false, nil
	}
	n := len(args)
	switch {
	case args[n-1] == "--generate-bash-completion":
		// Answered here, never by running the command: the cli package
		// would run a subcommand whose arguments hold the request
		// (create NAME <TAB> would create a service), and panics on an
		// unknown option being typed.
		for _, word := range completion(app, args[1:n-1]) {
			fmt.Fprintln(stdout, word)
		}
		return true, nil
	case len(args) == 2 && args[1] == "--man-page":
		man, err := app.ToManWithSection(1)
		if err != nil {
			return true, err
		}
		_, err = io.WriteString(stdout, man)
		return true, err
	case len(args) == 3 && args[1] == "--completion":
		script, ok := completions[args[2]]
		if !ok {
			return true, fmt.Errorf("--completion %q: want bash or zsh", args[2])
		}
		_, err := io.WriteString(stdout, strings.ReplaceAll(script, "PROG", app.Name))
		return true, err
	}
	return false, nil
}

// completion is what may follow words: options, when one is being typed;
// the subcommands, while none is named; else nothing (files, the shell's
// default).
func completion(app *cli.App, words []string) []string {
	var typed string
	if n := len(words); n > 0 && strings.HasPrefix(words[n-1], "-") {
		typed, words = words[n-1], words[:n-1]
		var out []string
		for _, name := range optionNames(app, words) {
			if strings.HasPrefix(name, typed) {
				out = append(out, name)
			}
		}
		return out
	}
	for _, w := range words {
		if app.Command(w) != nil {
			return nil
		}
	}
	var out []string
	for _, c := range app.Commands {
		if !c.Hidden {
			out = append(out, c.Name)
		}
	}
	return out
}

// optionNames are the options of the subcommand named in words, else of
// the command, as typed: -c, --connect.
func optionNames(app *cli.App, words []string) []string {
	flags := app.Flags
	for _, w := range words {
		if c := app.Command(w); c != nil {
			flags = c.Flags
			break
		}
	}
	var names []string
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) == 1 {
				names = append(names, "-"+n)
			} else {
				names = append(names, "--"+n)
			}
		}
	}
	return names
}

// completions ask the command itself, with the cli package's
// --generate-bash-completion, for what may follow the words typed so far:
// subcommands, options, or files where it has nothing to say.
var completions = map[string]string{
	"bash": `# bash completion for PROG (PROG --completion bash)
_PROG_complete() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local -a asked=("${COMP_WORDS[@]:0:COMP_CWORD}")
	[[ $cur == -* ]] && asked+=("$cur")
	COMPREPLY=($(compgen -W "$("${asked[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _PROG_complete PROG
`,
	"zsh": `#compdef PROG
# zsh completion for PROG (PROG --completion zsh)
local cur=${words[CURRENT]}
local -a asked=(${words[1,CURRENT-1]}) offered
[[ $cur == -* ]] && asked+=($cur)
offered=(${(f)"$(${asked[@]} --generate-bash-completion 2>/dev/null)"})
if (( ${#offered} )); then compadd -a offered; else _files; fi
`,
}
