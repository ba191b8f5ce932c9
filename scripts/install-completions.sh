#!/usr/bin/env bash
# Installs the shell completions (bash, zsh, fish) and the man pages of a walrs binary, generated
# by the binary itself from its command definitions (docs/commands/completions.md, man.md).
# Usage: install-completions.sh [WALRS_BINARY] [PREFIX]   (defaults: walrs on PATH, /usr/local)
set -euo pipefail
bin=${1:-$(command -v walrs || true)}
prefix=${2:-/usr/local}
[[ -n $bin && -x $bin ]] || { echo "install-completions: no walrs binary (give its path)" >&2; exit 1; }
install -d "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
  "$prefix/share/fish/vendor_completions.d" "$prefix/share/man/man1"
"$bin" completions bash > "$prefix/share/bash-completion/completions/walrs"
"$bin" completions zsh > "$prefix/share/zsh/site-functions/_walrs"
"$bin" completions fish > "$prefix/share/fish/vendor_completions.d/walrs.fish"
"$bin" man --dir "$prefix/share/man/man1"
command -v mandb >/dev/null && mandb -q "$prefix/share/man" 2>/dev/null || true
echo "installed completions and man pages of $bin under $prefix"
