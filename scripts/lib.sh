# Shared by scripts/run, scripts/test and scripts/bench: installing what is
# missing, building, and finding free ports. Sourced, not run.

PC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PC_APT_PACKAGES=(build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
  libuv1-dev libluajit-5.1-dev luajit libhiredis-dev libpq-dev libjansson-dev libcmocka-dev
  libcurl4-openssl-dev libssl-dev libhttp-parser-dev libqrencode-dev postgresql postgresql-contrib
  redis-server wrk curl procps iproute2 git)

pc_log() { printf '[paycore] %s\n' "$*" >&2; }

pc_sudo() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    pc_log "need root (or sudo) for: $*"; return 1; fi
}

# Installs the Debian packages that are not installed yet (nothing when all are).
pc_install_deps() {
  local missing=()
  for p in "${PC_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  pc_log "installing: ${missing[*]}"
  pc_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  pc_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# pc_build DIR TYPE [cmake args…]
pc_build() {
  local dir=$1 type=$2; shift 2
  cmake -S "$PC_ROOT" -B "$PC_ROOT/$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
  cmake --build "$PC_ROOT/$dir" -j"$(nproc)" >/dev/null 2>"$PC_ROOT/$dir/build-errors.log" || {
    cat "$PC_ROOT/$dir/build-errors.log" >&2; return 1; }
}

# Prints a TCP port on 127.0.0.1 nobody listens on, starting near $1.
pc_free_port() {
  local p=${1:-20000}
  while pc_port_taken "$p"; do p=$((p + 1)); done
  echo "$p"
}

# Whether something on this machine listens on TCP port $1 (any address).
pc_port_taken() {
  (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null ||
    { command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
}
