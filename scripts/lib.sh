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

# Runs "$@" holding the lock file $1 (shift'ed off): scripts/run, scripts/test
# and scripts/bench started at once would otherwise run apt twice (the second
# fails on dpkg's lock) or two cmake builds in one folder (each breaking the
# other's objects). The second waits, says so, then finds the work done.
pc_locked() {
  local lock=$1; shift
  if ! command -v flock >/dev/null; then "$@"; return; fi
  (
    flock -n 9 || { pc_log "waiting for another paycore script ($lock)"; flock 9; }
    "$@"
  ) 9>"$lock"
}

pc_missing_packages() {
  local p
  for p in "${PC_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

pc_apt_install() {
  local missing
  missing=$(pc_missing_packages) # again, under the lock: another script may have installed them
  [ -z "$missing" ] && return 0
  pc_log "installing: $(echo $missing)"
  # Waits for dpkg's own lock too (an unattended upgrade, someone's apt).
  pc_sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  # shellcheck disable=SC2086
  pc_sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends $missing >/dev/null
}

# Installs the Debian packages that are not installed yet (nothing when all are).
pc_install_deps() {
  [ -z "$(pc_missing_packages)" ] && return 0
  pc_locked "${TMPDIR:-/tmp}/paycore-apt.lock" pc_apt_install
}

pc_cmake_build() {
  local dir=$1 type=$2; shift 2
  cmake -S "$PC_ROOT" -B "$PC_ROOT/$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
  cmake --build "$PC_ROOT/$dir" -j"$(nproc)" >/dev/null 2>"$PC_ROOT/$dir/build-errors.log" || {
    cat "$PC_ROOT/$dir/build-errors.log" >&2; return 1; }
}

# pc_build DIR TYPE [cmake args…] (one build of a folder at a time)
pc_build() {
  mkdir -p "$PC_ROOT/$1"
  pc_locked "$PC_ROOT/$1/.build.lock" pc_cmake_build "$@"
}

# Prints a TCP port on 127.0.0.1 nobody listens on, starting near $1, and
# none of the ports after it: those chosen already for servers not started
# yet (two picks before either binds would otherwise get the same port).
pc_free_port() {
  local p=${1:-20000}
  shift || true
  while pc_port_taken "$p" || [[ " $* " == *" $p "* ]]; do p=$((p + 1)); done
  echo "$p"
}

# Whether something on this machine listens on TCP port $1 (any address).
pc_port_taken() {
  (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null ||
    { command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
}

# Prints $1 with every byte but [A-Za-z0-9/._~-] percent-encoded, for a path
# pasted into a URI (libpq decodes host=…; a checkout folder with '&', '%',
# '#' or a space must not end the parameter or be read as an escape).
pc_uri_escape() {
  local LC_ALL=C s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
    [A-Za-z0-9/._~-]) out+=$c ;;
    *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

# pc_pg_socket_url PGDIR PORT DB: the libpq URL of the PostgreSQL that
# `scripts/services pg-start PGDIR PORT` started, through its Unix socket
# (the socket folder percent-encoded).
pc_pg_socket_url() {
  local host
  host=$(scripts/services pg-socket "$1") || return 1
  printf 'postgresql://paycore@/%s?host=%s&port=%s' "$3" "$(pc_uri_escape "$host")" "$2"
}

# pc_redis_socket_url REDISDIR: the URL of the Redis that `scripts/services
# redis-start REDISDIR` started, through its Unix socket; fails when it has
# none (a path too long for one) or the path holds a '?' (kv.c takes the
# path as written up to a '?').
pc_redis_socket_url() {
  [ -S "$1/redis.sock" ] && [[ $1 != *\?* ]] || return 1
  printf 'unix://%s/redis.sock?db=0' "$1"
}
