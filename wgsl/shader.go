package wgsl

import (
	"embed"
	"fmt"
	"path"
	"sort"
	"strings"
)

// The kernels, one file per operation, plus the helpers they include.
//
//go:embed shaders/*.wgsl
var shaderFS embed.FS

// defines are a kernel variant's switches, sorted "NAME" or "NAME=VALUE"
// strings. A name alone is a flag for #ifdef; a name with a value also
// becomes `const NAME = VALUE;` at the top of the source, so sizes such as
// the conv width can size arrays.
type defines []string

func defs(d ...string) defines {
	out := append(defines(nil), d...)
	sort.Strings(out)
	return out
}

// key is the canonical form used in pipeline keys.
func (d defines) key() string { return strings.Join(d, ",") }

func (d defines) has(name string) bool {
	for _, s := range d {
		if s == name || strings.HasPrefix(s, name+"=") {
			return true
		}
	}
	return false
}

// preprocess expands a kernel file: `#include "file.wgsl"` inlines a helper
// once (a second include of the same file is dropped, like an include
// guard), and `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or
// drop lines by the defines. This is all WGSL lacks for sharing helpers and
// building variants; anything else starting with # is an error, so a typo
// cannot silently change a kernel. The SUBGROUPS define (subgroups.go)
// also puts `enable subgroups;` first, where WGSL wants its extensions.
func preprocess(name string, d defines) (string, error) {
	var out strings.Builder
	if d.has(subgroupsDefine) {
		out.WriteString("enable subgroups;\n")
	}
	for _, s := range d {
		if k, v, ok := strings.Cut(s, "="); ok {
			fmt.Fprintf(&out, "const %s = %s;\n", k, v)
		}
	}
	seen := map[string]bool{}
	if err := expand(&out, name, d, seen, 0); err != nil {
		return "", err
	}
	return out.String(), nil
}

func expand(out *strings.Builder, name string, d defines, seen map[string]bool, depth int) error {
	if depth > 8 {
		return fmt.Errorf("shader %s: includes nested too deeply", name)
	}
	seen[name] = true
	src, err := shaderFS.ReadFile(path.Join("shaders", name))
	if err != nil {
		return fmt.Errorf("shader %s: %v", name, err)
	}
	// keep[i] says whether lines are emitted at nesting level i; an #else
	// flips the innermost level unless an outer level is already off.
	keep := []bool{true}
	for i, line := range strings.Split(string(src), "\n") {
		trim := strings.TrimSpace(line)
		if !strings.HasPrefix(trim, "#") {
			if keep[len(keep)-1] {
				out.WriteString(line)
				out.WriteByte('\n')
			}
			continue
		}
		fields := strings.Fields(trim)
		where := fmt.Sprintf("shader %s:%d", name, i+1)
		on := keep[len(keep)-1]
		switch fields[0] {
		case "#include":
			if len(fields) != 2 {
				return fmt.Errorf("%s: #include wants one quoted file name", where)
			}
			inc := strings.Trim(fields[1], `"`)
			if on && !seen[inc] {
				if err := expand(out, inc, d, seen, depth+1); err != nil {
					return err
				}
			}
		case "#ifdef", "#ifndef":
			if len(fields) != 2 {
				return fmt.Errorf("%s: %s wants one name", where, fields[0])
			}
			cond := d.has(fields[1])
			if fields[0] == "#ifndef" {
				cond = !cond
			}
			keep = append(keep, on && cond)
		case "#else":
			if len(keep) == 1 {
				return fmt.Errorf("%s: #else without #ifdef", where)
			}
			outer := keep[len(keep)-2]
			keep[len(keep)-1] = outer && !keep[len(keep)-1]
		case "#endif":
			if len(keep) == 1 {
				return fmt.Errorf("%s: #endif without #ifdef", where)
			}
			keep = keep[:len(keep)-1]
		default:
			return fmt.Errorf("%s: unknown directive %s", where, fields[0])
		}
	}
	if len(keep) != 1 {
		return fmt.Errorf("shader %s: #ifdef without #endif", name)
	}
	return nil
}
