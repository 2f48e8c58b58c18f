// Package kmod finds, orders, reads and loads Linux kernel modules.
//
// It understands the files depmod(8) writes into /lib/modules/<version>
// (modules.dep, modules.builtin, modules.alias) so that a static init with
// no modprobe can load a module together with everything it depends on.
// It uses no cgo, so it can be linked into a static PID 1.
package kmod

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

var (
	// ErrNotFound means a requested module, or one of its dependencies, is
	// neither in modules.dep, nor built in, nor an alias of either.
	ErrNotFound = errors.New("module not found")
	// ErrCycle means modules.dep describes modules that depend on each
	// other, so there is no order in which they can be loaded.
	ErrCycle = errors.New("module dependency cycle")
)

// Tree is a parsed module tree: /lib/modules/<version> or any directory laid
// out like it. A Tree is not modified after Open, so it is safe for
// concurrent use.
type Tree struct {
	// Dir is the absolute path of the tree.
	Dir string

	deps    map[string][]string // canonical name -> direct deps, as listed
	paths   map[string]string   // canonical name -> absolute file path
	builtin map[string]bool
	aliases []alias // from modules.alias, in file order
	// builtinAliases are aliases of built-in modules; matching one means
	// there is nothing to load.
	builtinAliases []string
}

type alias struct {
	pattern string // normalised with normalizeAlias
	module  string // canonical name
}

// Module is a loadable module file in a Tree.
type Module struct {
	Name string // canonical name, see Name
	Path string // absolute path of the module file
}

// Open reads dir/modules.dep, and dir/modules.builtin and dir/modules.alias
// if they exist. A missing modules.builtin means nothing is built in.
//
// dir/modules.builtin.modinfo is also read if present, only for the aliases
// of built-in modules (such as fs-ext4 when ext4 is built in), which
// modules.alias does not list.
func Open(dir string) (*Tree, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	t := &Tree{
		Dir:     dir,
		deps:    map[string][]string{},
		paths:   map[string]string{},
		builtin: map[string]bool{},
	}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	if err := t.parseDep(string(dep)); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name  string
		parse func(string) error
	}{
		{"modules.builtin", t.parseBuiltin},
		{"modules.alias", t.parseAlias},
		{"modules.builtin.modinfo", t.parseBuiltinModinfo},
	} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kmod: %w", err)
		}
		if err := f.parse(string(b)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Tree) parseDep(s string) error {
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		file, deps, ok := strings.Cut(line, ":")
		file = strings.TrimSpace(file)
		name := Name(file)
		if !ok || name == "" {
			return fmt.Errorf("kmod: modules.dep:%d: want \"module: deps...\", got %q", i+1, line)
		}
		var names []string
		for _, d := range strings.Fields(deps) {
			n := Name(d)
			if n == "" {
				return fmt.Errorf("kmod: modules.dep:%d: bad dependency %q of %s", i+1, d, name)
			}
			names = append(names, n)
		}
		// depmod lists each module once; if a hand-made file does not,
		// the first entry wins, as it would for depmod's priority order.
		if _, dup := t.deps[name]; dup {
			continue
		}
		t.deps[name] = names
		if filepath.IsAbs(file) {
			t.paths[name] = filepath.Clean(file)
		} else {
			t.paths[name] = filepath.Join(t.Dir, file)
		}
	}
	return nil
}

func (t *Tree) parseBuiltin(s string) error {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if n := Name(line); n != "" {
			t.builtin[n] = true
		}
	}
	return nil
}

func (t *Tree) parseAlias(s string) error {
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("kmod: modules.alias:%d: want \"alias pattern module\", got %q", i+1, line)
		}
		t.aliases = append(t.aliases, alias{pattern: normalizeAlias(f[1]), module: Name(f[2])})
	}
	return nil
}

// parseBuiltinModinfo reads the NUL-separated "module.key=value" records the
// kernel build writes for built-in modules and keeps the aliases.
func (t *Tree) parseBuiltinModinfo(s string) error {
	for _, rec := range strings.Split(s, "\x00") {
		key, val, ok := strings.Cut(rec, "=")
		if !ok || !strings.HasSuffix(key, ".alias") || val == "" {
			continue
		}
		t.builtinAliases = append(t.builtinAliases, normalizeAlias(val))
	}
	return nil
}

