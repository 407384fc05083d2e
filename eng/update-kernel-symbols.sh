#!/usr/bin/env bash
# Checks every [KernelSymbol("...")] without a Version (a Linux 5.15 name) against a Linux 5.15 source tree and
# writes the names it finds to eng/kernel-symbols-5.15.txt, which KernelSymbolVerificationTests reads (the test
# itself needs no kernel tree). Run it after adding or renaming a 5.15 symbol:
#   eng/update-kernel-symbols.sh /path/to/linux-5.15
# Needs python3 and grep. Names the tree does not hold are listed and the script fails: fix the name, or give the
# attribute the Version it comes from.
set -euo pipefail
tree="${1:?usage: eng/update-kernel-symbols.sh /path/to/linux-5.15}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python3 - "$tree" "$here" <<'PY'
import re, subprocess, sys, glob, os
tree, root = sys.argv[1], sys.argv[2]
names = set()
for f in glob.glob(os.path.join(root, 'src', '**', '*.cs'), recursive=True):
    if '/obj/' in f or '/bin/' in f:
        continue
    for m in re.finditer(r'(?:\[|,\s*)(?:Iommu\.)?KernelSymbol(?:Attribute)?\("([^"]+)"(\s*,\s*Version\s*=\s*"[^"]+")?\)', open(f, encoding='utf-8').read()):
        if not m.group(2):
            names.add(m.group(1))

def grep(args):
    return subprocess.run(['grep', '-rE', '--include=*.h', '--include=*.c'] + args + [tree], capture_output=True, text=True).stdout

def has_identifier(name):
    return subprocess.run(['grep', '-rlw', '--include=*.h', '--include=*.c', '-m1', name, tree], capture_output=True, text=True).stdout != ''

def struct_body(kind, name):
    bodies = []
    for path in grep(['-l', r'^' + kind + ' ' + name + r' \{']).split():
        text = open(path, encoding='utf-8', errors='ignore').read()
        for m in re.finditer(r'^' + kind + ' ' + re.escape(name) + r' \{(.*?)^\};', text, re.S | re.M):
            bodies.append(m.group(1))
    return bodies

found, missing = [], []
for n in sorted(names):
    ok = False
    if re.fullmatch(r'(struct|enum) [A-Za-z_]\w*', n):
        kind, ident = n.split()
        ok = bool(struct_body(kind, ident))
    elif re.fullmatch(r'[A-Za-z_]\w*\.[A-Za-z_]\w*', n):
        st, member = n.split('.')
        ok = any(re.search(r'\b' + member + r'\b', b) for b in struct_body('struct', st))
    elif re.fullmatch(r'[A-Za-z_]\w*', n):
        ok = has_identifier(n)
    (found if ok else missing).append(n)

with open(os.path.join(root, 'eng', 'kernel-symbols-5.15.txt'), 'w', encoding='utf-8') as out:
    out.write('# [KernelSymbol] names without a Version, each found in a Linux 5.15 tree by eng/update-kernel-symbols.sh\n')
    out.write('# (an identifier anywhere in the C sources; "struct x" / "enum x" by definition; "x.y" as a member of struct x).\n')
    for n in found:
        out.write(n + '\n')
print(f'{len(found)} symbols verified')
if missing:
    print('Not in the tree (fix the name, or give the attribute its Version):')
    for n in missing:
        print('  ' + n)
    sys.exit(1)
PY
