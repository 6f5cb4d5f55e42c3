# Sourced by the other scripts: picks a Python, creates or refreshes .venv/ from requirements.lock.
# Prints one progress line per step to stderr; installs only when the lock file or the interpreter changed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BALANCER_VENV:-$REPO_ROOT/.venv}"
LOCK="$REPO_ROOT/requirements.lock"

say() { printf '[setup] %s\n' "$*" >&2; }

# A usable interpreter prints its version as "3 N" and has venv + ensurepip.
_probe() { "$1" -c 'import sys, venv, ensurepip; print(*sys.version_info[:2])' 2>/dev/null; }

# The newest Python >= 3.12 that can be found (PATH, then pyenv's versions), else python3 (>= 3.11).
pick_python() {
    if [ -n "${BALANCER_PYTHON:-}" ]; then echo "$BALANCER_PYTHON"; return; fi
    local best="" best_minor=0 cand ver minor
    local candidates=()
    for minor in $(seq 30 -1 12); do
        cand="$(command -v "python3.$minor" 2>/dev/null || true)"
        [ -n "$cand" ] && candidates+=("$cand")
    done
    local pyroot="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then pyroot="$(pyenv root 2>/dev/null || echo "$pyroot")"; fi
    for cand in "$pyroot"/versions/3.*/bin/python3; do
        [ -x "$cand" ] && candidates+=("$cand")
    done
    for cand in "${candidates[@]}"; do
        ver="$(_probe "$cand")" || continue
        minor="${ver#3 }"
        if [ "${ver%% *}" = 3 ] && [ "$minor" -ge 12 ] && [ "$minor" -gt "$best_minor" ]; then
            best="$cand"; best_minor="$minor"
        fi
    done
    if [ -n "$best" ]; then echo "$best"; return; fi
    cand="$(command -v python3 || true)"
    ver="$( [ -n "$cand" ] && _probe "$cand" || true)"
    if [ -z "$ver" ] || [ "${ver#3 }" -lt 11 ]; then
        echo "error: need Python 3.11 or newer with the venv module (found: ${cand:-none} ${ver:-})" >&2
        exit 1
    fi
    echo "$cand"
}

ensure_venv() {
    local py stamp want
    py="$(pick_python)"
    want="$("$py" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$LOCK" | cut -d' ' -f1)"
    stamp="$VENV/.balancer-setup"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    say "creating .venv with $py ($("$py" --version 2>&1))"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    say "installing locked dependencies (requirements.lock)"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --require-hashes \
            --prefer-binary -r "$LOCK" >"$VENV/pip-install.log" 2>&1; then
        tail -n 30 "$VENV/pip-install.log" >&2
        say "dependency installation failed (full log: $VENV/pip-install.log)"
        rm -f "$stamp"
        exit 1
    fi
    echo "$want" > "$stamp"
    say "ready: $("$VENV/bin/python" --version), mitmproxy $("$VENV/bin/python" -c 'import mitmproxy.version as v; print(v.VERSION)')"
}