// Name canonicalises a module name: the basename without directory and
// without .ko, .ko.gz, .ko.xz or .ko.zst, with '-' replaced by '_', as the
// kernel itself names modules.
func Name(s string) string {
	s = s[strings.LastIndexByte(s, '/')+1:]
	for _, suffix := range []string{".ko", ".ko.gz", ".ko.xz", ".ko.zst"} {
		if strings.HasSuffix(s, suffix) {
			s = s[:len(s)-len(suffix)]
			break
		}
	}
	return strings.ReplaceAll(s, "-", "_")
}

// normalizeAlias replaces '-' with '_' outside bracket expressions, as
// depmod and modprobe do, so that "fs-9p" and "fs_9p" are the same alias
// but a pattern range such as "[0-9]" keeps its meaning.
func normalizeAlias(s string) string {
	b := []byte(s)
	inBracket := false
	for i, c := range b {
		switch {
		case c == '[':
			inBracket = true
		case c == ']':
			inBracket = false
		case c == '-' && !inBracket:
			b[i] = '_'
		}
	}
	return string(b)
}

func aliasMatch(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	if err != nil {
		// A malformed pattern can still name an alias literally.
		return pattern == name
	}
	return ok
}

// Compression names how a module file is compressed, from its suffix: "gz",
// "xz", "zst", or "" for none.
func Compression(file string) string {
	for _, c := range []string{"gz", "xz", "zst"} {
		if strings.HasSuffix(file, "."+c) {
			return c
		}
	}
	return ""
}

// Resolve returns the modules needed to load names, each once, in an order
// in which they can be loaded: every module after all of its dependencies.
//
// A name may be a module name (with '-' or '_'), a module file path, or an
// alias from modules.alias such as "fs-9p" or a device modalias matched
// against patterns such as "virtio:d00000003v*". An alias matching several
// modules resolves to all of them, as with modprobe. Built-in modules are
// skipped, whether requested or depended on.
//
// The order is deterministic: depth-first, in the order of names and of
// the dependencies listed in modules.dep.
func (t *Tree) Resolve(names ...string) ([]Module, error) {
	r := resolver{t: t, state: map[string]visitState{}}
	for _, req := range names {
		mods, err := t.lookup(req)
		if err != nil {
			return nil, err
		}
		for _, m := range mods {
			via := ""
			if m != Name(req) {
				via = "alias " + req
			}
			if err := r.visit(m, via); err != nil {
				return nil, err
			}
		}
	}
	return r.out, nil
}

// lookup returns the canonical names of the modules req refers to; none if
// req is built in.
func (t *Tree) lookup(req string) ([]string, error) {
	name := Name(req)
	if t.builtin[name] {
		return nil, nil
	}
	if _, ok := t.deps[name]; ok {
		return []string{name}, nil
	}
	a := normalizeAlias(req)
	var mods []string
	for _, al := range t.aliases {
		if aliasMatch(al.pattern, a) && !slices.Contains(mods, al.module) {
			mods = append(mods, al.module)
		}
	}
	if len(mods) > 0 {
		return mods, nil
	}
	for _, p := range t.builtinAliases {
		if aliasMatch(p, a) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("kmod: %s: %w", req, ErrNotFound)
}

type visitState int

const (
	unvisited visitState = iota
	visiting
	done
)

type resolver struct {
	t     *Tree
	state map[string]visitState
	stack []string // modules being visited, for naming a cycle
	out   []Module
}

// visit appends name's dependencies and then name to r.out. via says why
// name is needed, for errors.
func (r *resolver) visit(name, via string) error {
	switch r.state[name] {
	case done:
		return nil
	case visiting:
		i := slices.Index(r.stack, name)
		cycle := append(slices.Clone(r.stack[i:]), name)
		return fmt.Errorf("kmod: %w: %s", ErrCycle, strings.Join(cycle, " -> "))
	}
	if r.t.builtin[name] {
		r.state[name] = done
		return nil
	}
	deps, ok := r.t.deps[name]
	if !ok {
		if via != "" {
			return fmt.Errorf("kmod: %s (%s): %w", name, via, ErrNotFound)
		}
		return fmt.Errorf("kmod: %s: %w", name, ErrNotFound)
	}
	r.state[name] = visiting
	r.stack = append(r.stack, name)
	for _, d := range deps {
		if err := r.visit(d, "needed by "+name); err != nil {
			return err
		}
	}
	r.stack = r.stack[:len(r.stack)-1]
	r.state[name] = done
	p := r.t.paths[name]
	r.out = append(r.out, Module{Name: name, Path: p})
	return nil
}
